"""Hyperband (Li et al., JMLR 2018) made asynchronous: ASHA brackets with different first rungs."""
from __future__ import annotations

import math
from typing import List

import pyglove as pg

from symnas.schedulers.base import Scheduler
from symnas.schedulers.rungs import Bracket

__all__ = ["Hyperband"]


@pg.members([
    ("min_resource", pg.typing.Any(default=1), "The first rung of the most aggressive bracket."),
    ("max_resource", pg.typing.Any(default=None), "Steps a trial trains at most (required)."),
    ("reduction_factor", pg.typing.Any(default=3), "eta: the top 1/eta of each rung goes on."),
    ("objectives", pg.typing.Any(default=None),
     "What rungs compare: None = the search's objectives, else as sn.search's objectives=."),
    ("mode", pg.typing.Enum("stop", ["stop", "promote"]),
     "'stop' (every loop) or 'promote' (pause and resume from checkpoints); see ASHA."),
])
class Hyperband(Scheduler):
    """Brackets ``e = 0..S`` (``S = floor(log_eta(max / min))``); bracket ``e`` is ASHA with its first
    rung at ``min_resource * eta**e``, and bracket ``S`` trains every trial fully. Trials are dealt
    to brackets by trial id in Hyperband's proportions (``ceil((S+1) / (S-e+1) * eta**(S-e))``),
    interleaved, so an aggressive bracket's mistakes are hedged by conservative ones. Each bracket
    compares its trials only with each other.

    Example::

        import pyglove as pg, symnas as sn
        from symnas.reporting import report
        def evaluate(v):
            for epoch in range(1, 28):
                accuracy = v.q * (1 - 0.7 ** epoch)
                if report(epoch, accuracy=accuracy):
                    break
            return {"accuracy": accuracy}
        scheduler = sn.schedulers.Hyperband(min_resource=1, max_resource=27, reduction_factor=3)
        study = sn.search(pg.Dict(q=pg.floatv(0.0, 1.0)), evaluate, sn.algorithms.Random(seed=0),
                          num_trials=60, storage=None, objectives="accuracy", progress=False,
                          scheduler=scheduler)
        print(scheduler.rung_sizes())     # trials that reached each rung, per bracket
    """

    def _check_arguments(self) -> None:
        if self.max_resource is None:
            raise ValueError("Hyperband: max_resource is required (the steps a trial trains at most).")
        super()._check_arguments()

    @property
    def num_brackets(self) -> int:
        ratio = self.max_resource / self.min_resource
        return int(math.floor(math.log(ratio) / math.log(self.reduction_factor) + 1e-9)) + 1

    def bracket_weights(self) -> List[int]:
        """How many trials each bracket gets per round (Hyperband's n_s)."""
        top = self.num_brackets - 1
        return [math.ceil((top + 1) / (top - e + 1) * self.reduction_factor ** (top - e))
                for e in range(top + 1)]

    def _make_brackets(self) -> List[Bracket]:
        brackets = [Bracket(self.min_resource, self.reduction_factor, self.max_resource, e)
                    for e in range(self.num_brackets)]
        self._cycle = _interleave(self.bracket_weights())
        return brackets

    def _bracket_index(self, trial_id: int) -> int:
        return self._cycle[(trial_id - 1) % len(self._cycle)]


def _interleave(weights: List[int]) -> List[int]:
    """Smooth weighted round-robin: bracket e appears weights[e] times per cycle, spread out."""
    total = sum(weights)
    current = [0] * len(weights)
    cycle = []
    for _ in range(total):
        for i, weight in enumerate(weights):
            current[i] += weight
        chosen = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[chosen] -= total
        cycle.append(chosen)
    return cycle
