"""Exceptions that tell the search how a trial ended, and that tell the caller why a search stopped."""
from typing import Any, Dict, Optional


class TrialRejected(Exception):
    """The candidate is not worth evaluating (illegal transformation, failed legality check, ...).

    The trial is recorded with status ``rejected``, its reason and the metrics given here (for
    example both Fisher Potential scores); the search goes on and the algorithm gets no reward.

    Example::

        if fisher_candidate < fisher_original:
            raise TrialRejected("Fisher Potential dropped",
                                metrics={"fisher": fisher_candidate, "fisher_original": fisher_original})
    """

    def __init__(self, reason: str, metrics: Optional[Dict[str, Any]] = None):
        super().__init__(reason)
        self.reason = reason
        self.metrics = dict(metrics or {})


class SearchInterrupted(SystemExit):
    """The search stopped because an objective called ``sys.exit()`` (in this process or a worker).

    The trial is recorded as ``interrupted`` and finished trials are kept; running the same search
    again resumes it. As a ``SystemExit`` it ends a script with its message and exit status 1.
    (Ctrl-C stops a search with the usual ``KeyboardInterrupt``; its trials are recorded the same way.)
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
