"""ASHA: asynchronous successive halving (Li et al., MLSys 2020), one bracket."""
from __future__ import annotations

from typing import List

import pyglove as pg

from symnas.schedulers.base import Scheduler
from symnas.schedulers.rungs import Bracket

__all__ = ["ASHA"]


@pg.members([
    ("min_resource", pg.typing.Any(default=1), "Steps every trial gets before it can be stopped (the first rung)."),
    ("max_resource", pg.typing.Any(default=None),
     "Steps a trial trains at most; rungs lie below it. None: rungs go on (min_resource * eta**k)."),
    ("reduction_factor", pg.typing.Any(default=3), "eta: the top 1/eta of each rung goes on."),
    ("min_early_stopping_rate", pg.typing.Int(min_value=0, default=0),
     "s: the first rung is at min_resource * eta**s."),
    ("objectives", pg.typing.Any(default=None),
     "What rungs compare: None = the search's objectives; or as sn.search's objectives= "
     "('accuracy', 'loss:min', {'accuracy': 'max', 'latency_ms': 'min'})."),
    ("mode", pg.typing.Enum("stop", ["stop", "promote"]),
     "'stop': a trial below the top 1/eta when it reaches a rung stops (works in every loop). "
     "'promote': it pauses there and resumes from its checkpoint when promoted (needs a loop that "
     "resumes paused trials)."),
])
class ASHA(Scheduler):
    """Asynchronous successive halving over ``report(step, ...)``: rungs at ``min_resource *
    eta**(k + s)``; when a trial reaches a rung it goes on only if it is in the top ``1/eta`` of the
    trials that reached that rung (by non-dominated rank with several objectives), else it stops.

    Example::

        import pyglove as pg, symnas as sn
        from symnas.reporting import report
        def evaluate(v):
            for epoch in range(1, 10):
                accuracy = v.q * (1 - 0.5 ** epoch)
                if report(epoch, accuracy=accuracy):
                    break
            return {"accuracy": accuracy}
        study = sn.search(pg.Dict(q=pg.floatv(0.0, 1.0)), evaluate, sn.algorithms.Random(seed=0),
                          num_trials=20, storage=None, objectives="accuracy", progress=False,
                          scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=9))
    """

    def _make_brackets(self) -> List[Bracket]:
        return [Bracket(self.min_resource, self.reduction_factor, self.max_resource,
                        self.min_early_stopping_rate)]

    def _bracket_index(self, trial_id: int) -> int:
        return 0
