"""Intermediate results from inside an evaluator, for curves, early stopping and multi-fidelity.

Example::

    from symnas.reporting import report

    def evaluate(trainer):
        for epoch in range(1, 11):
            accuracy = trainer.train_one_epoch()
            if report(step=epoch, accuracy=accuracy):   # True: the scheduler / policy says stop
                break
        return {"accuracy": accuracy}

``step`` is the resource used so far (epochs completed, say): schedulers place their rungs on it.
Outside a search ``report`` does nothing and returns False, so evaluators work standalone.

A loop that pauses trials (promotion-based ASHA) gives each trial a :class:`Checkpoint` folder;
the evaluator saves its state there before each ``report`` and, when ``checkpoint()`` says it
resumes, loads it instead of starting over::

    from symnas.reporting import checkpoint, report

    def evaluate(trainer):
        state = trainer.initial_state()
        ckpt = checkpoint()                  # None outside a search or when the loop keeps none
        if ckpt is not None and ckpt.resumed:
            state = torch.load(ckpt.file("state.pt"))
        for epoch in range(state.epoch + 1, 28):
            state = trainer.train_one_epoch(state)
            if ckpt is not None:
                torch.save(state, ckpt.file("state.pt"))
            if report(step=epoch, accuracy=state.accuracy):
                break
        return {"accuracy": state.accuracy}
"""
import contextlib
import contextvars
import os
import pathlib
from typing import Any, Callable, Iterator, Optional, Union

# The reporter of the trial being evaluated in this thread/context: a callable (step, metrics) -> bool.
_current_reporter: contextvars.ContextVar[Optional[Callable[[int, dict], bool]]] = contextvars.ContextVar(
    "symnas_current_reporter", default=None)
_current_checkpoint: contextvars.ContextVar[Optional["Checkpoint"]] = contextvars.ContextVar(
    "symnas_current_checkpoint", default=None)


class Checkpoint:
    """The folder where one trial keeps its state between a pause and its resumption.

    ``resumed_step`` is the step of the trial's last report before it paused (None on a fresh
    start); ``resumed`` says whether there is state to load. The folder is created on first use.

    Example::

        ckpt = Checkpoint("/tmp/runs.db.checkpoints/study/7", resumed_step=3)
        path = ckpt.file("state.pt")         # /tmp/runs.db.checkpoints/study/7/state.pt
    """

    def __init__(self, directory: Union[str, os.PathLike], resumed_step: Optional[int] = None):
        self.directory = pathlib.Path(directory)
        self.resumed_step = resumed_step

    @property
    def resumed(self) -> bool:
        """True when the trial was paused before and its folder holds what it saved then."""
        return self.resumed_step is not None and self.directory.is_dir() and any(self.directory.iterdir())

    def file(self, name: str) -> str:
        """The path of ``name`` inside the trial's folder (a plain file name, no sub-folders)."""
        if not name or os.path.basename(name) != name or name in (".", ".."):
            raise ValueError(f"A checkpoint file name must be a plain file name, got {name!r}.")
        self.directory.mkdir(parents=True, exist_ok=True)
        return str(self.directory / name)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, resumed_step={self.resumed_step!r})"


def report(step: int, **metrics: Any) -> bool:
    """Records an intermediate measurement of the current trial; returns True if it should stop
    now (stopped, or paused to be resumed from its checkpoint)."""
    reporter = _current_reporter.get()
    if reporter is None:
        return False
    return bool(reporter(int(step), metrics))


def checkpoint() -> Optional[Checkpoint]:
    """The current trial's :class:`Checkpoint`, or None outside a search or when its loop keeps none."""
    return _current_checkpoint.get()


@contextlib.contextmanager
def reporting_to(reporter: Callable[[int, dict], bool], checkpoint: Optional[Checkpoint] = None
                 ) -> Iterator[None]:  # pylint: disable=redefined-outer-name
    """Routes ``report`` calls made inside the block to ``reporter``; ``checkpoint()`` answers
    ``checkpoint`` there."""
    token = _current_reporter.set(reporter)
    checkpoint_token = _current_checkpoint.set(checkpoint)
    try:
        yield
    finally:
        _current_checkpoint.reset(checkpoint_token)
        _current_reporter.reset(token)
