"""What a multi-fidelity scheduler is: at each ``report(step, ...)`` it says continue, stop or pause.

A scheduler is a ``pg.tuning.EarlyStoppingPolicy`` (so ``sn.search(..., scheduler=...)`` and
``pg.sample(..., early_stopping_policy=...)`` both take it) whose decisions come from successive
halving over ``Bracket`` rungs (``symnas.schedulers.rungs``). The step of a report is the resource
used so far (epochs completed, say); the values compared are the search's objectives (or the
scheduler's own ``objectives=``), so several objectives are compared by non-dominated rank.

The contract with a search loop (``symnas.search`` today: stop only):

1. ``bind_search(objectives, can_pause)`` once, before ``recover`` and before any trial.
2. ``recover(history)`` with the stored trials (their measurements rebuild the rungs).
3. ``decide(trial_id, step, metrics)`` at every report: ``CONTINUE``, ``STOP`` or ``PAUSE``; the
   evaluator's ``report`` returns True for the last two (``stops_at``). ``should_stop_early``, the
   PyGlove interface, wraps it too (and costs more: PyGlove's trial object is rebuilt per report).
4. ``PAUSE`` (``mode="promote"`` only, when the loop passed ``can_pause=True``): the loop keeps the
   trial as paused; before proposing a new trial it asks ``next_resume()`` and resumes that trial
   from its checkpoint (``symnas.reporting.checkpoint``). docs/multi_fidelity.md states precisely
   what the loop does; ``finish(trial_id)`` tells the scheduler a trial ended for good.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pyglove as pg

from symnas import objectives as objectives_lib
from symnas.schedulers.rungs import Bracket

__all__ = ["Scheduler", "CONTINUE", "STOP", "PAUSE"]

CONTINUE, STOP, PAUSE = "continue", "stop", "pause"


class Scheduler(pg.tuning.EarlyStoppingPolicy):
    """Base of successive-halving schedulers: subclasses say which brackets exist and which
    bracket a trial belongs to (``_make_brackets``, ``_bracket_index``); see the module doc."""

    # Members every subclass declares (pg.members): min_resource, reduction_factor, objectives, mode.

    def _on_bound(self):
        super()._on_bound()
        self._check_arguments()
        self._objectives = None
        self._can_pause = False
        self._reset()

    def _check_arguments(self) -> None:
        name = type(self).__name__
        eta = self.reduction_factor
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 2:
            raise ValueError(f"{name}: reduction_factor must be a number >= 2 (keep the top 1/eta at "
                             f"each rung), got {eta!r}.")
        low = self.min_resource
        if isinstance(low, bool) or not isinstance(low, (int, float)) or not low > 0:
            raise ValueError(f"{name}: min_resource must be a positive number of steps, got {low!r}.")
        high = getattr(self, "max_resource", None)
        if high is not None:
            if isinstance(high, bool) or not isinstance(high, (int, float)) or not math.isfinite(high):
                raise ValueError(f"{name}: max_resource must be a number of steps, got {high!r}.")
            if high <= low:
                raise ValueError(f"{name}: max_resource ({high}) must be larger than min_resource ({low}): "
                                 f"below it there is no rung at which to stop a trial.")
        if self.objectives is not None:
            objectives_lib.parse_objectives(self.objectives)   # one clear error now, not at the first report

    def _reset(self) -> None:
        self._brackets: List[Bracket] = self._make_brackets()
        self._assigned: Dict[int, int] = {}
        self._paused: Set[int] = set()
        self._decisions: Dict[int, str] = {}
        self._warned = False

    # -- to define ------------------------------------------------------------------------------
    def _make_brackets(self) -> List[Bracket]:
        raise NotImplementedError

    def _bracket_index(self, trial_id: int) -> int:
        raise NotImplementedError

    # -- the loop's side --------------------------------------------------------------------------
    def bind_search(self, objectives: Sequence[objectives_lib.Objective], can_pause: bool = False) -> None:
        """Called by the search before any trial: its objectives, and whether its loop resumes
        paused trials. Clears what an earlier search left."""
        if self.mode == "promote" and not can_pause:
            raise ValueError(
                f"{type(self).__name__}(mode='promote') pauses trials and resumes them from checkpoints, "
                f"which this search loop does not do yet; use mode='stop' (the default).")
        self._objectives = objectives_lib.parse_objectives(self.objectives) if self.objectives is not None \
            else tuple(objectives)
        self._can_pause = can_pause
        self._reset()

    @property
    def compared_objectives(self) -> Tuple[objectives_lib.Objective, ...]:
        """The objectives rungs compare: ``objectives=`` if given, else the search's, else ``reward``."""
        if self._objectives is None:
            self._objectives = objectives_lib.parse_objectives(self.objectives)
        return self._objectives

    def _values(self, metrics: Dict[str, Any], reward: Optional[float] = None) -> Optional[Tuple[float, ...]]:
        values = []
        for objective in self.compared_objectives:
            value = metrics.get(objective.name)
            if value is None and objective.name == "reward":
                value = reward
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"{type(self).__name__}: a report has no finite {objective.name!r} (it has "
                        f"{sorted(metrics)}); such reports never stop a trial. Report the objective, or "
                        f"pass objectives= to the scheduler.", RuntimeWarning, stacklevel=3)
                return None
            values.append(objective.sign * float(value))
        return tuple(values)

    def bracket_of(self, trial_id: int) -> Bracket:
        index = self._assigned.get(trial_id)
        if index is None:
            index = self._assigned[trial_id] = self._bracket_index(trial_id)
        return self._brackets[index]

    def decide(self, trial_id: int, step: float, metrics: Dict[str, Any],
               reward: Optional[float] = None) -> str:
        """``CONTINUE``, ``STOP`` or ``PAUSE`` for a trial that reported ``metrics`` at ``step``."""
        if self._decisions.get(trial_id) in (STOP, PAUSE):
            return self._decisions[trial_id]   # asked again (e.g. replayed): the same answer
        values = self._values(metrics, reward)
        if values is None:
            return CONTINUE
        bracket = self.bracket_of(trial_id)
        rung = bracket.arrive(trial_id, step, values)
        if rung is None:
            return CONTINUE
        if self.mode == "stop":
            decision = CONTINUE if bracket.keeps(rung, trial_id) else STOP
        elif trial_id in bracket.promotable(rung) and not self._promotable_paused():
            bracket.promoted[rung].add(trial_id)   # it would be the next to resume: go on at once
            decision = CONTINUE
        else:
            decision = PAUSE
            self._paused.add(trial_id)
        if decision != CONTINUE:
            self._decisions[trial_id] = decision
        return decision

    def stops_at(self, trial_id: int, step: float, metrics: Dict[str, Any]) -> bool:
        """Whether ``report`` returns True (stop, or pause) for this report; ``decide`` says which."""
        return self.decide(trial_id, step, metrics) != CONTINUE

    def _promotable_paused(self) -> List[Tuple[int, int, int]]:
        """(bracket, rung, trial) of paused trials that may be promoted, highest rung first."""
        found = []
        for b, bracket in enumerate(self._brackets):
            for k in reversed(range(len(bracket.milestones))):
                found.extend((b, k, t) for t in bracket.promotable(k) if t in self._paused)
        return sorted(found, key=lambda entry: -entry[1])

    def next_resume(self) -> Optional[int]:
        """A paused trial to resume now (promotion-based mode), or None: then propose a new trial."""
        candidates = self._promotable_paused()
        if not candidates:
            return None
        b, k, trial_id = candidates[0]
        self._brackets[b].promoted[k].add(trial_id)
        self._paused.discard(trial_id)
        self._decisions.pop(trial_id, None)
        return trial_id

    @property
    def paused(self) -> List[int]:
        """Trials paused and not resumed yet; the loop finalises them when the search ends."""
        return sorted(self._paused)

    def restore_paused(self, trial_ids: Iterable[int]) -> None:
        """After ``recover``: which stored trials are paused (their last report reached a rung)."""
        for trial_id in trial_ids:
            self._paused.add(trial_id)
            self._decisions[trial_id] = PAUSE

    def finish(self, trial_id: int) -> None:
        """The trial ended for good (completed, failed, or finalised while paused)."""
        self._paused.discard(trial_id)

    # -- pg.tuning.EarlyStoppingPolicy ---------------------------------------------------------
    def should_stop_early(self, trial: pg.tuning.Trial) -> bool:
        if self.mode == "promote" and not self._can_pause:
            raise ValueError(f"{type(self).__name__}(mode='promote') needs a loop that resumes paused "
                             f"trials; use mode='stop'.")
        if not trial.measurements:
            return False
        last = trial.measurements[-1]
        return self.decide(trial.id, last.step, dict(last.metrics or {}), last.reward) != CONTINUE

    def recover(self, history: Iterable[pg.tuning.Trial]) -> None:
        """Rebuilds the rungs from stored trials: each report is placed where it arrived."""
        for trial in history:
            bracket = self.bracket_of(trial.id)
            for measurement in trial.measurements:
                values = self._values(dict(measurement.metrics or {}), measurement.reward)
                if values is not None:
                    bracket.arrive(trial.id, measurement.step, values)

    # -- accounting ------------------------------------------------------------------------------
    def rung_sizes(self) -> List[List[int]]:
        """How many trials reached each rung, per bracket."""
        return [[len(records) for records in bracket.records] for bracket in self._brackets]
