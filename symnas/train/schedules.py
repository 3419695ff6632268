"""Learning-rate schedules: a multiplier of the optimizer's ``lr`` as a function of progress.

``factor(step, total_steps, steps_per_epoch)`` is evaluated at every optimisation step.

Example::

    sn.train.Trainer(..., schedule=sn.train.Warmup(epochs=1, then=sn.train.Cosine()))
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional

import pyglove as pg

__all__ = ["LRSchedule", "Constant", "StepDecay", "Cosine", "Warmup"]


class LRSchedule(pg.Object):
    """Base of learning-rate schedules."""

    def factor(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        raise NotImplementedError


class Constant(LRSchedule):
    """The learning rate stays at ``lr``."""

    def factor(self, step, total_steps, steps_per_epoch):
        return 1.0


class StepDecay(LRSchedule):
    """Multiplies the rate by ``gamma`` at each epoch in ``milestones`` (or every ``every`` epochs)."""
    milestones: Optional[List[int]] = None
    every: Optional[int] = None
    gamma: float = 0.1

    def factor(self, step, total_steps, steps_per_epoch):
        epoch = step // max(1, steps_per_epoch)
        if self.every is not None:
            if self.every <= 0:
                raise ValueError(f"StepDecay: every must be positive, got {self.every}.")
            return self.gamma ** (epoch // self.every)
        drops = sum(1 for m in (self.milestones or []) if epoch >= m)
        return self.gamma ** drops


class Cosine(LRSchedule):
    """Cosine decay from ``lr`` to ``min_factor * lr`` over the whole run."""
    min_factor: float = 0.0

    def factor(self, step, total_steps, steps_per_epoch):
        progress = min(1.0, step / max(1, total_steps))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class Warmup(LRSchedule):
    """Linear warm-up over ``epochs`` epochs, then ``then`` (run over the remaining steps)."""
    epochs: float = 1.0
    then: LRSchedule = Constant()

    def factor(self, step, total_steps, steps_per_epoch):
        warm = int(round(self.epochs * steps_per_epoch))
        if step < warm:
            return (step + 1) / warm
        return self.then.factor(step - warm, max(1, total_steps - warm), steps_per_epoch)


# files saved before the rename name the class by its old type name
pg.JSONConvertible.register("symnas.train.schedules.Step", StepDecay, override_existing=True)


_RENAMED = {"Schedule": "LRSchedule", "Step": "StepDecay"}   # old name -> new name; the old one still works, with a warning


def __getattr__(name):
    if name in _RENAMED:
        warnings.warn(f"{__name__}.{name} is renamed {_RENAMED[name]}; the old name will go away.",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
