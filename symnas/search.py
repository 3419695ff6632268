"""``sn.search``: the sample -> evaluate -> feedback loop, with persistence and a progress bar."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Optional, Union

import pyglove as pg

from symnas import objectives as objectives_lib
from symnas.reporting import reporting_to
from symnas.session import SearchSession, _MaterializeFailed
from symnas.storage import Storage
from symnas.study import Study

DEFAULT_STORAGE = "symnas.db"


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
           backend: Optional[str] = None,
           address: Optional[str] = None,
           resources: Optional[Dict[str, float]] = None) -> Study:
    """Searches ``space`` with ``algorithm``, evaluating each trial, and returns the ``Study``.

    Args:
      space: a PyGlove symbolic value with search points (``pg.oneof``, ``pg.manyof``, ``pg.floatv``).
      evaluate: called with each concrete object; returns a number (maximised), a tuple (one
        value per objective) or a dict of metrics. ``None`` calls the object's ``evaluate()``.
        An exception or a NaN/inf objective fails the trial (recorded with its error) and the
        search goes on; ``sn.errors.TrialRejected`` records the trial as rejected.
      algorithm: a ``pg.DNAGenerator``; ``None`` means ``sn.algorithms.Random()``.
      num_trials: how many trials the study should have finished (completed, failed or rejected)
        when this call returns, counting those of earlier runs of the same study; ``None`` runs
        until the algorithm stops proposing.
      storage: a SQLite file path (default ``symnas.db``), ``None`` for in-memory, or a Storage.
      name: the study's name in the storage; by default derived from the space, the algorithm and
        the objectives, so running the same call again resumes the same study.
      objectives: ``None`` (the evaluator's number, or its ``reward`` metric), a metric name such as
        ``"accuracy"`` or ``"latency_ms:min"``, or a mapping such as
        ``{"accuracy": "max", "latency_ms": "min"}`` for a multi-objective algorithm.
      early_stopping: a ``pg.tuning.EarlyStoppingPolicy`` consulted by ``symnas.reporting.report``.
      scheduler: a multi-fidelity scheduler (``sn.schedulers.ASHA``, ``Hyperband``) consulted by
        ``symnas.reporting.report``: it stops trials that fall behind at a rung. Give this or
        ``early_stopping``, not both.
      progress: show a progress bar (tqdm; notebook-aware) with trials done, best so far and rate.
      record_objects: store each trial's concrete object as JSON (turn off for huge objects).
      workers: how many trials are evaluated at once. 1 (default, local backend) evaluates in this
        process; N > 1 evaluates in N isolated worker processes (``symnas.execution``): a trial
        that raises, times out, or crashes its process is recorded as failed and the search goes on.
      trial_timeout: seconds after which a trial running in a worker process (or on Ray) is
        killed and recorded as failed; ``None`` means no limit. With workers=1 on the local
        backend it applies too: the trial then runs in one worker process.
      backend: ``"local"`` (default) or ``"ray"``: trials run as Ray tasks on the cluster at
        ``address`` (``symnas.ray_execution``); the algorithm and storage stay in this process.
      address: the Ray cluster address (``"127.0.0.1:6379"``, ``"ray://host:10001"``, ``"auto"``);
        ``None`` starts a local Ray instance.
      resources: what one trial needs on Ray, e.g. ``{"num_cpus": 2, "num_gpus": 1}``.

    Example::

        import pyglove as pg, symnas as sn
        space = pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3]))
        study = sn.search(space, lambda v: v.n - v.x ** 2, sn.algorithms.Random(seed=1),
                          num_trials=30, storage=None, progress=False)
        print(study.best, study.trials.head())
    """
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}.")
    if num_trials is not None and (not isinstance(num_trials, int) or num_trials < 0):
        raise ValueError(f"num_trials must be a non-negative integer or None, got {num_trials!r}.")
    from symnas import execution  # pylint: disable=import-outside-toplevel
    execution.check_workers(workers)
    execution.check_trial_timeout(trial_timeout)
    if backend not in (None, "local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}.")
    if backend != "ray" and (address is not None or resources is not None):
        raise ValueError("address= and resources= apply to backend='ray' only.")
    if backend == "ray":
        from symnas import ray_execution  # pylint: disable=import-outside-toplevel
        ray_execution.check_resources(resources)
        ray_execution.check_address(address)  # before the study is created
    if algorithm is None:
        from symnas.algorithms import Random  # pylint: disable=import-outside-toplevel
        algorithm = Random()
    if scheduler is not None and early_stopping is not None:
        raise ValueError("Pass scheduler= or early_stopping=, not both: each decides when a trial stops.")
    session = SearchSession(space, algorithm, storage=storage, name=name, objectives=objectives,
                            early_stopping=scheduler if scheduler is not None else early_stopping,
                            record_objects=record_objects)
    run_trials(session, evaluate or _evaluate_method, num_trials, progress, workers=workers,
               trial_timeout=trial_timeout, backend=backend, address=address, resources=resources)
    return Study(session.storage, session.name)


def run_trials(session: SearchSession, evaluate: Callable[[Any], Any], num_trials: Optional[int],
               progress: bool, *, workers: int = 1, trial_timeout: Optional[float] = None,
               backend: Optional[str] = None, address: Optional[str] = None,
               resources: Optional[Dict[str, float]] = None) -> None:
    """Runs ``session`` with the loop the arguments ask for (sequential, worker processes or Ray)."""
    from symnas import execution  # pylint: disable=import-outside-toplevel
    execution.check_workers(workers)
    trial_timeout = execution.check_trial_timeout(trial_timeout)
    backend = backend or "local"
    if backend == "ray":
        from symnas import ray_execution  # pylint: disable=import-outside-toplevel
        ray_execution.run_on_ray(session, evaluate, num_trials, progress, workers=workers,
                                 trial_timeout=trial_timeout, address=address, resources=resources)
    elif backend != "local":
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}.")
    elif address is not None or resources is not None:
        raise ValueError("address= and resources= apply to backend='ray' only.")
    if backend == "ray":
        from symnas import ray_execution  # pylint: disable=import-outside-toplevel
        ray_execution.check_resources(resources)
        ray_execution.check_address(address)  # before the study is created
    elif workers == 1 and trial_timeout is None:
        run_sequential(session, evaluate, num_trials, progress)
    else:
        execution.run_parallel(session, evaluate, num_trials, progress, workers, trial_timeout)


def run_sequential(session: SearchSession, evaluate: Callable[[Any], Any], num_trials: Optional[int],
                   progress: bool) -> None:
    """Evaluates trials one after another in this process until ``num_trials`` have finished."""
    bar = _progress_bar(session, num_trials) if progress else None
    try:
        while True:
            session.sync()  # trials finished by other processes on the same study count too
            if num_trials is not None and session.num_finished >= num_trials:
                break
            try:
                trial = session.next_trial()
            except StopIteration:
                break
            except _MaterializeFailed:
                _update(bar, session)
                continue
            try:
                with reporting_to(lambda step, metrics, t=trial: session.report(t, step, metrics)):
                    result = evaluate(trial.value if trial.value is not None else trial.dna)
            except Exception as error:  # pylint: disable=broad-except
                session.finish_with_exception(trial, error)
            else:
                session.complete(trial, result)
            _update(bar, session)
    finally:
        if bar is not None:
            _update(bar, session, force=True)
            bar.close()


def _progress_bar(session: SearchSession, num_trials: Optional[int]):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    return tqdm(total=num_trials, initial=session.num_finished, desc=session.name, unit="trial",
                dynamic_ncols=True, mininterval=0.25)


def _update(bar, session: SearchSession, force: bool = False) -> None:
    if bar is None:
        return
    bar.update(session.num_finished - bar.n)
    if session.best_reward is not None:
        objective = session.objectives[0]
        best = objective.sign * session.best_reward
        now = time.monotonic()
        if force or now - getattr(bar, "_symnas_postfix_time", 0.0) > 0.25:
            bar.set_postfix_str(f"best {objective.name}={best:.6g}", refresh=False)
            bar._symnas_postfix_time = now  # pylint: disable=protected-access
