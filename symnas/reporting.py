"""Intermediate results from inside an evaluator, for curves and early stopping.

Example::

    from symnas.reporting import report

    def evaluate(trainer):
        for epoch in range(10):
            accuracy = trainer.train_one_epoch()
            if report(step=epoch, accuracy=accuracy):   # True: the early-stopping policy says stop
                break
        return {"accuracy": accuracy}

Outside a search ``report`` does nothing and returns False, so evaluators work standalone.
"""
import contextlib
import contextvars
from typing import Any, Callable, Iterator, Optional

# The reporter of the trial being evaluated in this thread/context: a callable (step, metrics) -> bool.
_current_reporter: contextvars.ContextVar[Optional[Callable[[int, dict], bool]]] = contextvars.ContextVar(
    "symnas_current_reporter", default=None)


def report(step: int, **metrics: Any) -> bool:
    """Records an intermediate measurement of the current trial; returns True if it should stop early."""
    reporter = _current_reporter.get()
    if reporter is None:
        return False
    return bool(reporter(int(step), metrics))


@contextlib.contextmanager
def reporting_to(reporter: Callable[[int, dict], bool]) -> Iterator[None]:
    """Routes ``report`` calls made inside the block to ``reporter``."""
    token = _current_reporter.set(reporter)
    try:
        yield
    finally:
        _current_reporter.reset(token)
