"""The rungs of successive halving: who reached which resource with which values, and who goes on.

A ``Bracket`` has milestones ``min_resource * eta**(k + s)`` (``s`` its early-stopping rate) below
``max_resource``. A trial *arrives* at a rung when it reports a step at or past the milestone; its
values there are kept. Values are one number per objective, signed so that larger is better.

Ranking with several objectives uses non-dominated sorting (NSGA-II's fronts, then crowding
distance within a front); with one objective it is plain sorting. Two rules use it:

- ``keeps(rung, trial)`` (stopping-based ASHA, Ray Tune's rule): on arrival a trial goes on when
  fewer than ``ceil(n / eta)`` of the ``n`` trials at the rung (itself included) are in a strictly
  better front. The first arrival always goes on.
- ``promotable(rung)`` (promotion-based ASHA, Li et al. 2020, Alg. 2): the trials in the top
  ``floor(n / eta)`` of the rung's order that were not promoted yet.

Example::

    from symnas.schedulers.rungs import Bracket
    bracket = Bracket(min_resource=1, reduction_factor=3, max_resource=27)
    bracket.milestones                   # [1, 3, 9]
    rung = bracket.arrive(trial_id=1, step=1, values=(0.8,))
    bracket.keeps(rung, 1)               # True: the first trial at a rung goes on
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

Values = Tuple[float, ...]

__all__ = ["Bracket", "fronts", "order"]


def _dominates(a: Values, b: Values) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def fronts(points: Sequence[Values]) -> List[int]:
    """The non-dominated front (0 = best) of each point; larger values are better."""
    n = len(points)
    if n and len(points[0]) == 1:   # one objective: dense rank by value
        distinct = sorted({p[0] for p in points}, reverse=True)
        rank = {v: i for i, v in enumerate(distinct)}
        return [rank[p[0]] for p in points]
    dominated_by = [0] * n
    dominates: List[List[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(points[i], points[j]):
                dominates[i].append(j)
                dominated_by[j] += 1
            elif _dominates(points[j], points[i]):
                dominates[j].append(i)
                dominated_by[i] += 1
    result = [0] * n
    current = [i for i in range(n) if dominated_by[i] == 0]
    level = 0
    while current:
        following = []
        for i in current:
            result[i] = level
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current, level = following, level + 1
    return result


def _crowding(points: Sequence[Values], members: List[int]) -> Dict[int, float]:
    distance = {i: 0.0 for i in members}
    if len(members) <= 2:
        return {i: math.inf for i in members}
    for m in range(len(points[members[0]])):
        ranked = sorted(members, key=lambda i: points[i][m])
        low, high = points[ranked[0]][m], points[ranked[-1]][m]
        distance[ranked[0]] = distance[ranked[-1]] = math.inf
        if high == low:
            continue
        for before, at, after in zip(ranked, ranked[1:], ranked[2:]):
            distance[at] += (points[after][m] - points[before][m]) / (high - low)
    return distance


def order(points: Sequence[Values]) -> List[int]:
    """Indices of ``points`` best first: by front, then by crowding distance (larger first)."""
    front = fronts(points)
    crowding: Dict[int, float] = {}
    for level in set(front):
        crowding.update(_crowding(points, [i for i, f in enumerate(front) if f == level]))
    return sorted(range(len(points)), key=lambda i: (front[i], -crowding[i], i))


class Bracket:
    """The rungs of one successive-halving bracket (see the module doc)."""

    def __init__(self, min_resource: float, reduction_factor: float, max_resource: Optional[float] = None,
                 early_stopping_rate: int = 0, max_rungs: int = 64):
        self.reduction_factor = reduction_factor
        self.milestones: List[float] = []
        for k in range(max_rungs):
            milestone = min_resource * reduction_factor ** (k + early_stopping_rate)
            if max_resource is not None and milestone >= max_resource:
                break
            self.milestones.append(milestone)
        # rung index -> {trial id: values}, in arrival order
        self.records: List[Dict[int, Values]] = [{} for _ in self.milestones]
        self.promoted: List[set] = [set() for _ in self.milestones]

    def rung_of(self, step: float) -> Optional[int]:
        """The highest rung whose milestone ``step`` reached, or None below the first."""
        reached = None
        for k, milestone in enumerate(self.milestones):
            if step >= milestone:
                reached = k
        return reached

    def arrive(self, trial_id: int, step: float, values: Values) -> Optional[int]:
        """Records ``values`` at the highest rung ``step`` reached, if the trial has no record there
        yet; returns that rung, or None when nothing new was reached."""
        k = self.rung_of(step)
        if k is None or trial_id in self.records[k]:
            return None
        self.records[k][trial_id] = tuple(values)
        return k

    def keeps(self, k: int, trial_id: int) -> bool:
        """Stopping rule: whether ``trial_id`` goes on past rung ``k`` (module doc)."""
        ids = list(self.records[k])
        points = [self.records[k][i] for i in ids]
        front = fronts(points)
        own = front[ids.index(trial_id)]
        better = sum(f < own for f in front)
        return better < math.ceil(len(ids) / self.reduction_factor)

    def top(self, k: int) -> List[int]:
        """The trials in the top ``floor(n / eta)`` of rung ``k``, best first."""
        ids = list(self.records[k])
        count = int(len(ids) // self.reduction_factor)
        return [ids[i] for i in order([self.records[k][i] for i in ids])[:count]]

    def promotable(self, k: int) -> List[int]:
        """Promotion rule: the top trials of rung ``k`` not promoted from it yet, best first."""
        return [i for i in self.top(k) if i not in self.promoted[k]]

    def is_last(self, k: int) -> bool:
        return k == len(self.milestones) - 1
