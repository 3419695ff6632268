"""Exceptions that an evaluator raises to tell the search how a trial ended."""
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
