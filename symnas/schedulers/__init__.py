"""Multi-fidelity schedulers over ``symnas.reporting.report``: ASHA and Hyperband, for every algorithm.

``sn.search(..., scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=27))`` stops a trial
that falls below the top ``1/reduction_factor`` of the trials that reached the same step (its
rung); with several objectives, below the top by non-dominated rank. It works in sequential,
process (``workers=N``) and Ray runs, since decisions are taken in the driver at each report.

Example::

    import pyglove as pg, symnas as sn
    from symnas.reporting import report
    def evaluate(v):
        for epoch in range(1, 28):
            accuracy = v.q * (1 - 0.7 ** epoch)
            if report(epoch, accuracy=accuracy):     # True: the scheduler stopped the trial
                break
        return {"accuracy": accuracy}
    study = sn.search(pg.Dict(q=pg.floatv(0.0, 1.0)), evaluate, sn.algorithms.Random(seed=0),
                      num_trials=30, storage=None, objectives="accuracy", progress=False,
                      scheduler=sn.schedulers.Hyperband(min_resource=1, max_resource=27))
"""
from symnas.schedulers.asha import ASHA
from symnas.schedulers.base import CONTINUE, PAUSE, STOP, Scheduler
from symnas.schedulers.hyperband import Hyperband

__all__ = ["ASHA", "Hyperband", "Scheduler", "CONTINUE", "STOP", "PAUSE"]
