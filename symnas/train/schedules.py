"""Learning-rate schedules: a multiplier of the optimizer's ``lr`` as a function of progress.

``factor(step, total_steps, steps_per_epoch)`` is evaluated at every optimisation step;
``build(optimizer, total_steps, steps_per_epoch)`` gives the torch scheduler the Trainer steps.

Example::

    sn.train.Trainer(..., schedule=sn.train.Warmup(epochs=1, then=sn.train.Cosine()))
    sn.train.Trainer(..., schedule=sn.train.OneCycle(pct_start=0.25))
"""
from __future__ import annotations

import math
from typing import List, Optional

import pyglove as pg
import torch

from symnas._deprecation import renamed_names

__all__ = ["LRSchedule", "Constant", "StepDecay", "Cosine", "Warmup", "OneCycle"]


class LRSchedule(pg.Object):
    """Base of learning-rate schedules."""

    def factor(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        raise NotImplementedError

    def build(self, optimizer, total_steps: int, steps_per_epoch: int):
        """The torch scheduler that applies ``factor`` at every step."""
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.factor(step, total_steps, steps_per_epoch))


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


class OneCycle(LRSchedule):
    """The one-cycle policy (Smith & Topin 2019), as ``torch.optim.lr_scheduler.OneCycleLR``: the rate
    rises from ``lr / div_factor`` to ``lr`` over the first ``pct_start`` of the steps (cosine), then
    falls to ``lr / (div_factor * final_div_factor)``; with ``cycle_momentum`` the optimizer's
    momentum (or Adam's beta1) moves the other way, between ``max_momentum`` and ``base_momentum``.

    Example::

        sn.train.Trainer(..., optimizer=sn.train.SGD(0.2, momentum=0.9, nesterov=True),
                         schedule=sn.train.OneCycle(pct_start=0.25, div_factor=10, final_div_factor=100))
    """
    pct_start: float = 0.25
    div_factor: float = 10.0
    final_div_factor: float = 100.0
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def _on_bound(self):
        super()._on_bound()
        if isinstance(self.pct_start, float) and not 0 < self.pct_start < 1:
            raise ValueError(f"OneCycle: pct_start must be in (0, 1), got {self.pct_start}.")

    def factor(self, step, total_steps, steps_per_epoch):
        peak = float(self.pct_start * total_steps) - 1
        low, end = 1 / self.div_factor, 1 / (self.div_factor * self.final_div_factor)
        if step <= peak:
            return _cosine(low, 1.0, step / peak if peak > 0 else 1.0)
        return _cosine(1.0, end, (step - peak) / max(total_steps - 1 - peak, 1e-12))

    def build(self, optimizer, total_steps, steps_per_epoch):
        if not float(self.pct_start * total_steps) - 1 > 0:
            raise ValueError(f"OneCycle with pct_start={self.pct_start} needs more than {1 / self.pct_start:g} steps, "
                             f"got {total_steps}: use more epochs or examples, or a smaller batch")
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total_steps, pct_start=self.pct_start,
            div_factor=self.div_factor, final_div_factor=self.final_div_factor,
            cycle_momentum=self.cycle_momentum and _has_momentum(optimizer),
            base_momentum=self.base_momentum, max_momentum=self.max_momentum)


def _cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * min(1.0, max(0.0, progress))) + 1)


def _has_momentum(optimizer) -> bool:
    defaults = optimizer.defaults
    return "betas" in defaults or defaults.get("momentum", 0) > 0


# files saved before the rename name the class by its old type name
pg.JSONConvertible.register("symnas.train.schedules.Step", StepDecay, override_existing=True)


# old name -> new name; the old one still works, with a warning
__getattr__ = renamed_names(__name__, globals(), {"Schedule": "LRSchedule", "Step": "StepDecay"})
