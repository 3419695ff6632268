"""``sn.search``: one call that sets a search up (session, executor) and runs the loop (``symnas.loop``)."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence, Union

import pyglove as pg

from symnas import objectives as objectives_lib
from symnas.executor import Executor, InlineExecutor, check_trial_timeout, check_workers
from symnas.loop import SearchLoop
from symnas.session import SearchSession, objective_fingerprint
from symnas.storage import DEFAULT_STORAGE, Storage
from symnas.study import Study


def _evaluate_method(value: Any) -> Any:
    evaluate = getattr(value, "evaluate", None)
    if not callable(evaluate):
        raise TypeError(f"No evaluator was given and {type(value).__name__} has no evaluate() method: "
                        f"pass evaluate=... to sn.search.")
    return evaluate()


def search(space: Any,
           evaluate: Optional[Callable[[Any], Any]] = None,
           algorithm: Optional[pg.DNAGenerator] = None,
           num_trials: Optional[int] = None,
           *,
           storage: Union[None, str, os.PathLike, Storage] = DEFAULT_STORAGE,
           name: Optional[str] = None,
           objectives: objectives_lib.ObjectivesSpec = None,
           early_stopping: Optional[pg.tuning.EarlyStoppingPolicy] = None,
           scheduler: Optional[pg.tuning.EarlyStoppingPolicy] = None,
           progress: bool = True,
           record_objects: bool = True,
           workers: int = 1,
           trial_timeout: Optional[float] = None,
           retry_failed: int = 0,
           backend: Optional[str] = None,
           address: Optional[str] = None,
           resources: Optional[Dict[str, float]] = None,
           initial: Optional[Sequence[Any]] = None,
           constraints: Any = None) -> Study:
    """Searches ``space`` with ``algorithm``, evaluating each trial, and returns the ``Study``.

    Args:
      space: a PyGlove symbolic value with search points (``pg.oneof``, ``pg.manyof``, ``pg.floatv``).
      evaluate: called with each concrete object; returns a number (maximised), a tuple (one
        value per objective) or a dict of metrics. ``None`` calls the object's ``evaluate()``.
        An exception or a NaN/inf objective fails the trial (recorded with its error) and the
        search goes on; ``sn.errors.TrialRejected`` records the trial as rejected. ``sys.exit()``
        inside it stops the search (``sn.errors.SearchInterrupted``) and Ctrl-C raises
        ``KeyboardInterrupt``; either way the trial is recorded as interrupted.
      algorithm: a ``pg.DNAGenerator``; ``None`` means ``sn.algorithms.Random()``.
      num_trials: how many trials the study should have finished (completed, failed or rejected)
        when this call returns, counting those of earlier runs of the same study; ``None`` runs
        until the algorithm stops proposing.
      storage: a SQLite file path (default ``symnas.db``), ``None`` for in-memory, or a Storage.
      name: the study's name in the storage; by default derived from the space, the algorithm,
        the objectives and the evaluator's code, so running the same call again resumes the same
        study and editing the evaluator starts a new one.
      objectives: ``None`` (the evaluator's number, or its ``reward`` metric), a metric name such as
        ``"accuracy"`` or ``"latency_ms:min"``, or a mapping such as
        ``{"accuracy": "max", "latency_ms": "min"}`` for a multi-objective algorithm.
      early_stopping: a ``pg.tuning.EarlyStoppingPolicy`` consulted by ``symnas.reporting.report``.
      scheduler: a multi-fidelity scheduler (``sn.schedulers.ASHA``, ``Hyperband``) consulted by
        ``symnas.reporting.report``: it stops trials that fall behind at a rung. Give this or
        ``early_stopping``, not both.
      progress: show a progress bar (tqdm; notebook-aware) with trials done, failures, best so far
        and rate, and a line naming the most common error when trials failed.
      record_objects: store each trial's concrete object as JSON (turn off for huge objects).
      workers: how many trials are evaluated at once. 1 (default, local backend) evaluates in this
        process; N > 1 evaluates in N isolated worker processes (``symnas.execution``): a trial
        that raises, times out, or crashes its process is recorded as failed and the search goes on.
      trial_timeout: seconds after which a trial running in a worker process (or on Ray) is
        killed and recorded as failed; ``None`` means no limit. With workers=1 on the local
        backend it applies too: the trial then runs in one worker process.
      retry_failed: evaluate each failed or interrupted trial (of this run or of earlier ones,
        such as one whose process died) again, up to this many more times, with the same DNA.
      backend: ``"local"`` (default) or ``"ray"``: trials run as Ray tasks on the cluster at
        ``address`` (``symnas.ray_execution``); the algorithm and storage stay in this process.
      address: the Ray cluster address (``"127.0.0.1:6379"``, ``"ray://host:10001"``, ``"auto"``);
        ``None`` starts a local Ray instance.
      resources: what one trial needs on Ray, e.g. ``{"num_cpus": 2, "num_gpus": 1}``.
      initial: known points evaluated first, before the algorithm proposes (warm start): objects of
        the space, ``pg.DNA``s or dicts of decision values (``symnas.warm_start``). They are stored
        in the study's queue, so a restart evaluates each once; the algorithm learns from them.
      constraints: ``{"latency_ms": ("<=", 5.0)}`` (operators <=, <, >=, >, ==) or a callable on
        the metrics returning True/False or violation amounts (<= 0: met). Every trial is recorded
        with ``feasible`` and ``constraint_violations``; the algorithm is told them; ``study.best``
        and ``pareto_front()`` consider only feasible trials. A constraint on a metric the evaluator
        does not report stops the search with that error at the first trial.

    Example::

        import pyglove as pg, symnas as sn
        space = pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3]))
        study = sn.search(space, lambda v: v.n - v.x ** 2, sn.algorithms.Random(seed=1),
                          num_trials=30, storage=None, progress=False)
        print(study.best, study.trials.head())
    """
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}.")
    if num_trials is not None and (isinstance(num_trials, bool) or not isinstance(num_trials, int)
                                   or num_trials < 0):
        raise ValueError(f"num_trials must be a non-negative integer or None, got {num_trials!r}.")
    if scheduler is not None and early_stopping is not None:
        raise ValueError("Pass scheduler= or early_stopping=, not both: each decides when a trial stops.")
    executor = make_executor(workers, trial_timeout, backend, address, resources)  # before the study is created
    if algorithm is None:
        from symnas.algorithms import Random  # pylint: disable=import-outside-toplevel
        algorithm = Random()
    session = SearchSession(space, algorithm, storage=storage, name=name, objectives=objectives,
                            early_stopping=scheduler if scheduler is not None else early_stopping,
                            record_objects=record_objects, retry_failed=retry_failed,
                            objective=objective_fingerprint(evaluate), constraints=constraints)
    if initial is not None:
        from symnas import warm_start  # pylint: disable=import-outside-toplevel
        if isinstance(initial, (str, bytes)) or not isinstance(initial, Sequence):
            raise TypeError(f"initial must be a list of points, got {type(initial).__name__}.")
        warm_start.enqueue(session.storage, session.name, initial, session.dna_spec,
                           session.materializer.space if session.materializer is not None else None)
    SearchLoop(session, executor, num_trials, progress).run(evaluate or _evaluate_method)
    return Study(session.storage, session.name)


def make_executor(workers: int = 1, trial_timeout: Optional[float] = None, backend: Optional[str] = None,
                  address: Optional[str] = None, resources: Optional[Dict[str, float]] = None) -> Executor:
    """The executor ``sn.search``'s arguments ask for: inline, worker processes or Ray (validated here,
    before any study is created)."""
    check_workers(workers)
    trial_timeout = check_trial_timeout(trial_timeout)
    if backend not in (None, "local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}.")
    if backend == "ray":
        from symnas import ray_execution  # pylint: disable=import-outside-toplevel
        ray_execution.check_resources(resources)
        ray_execution.check_address(address)
        return ray_execution.RayExecutor(workers, trial_timeout, address, resources)
    if address is not None or resources is not None:
        raise ValueError("address= and resources= apply to backend='ray' only.")
    if workers == 1 and trial_timeout is None:
        return InlineExecutor()
    from symnas import execution  # pylint: disable=import-outside-toplevel
    return execution.ProcessExecutor(workers, trial_timeout)


def run_trials(session: SearchSession, evaluate: Callable[[Any], Any], num_trials: Optional[int],
               progress: bool, *, workers: int = 1, trial_timeout: Optional[float] = None,
               backend: Optional[str] = None, address: Optional[str] = None,
               resources: Optional[Dict[str, float]] = None) -> None:
    """Runs ``session`` with the executor the arguments ask for (the command line's entry to the loop)."""
    executor = make_executor(workers, trial_timeout, backend, address, resources)
    SearchLoop(session, executor, num_trials, progress).run(evaluate)
