"""The error raised for a transformation that cannot be applied."""
from typing import Any, Optional

from symnas.errors import TrialRejected


class IllegalTransformation(TrialRejected, ValueError):
    """A step of a schedule cannot be applied to the loop nest it meets.

    Carries the offending ``step``, its ``position`` in the step list (``None`` when
    the failure is not tied to one step, e.g. at build time) and the ``reason``
    (TVM's message where TVM refused). It is a ``TrialRejected``: in ``sn.search`` such a trial
    is recorded as ``rejected`` with the message and the search goes on.

    Example::

        try:
            sn.program.Schedule(conv, [sn.program.Vectorize("ci")]).lower()
        except sn.program.IllegalTransformation as e:
            print(e.position, e.reason)
    """

    def __init__(self, reason: str, step: Any = None, position: Optional[int] = None):
        self.step = step
        self.position = position
        self.reason = reason
        where = "" if position is None else f"step {position} "
        what = "" if step is None else f"{_short(step)}: "
        message = f"illegal transformation at {where}{what}{reason}"
        super().__init__(message)
        self.reason = reason  # TrialRejected stores the whole message; keep TVM's reason alone here


def _short(step: Any) -> str:
    try:
        import pyglove as pg  # pylint: disable=import-outside-toplevel
        return pg.format(step, compact=True)
    except Exception:  # pylint: disable=broad-except
        return repr(step)


def tvm_reason(error: BaseException) -> str:
    """The informative lines of a TVM error message (drops tracebacks)."""
    text = str(error)
    if "Error message:" in text:
        # ScheduleError prints the whole IR first; the last part says what is wrong.
        return text.rsplit("Error message:", 1)[1].strip()[:600]
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("File ", "^", "Traceback"))
            and "site-packages" not in line]
    text = " ".join(kept) if kept else type(error).__name__
    return text[:600]
