"""Repair: make a chosen network pass the exact whole-network check, changing as little as possible.

Each round checks the network whole. Per-layer legality: every transformed layer that fails moves
to its next-fastest option that was legal alone (and is faster than the original), for ``rounds``
rounds, then to its original operator. Network legality: the layers that lost the most move, until
their losses cover the network's deficit. When no transformed layer fails any more and the network
still does (its layers lower the scores of the layers after them), the fewest earliest transformed
layers get their original operators back, found by bisection.

Example::

    outcome = sn.pte.Repair(rounds=4).run(exact, evaluator, choice)
    print(outcome.legal, outcome.moves)       # ["3.body.0: G8>shuffle -> G4>shuffle", ...]
"""
from __future__ import annotations

import dataclasses
from typing import List, Set

import pyglove as pg

from symnas.pte.exact import Choice, ExactCheck

__all__ = ["Repair", "RepairOutcome"]


@dataclasses.dataclass
class RepairOutcome:
    choice: Choice
    legal: bool
    moves: List[str]          # "layer: from -> to", in order
    rounds: int               # exact checks spent in repair rounds and bisection


class Repair(pg.Object):
    """Moves failing layers to their next legal option (``rounds`` rounds), then bisects (network mode)."""
    rounds: int = 4

    def _on_bound(self):
        super()._on_bound()
        if self.rounds < 0:
            raise ValueError(f"Repair: rounds must be >= 0, got {self.rounds}.")

    def run(self, exact: ExactCheck, evaluator, choice: Choice, legal: bool = False) -> RepairOutcome:
        """Repairs ``choice`` (``legal``: already known to pass, nothing to do)."""
        from symnas.spaces import describe_neural  # pylint: disable=import-outside-toplevel
        menu = exact.menu
        choice = dict(choice)
        tried = {p: {menu.index(menu.key[p], n)} for p, (n, _) in choice.items()}
        outcome = RepairOutcome(choice, legal, [], 0)
        while not outcome.legal:
            verdict = exact.check(outcome.choice)
            failing = [exact.path_of(n) for n in verdict.failing_layers
                       if exact.path_of(n) in outcome.choice and outcome.choice[exact.path_of(n)][0]]
            outcome.legal = verdict.legal
            if verdict.legal or not failing:
                break
            if exact.mode == "network":
                failing = _covering_deficit(verdict, failing, menu)
            outcome.rounds += 1
            for p in failing:
                index = self._next_option(evaluator, p, tried[p], outcome.rounds)
                tried[p].add(index)
                before = describe_neural(outcome.choice[p][0])
                outcome.choice[p] = menu.option_choice(p, index)
                outcome.moves.append(f"{menu.site[p].torch_name}: {before} -> {describe_neural(outcome.choice[p][0])}")
        if not outcome.legal and exact.mode == "network":
            self._bisect(exact, outcome)
        return outcome

    def _next_option(self, evaluator, path: str, tried: Set[int], round_: int) -> int:
        # the next-fastest option that was legal alone and not tried here yet; after ``rounds``
        # rounds (or when none is left) the original operator
        options = evaluator.menu.options[evaluator.menu.key[path]]
        ranked = sorted((options[i].latency_ms, i) for i in range(1, len(options))
                        if i not in tried and round_ <= self.rounds and evaluator.layer(path, i)[0]
                        and options[i].latency_ms < options[0].latency_ms)
        return ranked[0][1] if ranked else 0

    @staticmethod
    def _bisect(exact: ExactCheck, outcome: RepairOutcome) -> None:
        # no transformed layer fails any more, yet they lower the layers after them: give the earliest
        # transformed layers (those with the most layers after them) their original operators back,
        # as few as the exact check allows (reverting all of them gives the original network)
        from symnas.spaces import describe_neural  # pylint: disable=import-outside-toplevel
        menu, chosen = exact.menu, outcome.choice
        transformed = [s.path for s in menu.sites if chosen[s.path][0]]

        def reverted(count: int) -> Choice:
            out = dict(chosen)
            for p in transformed[:count]:
                out[p] = menu.original_choice(p)
            return out

        low, high = min(1, len(transformed)), len(transformed)   # reverting none fails (checked before)
        while low < high:
            mid = (low + high) // 2
            ok = exact.check(reverted(mid)).legal
            outcome.rounds += 1
            low, high = (low, mid) if ok else (mid + 1, high)
        outcome.moves += [f"{menu.site[p].torch_name}: {describe_neural(chosen[p][0])} -> original (prefix)"
                          for p in transformed[:high]]
        outcome.choice, outcome.legal = reverted(high), True


def _covering_deficit(verdict, failing: List[str], menu) -> List[str]:
    """The failing layers that lost the most, until their losses cover the network's deficit."""
    def loss(p):
        orig, cand = verdict.per_layer[menu.site[p].torch_name]
        return orig - cand
    deficit, covered, worst = verdict.original_score - verdict.candidate_score, 0.0, []
    for p in sorted(failing, key=loss, reverse=True):
        if worst and covered >= deficit:
            break
        worst.append(p)
        covered += loss(p)
    return worst

