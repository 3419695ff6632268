"""The executor contract: how the run loop hands trials out for evaluation and gets outcomes back.

``symnas.loop`` runs every search the same way (propose, submit, wait, record) over an
``Executor``; the executors differ only in where an evaluation runs:

- ``InlineExecutor``: in this thread, one at a time (``workers=1``);
- ``symnas.execution.ProcessExecutor``: in isolated worker processes (``workers=N``, ``trial_timeout``);
- ``symnas.ray_execution.RayExecutor``: as Ray tasks on a cluster (``backend="ray"``).

An evaluation ends in an ``Outcome``: ``ok`` with the evaluator's result, ``error`` with the error's
text (and a ``TrialRejected``'s metrics), or ``interrupted`` when the objective called ``sys.exit``
(Ctrl-C in this process propagates as ``KeyboardInterrupt``). A crash, a time-out or a lost task is
an ``error`` the executor writes itself. ``report()`` calls inside an evaluation reach the loop's
reporter wherever the evaluation runs; its answer (stop early or go on) goes back to the trial.

Example::

    with InlineExecutor() as executor:
        executor.start(lambda v: v.x, reporter=lambda trial, step, metrics: False)
        executor.submit(trial)
        [(trial, outcome)] = executor.wait()      # Outcome(kind='ok', value=..., rejection=None)
"""
from __future__ import annotations

import abc
import pickle  # only for values crossing to processes of this run, never for storage
import traceback
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import cloudpickle
import pyglove as pg

from symnas.errors import TrialRejected
from symnas.reporting import Checkpoint, reporting_to

OK, ERROR, INTERRUPTED = "ok", "error", "interrupted"

Reporter = Callable[[Any, int, Dict[str, Any]], bool]   # (trial, step, metrics) -> stop early?


class Outcome(NamedTuple):
    """How one evaluation ended: ``kind`` is ``ok`` (``value`` the result), ``error`` (``value`` the
    error text; ``rejection`` the metrics of a ``TrialRejected``, else None) or ``interrupted``
    (``value`` the reason). Picklable, so it crosses process and Ray boundaries."""

    kind: str
    value: Any = None
    rejection: Optional[Dict[str, Any]] = None


def evaluate_safely(evaluate: Callable[[Any], Any], value: Any) -> Outcome:
    """Runs ``evaluate(value)``; whatever it raises becomes an ``Outcome`` (KeyboardInterrupt excepted
    in the caller's thread: it is the user stopping the search)."""
    try:
        return Outcome(OK, evaluate(value))
    except TrialRejected as rejection:
        return Outcome(ERROR, str(rejection), dict(rejection.metrics))   # str: an IllegalTransformation names its step
    except Exception as error:  # pylint: disable=broad-except
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return Outcome(ERROR, text[-4000:])
    except SystemExit as error:
        return Outcome(INTERRUPTED, f"its objective called sys.exit({error.code!r})")


def encode_value(value: Any) -> bytes:
    """A trial's concrete object for a worker of this run, pickled as the evaluator itself is (classes
    defined in ``__main__`` or a space file travel by value). Never written to disk: files are read
    only through ``symnas.safe_json``."""
    return cloudpickle.dumps(value)


def decode_value(payload: bytes) -> Any:
    """The value of ``encode_value``, in the worker process or Ray task this run started."""
    return pickle.loads(payload)


def evaluate_payload(evaluate: Callable[[Any], Any], payload: tuple) -> Outcome:
    """``evaluate_safely`` on an encoded value, in a worker process or a Ray task; a result that cannot
    travel back, or a KeyboardInterrupt there, is an outcome too."""
    try:
        outcome = evaluate_safely(evaluate, decode_value(payload))
        if outcome.kind == OK:
            pickle.dumps(outcome.value)  # fail here, with a clear text, rather than in the pipe
        return outcome
    except KeyboardInterrupt:
        return Outcome(INTERRUPTED, "interrupted (KeyboardInterrupt) while it ran")
    except Exception as error:  # pylint: disable=broad-except
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return Outcome(ERROR, text[-4000:])


def trial_checkpoint(checkpoint: Optional[Tuple[str, Optional[int]]]) -> Optional[Checkpoint]:
    """The ``Checkpoint`` an evaluation sees from a trial's ``(folder, resumed_step)`` (None: no folder;
    promotion-based schedulers give one). Worker processes and Ray tasks receive the plain tuple."""
    return None if checkpoint is None else Checkpoint(checkpoint[0], resumed_step=checkpoint[1])


def trial_input(trial) -> Any:
    """What the evaluator receives: the concrete object, or the DNA when the space is a DNASpec."""
    return trial.value if trial.value is not None else trial.dna


class Executor(abc.ABC):
    """Evaluates the trials the run loop submits; the loop never knows where they run.

    The loop calls ``start`` once, then ``submit`` while ``in_flight < capacity``, and ``wait`` for
    the outcomes; ``close`` ends every evaluation still running. ``report`` calls made inside an
    evaluation go to the ``reporter`` given to ``start``, and its answer back to the evaluation.
    """

    #: how many trials are evaluated at once; the loop never submits more
    capacity: int = 1

    def start(self, evaluate: Callable[[Any], Any], reporter: Reporter) -> None:
        self._evaluate, self._reporter = evaluate, reporter

    @abc.abstractmethod
    def submit(self, trial) -> None:
        """Starts evaluating ``trial`` (an ``ActiveTrial``)."""

    @abc.abstractmethod
    def wait(self) -> List[Tuple[Any, Outcome]]:
        """Blocks until at least one submitted trial ends; returns each ended trial with its outcome."""

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """How many submitted trials have not ended yet."""

    def close(self) -> None:
        """Stops every evaluation still running; the default has nothing to stop."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InlineExecutor(Executor):
    """Evaluates each trial in this thread when the loop waits for it (``workers=1``).

    ``sys.exit`` in the objective is an ``interrupted`` outcome; Ctrl-C propagates to the loop.
    """

    capacity = 1

    def __init__(self):
        self._queued: List[Any] = []

    def submit(self, trial) -> None:
        self._queued.append(trial)

    @property
    def in_flight(self) -> int:
        return len(self._queued)

    def wait(self) -> List[Tuple[Any, Outcome]]:
        trial = self._queued.pop(0)
        reporter = self._reporter
        with reporting_to(lambda step, metrics: reporter(trial, step, metrics), trial_checkpoint(trial.checkpoint)):
            return [(trial, evaluate_safely(self._evaluate, trial_input(trial)))]


def check_workers(workers: Any) -> int:
    """Validates the ``workers`` argument of ``sn.search``."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be a positive integer, got {workers!r}.")
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (the number of trials evaluated at once), got {workers}.")
    return workers


def check_trial_timeout(trial_timeout: Any) -> Optional[float]:
    """Validates the ``trial_timeout`` argument of ``sn.search``."""
    if trial_timeout is None:
        return None
    if isinstance(trial_timeout, bool) or not isinstance(trial_timeout, (int, float)) or not trial_timeout > 0:
        raise ValueError(f"trial_timeout must be a positive number of seconds or None, got {trial_timeout!r}.")
    return float(trial_timeout)
