"""Early-stopping policies for progressive evaluation (per-epoch accuracy measurements).

Both are ``pg.tuning.EarlyStoppingPolicy`` subclasses: pass them to ``pg.sample(...,
early_stopping_policy=...)`` or ``sn.search(..., early_stopping=...)``; the Trainer reports
``accuracy`` per epoch (step = epoch) and stops when the policy says so.

Example::

    policy = sn.train.AccuracyCurveStopping(max_step=10, theta=0.5)
    for trainer, feedback in pg.sample(space, algo, 20, early_stopping_policy=policy):
        feedback(trainer.train(feedback=feedback))
"""
from __future__ import annotations

import statistics
from typing import Dict, Iterable, Optional

import pyglove as pg

__all__ = ["MedianStopping", "AccuracyCurveStopping"]


def _value(measurement: pg.tuning.Measurement, metric: str) -> Optional[float]:
    if metric == "reward":
        return measurement.reward
    return (measurement.metrics or {}).get(metric)


class _CurvePolicy(pg.tuning.EarlyStoppingPolicy):
    """Remembers every trial's curve {step: value} from the measurements it is shown."""
    metric: str = "accuracy"

    def _on_bound(self):
        super()._on_bound()
        self._curves: Dict[int, Dict[int, float]] = {}

    def _record(self, trial: pg.tuning.Trial) -> Dict[int, float]:
        curve = self._curves.setdefault(trial.id, {})
        for m in trial.measurements:
            value = _value(m, self.metric)
            if value is not None:
                curve[int(m.step)] = float(value)
        return curve

    def _others_at(self, trial_id: int, step: int):
        return [c[step] for tid, c in self._curves.items() if tid != trial_id and step in c]

    def _latest(self, trial: pg.tuning.Trial):
        """(latest step, the trial's value there, other trials' values there), or None before any report."""
        curve = self._record(trial)
        if not curve:
            return None
        step = max(curve)
        return step, curve[step], self._others_at(trial.id, step)

    def recover(self, history: Iterable[pg.tuning.Trial]) -> None:
        for trial in history:
            self._record(trial)


class MedianStopping(_CurvePolicy):
    """Stops a trial whose ``metric`` at its latest step is below the median of the other
    trials' values at that step (Golovin et al., Google Vizier), once ``min_trials`` others
    reached the step and the trial is at least at ``min_step``. Larger is better."""
    min_trials: int = 3
    min_step: int = 1

    def should_stop_early(self, trial: pg.tuning.Trial) -> bool:
        latest = self._latest(trial)
        if latest is None:
            return False
        step, value, others = latest
        if step < self.min_step or len(others) < self.min_trials:
            return False
        return value < statistics.median(others)


class AccuracyCurveStopping(_CurvePolicy):
    """The accuracy-curve pruning rule: keep a trial while acc(epoch) >= lambda(epoch) * best(epoch),
    where best(epoch) is the best accuracy any other trial had at that epoch and
    lambda = theta + (1 - theta) * epoch / max_step (lenient early, strict at the end)."""
    max_step: int = 1
    theta: float = 0.5

    def _on_bound(self):
        super()._on_bound()
        if not 0.0 <= self.theta <= 1.0:
            raise ValueError(f"AccuracyCurveStopping: theta must be in [0, 1], got {self.theta}.")
        if self.max_step <= 0:
            raise ValueError(f"AccuracyCurveStopping: max_step must be positive, got {self.max_step}.")

    def threshold(self, step: int) -> float:
        """lambda(step)."""
        progress = min(1.0, step / self.max_step)
        return self.theta + (1.0 - self.theta) * progress

    def should_stop_early(self, trial: pg.tuning.Trial) -> bool:
        latest = self._latest(trial)
        if latest is None or not latest[2]:
            return False
        step, value, others = latest
        return value < self.threshold(step) * max(others)
