"""Shortlist screening: the search's best legal candidates, checked exactly in order.

The search adds up layers scored one at a time, which estimates a network's score; the
network it ranks first may fail when checked whole. ``ExactScreening(candidates=K)`` takes
the K best distinct legal candidates, best first, and keeps the first that passes the exact
whole-network check (the best is repaired when none does).

Example::

    screening = sn.pte.ExactScreening(candidates=40)
    shortlist = screening.shortlist(study, decode, evaluator)
    passed, verdicts = screening.run(exact, shortlist)     # index of the first that passes
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import pyglove as pg

from symnas.pte.exact import Choice, ExactCheck
from symnas.pte.kernel_table import steps_key

__all__ = ["ExactScreening"]


class ExactScreening(pg.Object):
    """Checks the search's ``candidates`` best distinct legal candidates exactly, best first."""
    candidates: int = 10

    def _on_bound(self):
        super()._on_bound()
        if self.candidates < 0:
            raise ValueError(f"ExactScreening: candidates must be >= 0, got {self.candidates}.")

    def shortlist(self, study, decode: Callable, evaluator) -> List[Choice]:
        """The best legal candidates of ``study`` as choices, best first, without repeats.

        ``decode`` turns a trial's DNA into its candidate; ``evaluator`` (a ``BoundEvaluator``)
        says what network a candidate stands for."""
        shortlist, seen = [], set()
        for record in sorted(study.completed, key=lambda r: r.metrics["reward"], reverse=True):
            if len(shortlist) >= self.candidates or not record.metrics.get("legal"):
                break
            choice = evaluator.choice(decode(record.to_dna()))
            key = tuple((p, steps_key(n), steps_key(pr)) for p, (n, pr) in sorted(choice.items()))
            if key not in seen:
                seen.add(key)
                shortlist.append(choice)
        return shortlist

    def run(self, exact: ExactCheck, shortlist: List[Choice]) -> Tuple[Optional[int], List[bool]]:
        """Checks ``shortlist`` in order until one passes: (its index or None, the verdicts)."""
        verdicts = []
        for rank, choice in enumerate(shortlist):
            verdicts.append(exact.check(choice).legal)
            if verdicts[-1]:
                return rank, verdicts
        return None, verdicts
