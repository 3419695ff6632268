"""Budget fill: spend what is left of a latency budget on capacity while the network stays legal.

The fastest legal network is usually faster than the target. ``BudgetFill`` upgrades its layers,
one at a time, to options with more capacity (conv weights, or a layer's SNIP score with
``by="snip"``), the most capacity per ms first, while the kernel sum stays within the budget;
each upgrade is kept only when the whole network still passes the exact legality check.

Example::

    outcome = sn.pte.BudgetFill(by="snip", checks=100).run(exact, evaluator, choice, budget_ms=1.9)
    print(outcome.upgrades, outcome.latency_ms)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import pyglove as pg

from symnas.pte.exact import Choice, ExactCheck

__all__ = ["BudgetFill", "FillOutcome"]


@dataclasses.dataclass
class FillOutcome:
    choice: Choice
    upgrades: List[str]       # "layer: from -> to" for every upgrade kept
    checks: int               # exact checks spent
    latency_ms: float         # the kernel sum after the fill
    budget_ms: float


class BudgetFill(pg.Object):
    """Upgrades layers within a latency budget, most ``by`` per ms first, keeping the network legal.

    ``by``: ``"weights"`` (conv weights) or ``"snip"`` (each option's SNIP score in the otherwise
    original network, exact tail context); ``images``: the batch's first images that rank the SNIP
    options (default all; the exact checks always use the whole batch); ``checks``: exact checks
    to spend at most.
    """
    by: str = "weights"
    images: Optional[int] = None
    checks: int = 40

    def _on_bound(self):
        super()._on_bound()
        if self.by not in ("weights", "snip"):
            raise ValueError(f"BudgetFill: by must be 'weights' or 'snip', got {self.by!r}.")
        if self.images is not None and self.images < 1:
            raise ValueError(f"BudgetFill: images must be >= 1, got {self.images}.")
        if self.checks < 0:
            raise ValueError(f"BudgetFill: checks must be >= 0, got {self.checks}.")

    def run(self, exact: ExactCheck, evaluator, choice: Choice, budget_ms: float) -> FillOutcome:
        """Fills ``choice`` (legal by the exact check) up to ``budget_ms`` of kernels."""
        from symnas.spaces import describe_neural  # pylint: disable=import-outside-toplevel
        menu = exact.menu
        outcome = FillOutcome(dict(choice), [], 0, menu.latency(choice), budget_ms)
        value = _Value(self, exact, evaluator)
        refused = set()
        try:
            while outcome.checks < self.checks:
                upgrades = self._upgrades(menu, outcome, value, refused)
                if not upgrades:
                    break
                _, p, i, cost = max(upgrades)
                trial = dict(outcome.choice)
                trial[p] = menu.option_choice(p, i)
                outcome.checks += 1
                if exact.check(trial).legal:
                    outcome.upgrades.append(f"{menu.site[p].torch_name}: {describe_neural(outcome.choice[p][0])} -> "
                                            f"{describe_neural(trial[p][0])}")
                    outcome.choice, outcome.latency_ms = trial, outcome.latency_ms + cost
                else:
                    refused.add((p, i))
        finally:
            value.release()
        return outcome

    @staticmethod
    def _upgrades(menu, outcome: FillOutcome, value: "_Value", refused: set) -> List[Tuple[float, str, int, float]]:
        upgrades = []
        for site in menu.sites:
            n, pr = outcome.choice[site.path]
            now_ms = menu.table.measure(menu.ops[site.key], n, pr)
            now_value = value(site, menu.index(site.key, n))
            for i, option in enumerate(menu.options[site.key]):
                cost = option.latency_ms - now_ms
                if outcome.latency_ms + cost > outcome.budget_ms or (site.path, i) in refused or not math.isfinite(cost):
                    continue
                gain = value(site, i) - now_value
                if gain > 0:
                    upgrades.append((gain / max(cost, 1e-3), site.path, i, cost))
        return upgrades


class _Value:
    """What an option adds: its conv weights, or its SNIP score (cached; -inf when not finite)."""

    def __init__(self, fill: BudgetFill, exact: ExactCheck, evaluator):
        self.by, self.evaluator, self.menu = fill.by, evaluator, exact.menu
        self.scorer = None
        self._cache: Dict[Tuple[str, int], float] = {}
        if fill.by == "snip":
            from symnas.proxies import LegalityCheck  # pylint: disable=import-outside-toplevel
            n = min(fill.images or len(exact.inputs), len(exact.inputs))
            self.scorer = LegalityCheck(seed=exact.legality.seed, mode="network", proxy="snip").isolated_scorer(
                exact.network, exact.inputs[:n], exact.targets[:n], context="tail")

    def __call__(self, site, index: int) -> float:
        if self.by == "weights":
            return self.evaluator.weights(site.key, index)
        if (site.path, index) not in self._cache:
            from symnas import program as P  # pylint: disable=import-outside-toplevel
            from symnas.proxies import NonFiniteScore  # pylint: disable=import-outside-toplevel
            try:
                self._cache[(site.path, index)] = (
                    self.scorer.original_scores[site.torch_name] if index == 0 else self.scorer.score(
                        site.path, P.Schedule(site.operator(), list(self.menu.options[site.key][index].neural))))
            except NonFiniteScore:
                self._cache[(site.path, index)] = -math.inf     # never an upgrade
        return self._cache[(site.path, index)]

    def release(self) -> None:
        if self.scorer is not None:
            self.scorer.release()
            from symnas.pte.exact import release_memory  # pylint: disable=import-outside-toplevel
            release_memory()
