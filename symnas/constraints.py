"""Constraints on measured metrics: which trials are feasible, and by how much the others miss.

``sn.search(..., constraints=...)`` takes a mapping ``{metric: (operator, bound)}`` or a callable
on the trial's metrics. Each constraint yields a *violation*: a number that is <= 0 when the
constraint holds and grows with how far the trial misses it (Optuna's and NSGA-II's convention).
The session stores them with the trial (metrics ``feasible`` and ``constraint_violations``) and
hands them to the algorithm with the feedback (``attach``/``violations_of``): NSGA-II uses
constraint-domination, TPE Optuna's constrained TPE, evolution feasibility-first tournaments,
REINFORCE a penalised reward, random search nothing (the study filters).

Example::

    c = Constraints.parse({"latency_ms": ("<=", 5.0), "accuracy": (">=", 0.9)})
    c.violations({"latency_ms": 7.0, "accuracy": 0.95})   # (2.0, -0.05): latency misses by 2 ms
    c.feasible({"latency_ms": 4.0, "accuracy": 0.95})     # True
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["Constraints", "ConstraintMetricMissing", "FEASIBLE_KEY", "VIOLATIONS_KEY", "attach",
           "violations_of", "total_violation", "is_feasible", "metrics_feasible",
           "stored_violations"]

FEASIBLE_KEY = "feasible"
VIOLATIONS_KEY = "constraint_violations"
_USERDATA_KEY = "symnas_constraint_violations"
_OPERATORS = ("<=", "<", ">=", ">", "==")
# A strict bound met with equality still misses it, by this much (a violation must be > 0).
_STRICT_MISS = 1e-12

ConstraintsSpec = Union[None, Mapping[str, Tuple[str, float]], Callable[[Dict[str, Any]], Any]]


class ConstraintMetricMissing(ValueError):
    """A constraint names a metric the evaluator did not report: a mistake in the search's set-up."""


class Constraints:
    """Parsed constraints; ``violations(metrics)`` gives one number per constraint (<= 0: met)."""

    def __init__(self, bounds: Optional[Dict[str, Tuple[str, float]]] = None,
                 function: Optional[Callable[[Dict[str, Any]], Any]] = None):
        self.bounds = dict(bounds or {})
        self.function = function

    @classmethod
    def parse(cls, spec: ConstraintsSpec) -> Optional["Constraints"]:
        """``None``, a mapping ``{metric: (op, bound)}`` (op one of <=, <, >=, >, ==) or a callable
        on the metrics returning a bool (True: feasible), a violation, a list or a dict of them."""
        if spec is None or isinstance(spec, Constraints):
            return spec
        if callable(spec) and not isinstance(spec, Mapping):
            return cls(function=spec)
        if not isinstance(spec, Mapping):
            raise TypeError(f"constraints must be a mapping such as {{'latency_ms': ('<=', 5.0)}} or a callable "
                            f"on the metrics, got {type(spec).__name__}.")
        if not spec:
            raise ValueError("constraints is empty: give at least one {metric: (operator, bound)}.")
        bounds = {}
        for metric, rule in spec.items():
            if not isinstance(metric, str) or not metric:
                raise ValueError(f"constraint keys must be metric names, got {metric!r}.")
            if metric in (FEASIBLE_KEY, VIOLATIONS_KEY):
                raise ValueError(f"{metric!r} is the name symnas gives to the constraint outcome; "
                                 f"constrain the metric itself.")
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
                raise ValueError(f"constraint on {metric!r} must be (operator, bound) such as ('<=', 5.0), "
                                 f"got {rule!r}.")
            op, bound = rule
            if op not in _OPERATORS:
                raise ValueError(f"constraint on {metric!r}: unknown operator {op!r}; use one of "
                                 f"{', '.join(_OPERATORS)}.")
            if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not math.isfinite(bound):
                raise ValueError(f"constraint on {metric!r}: the bound must be a finite number, got {bound!r}.")
            bounds[metric] = (op, float(bound))
        return cls(bounds=bounds)

    def describe(self) -> Any:
        """A JSON-friendly description for the study's record (a callable is named, not stored)."""
        if self.function is not None:
            name = getattr(self.function, "__qualname__", type(self.function).__name__)
            return {"callable": f"{getattr(self.function, '__module__', '?')}.{name}"}
        return {metric: [op, bound] for metric, (op, bound) in self.bounds.items()}

    def violations(self, metrics: Mapping[str, Any]) -> Tuple[float, ...]:
        """One violation per constraint (<= 0 when met); raises ConstraintMetricMissing on a missing metric."""
        if self.function is not None:
            return self._call(metrics)
        out = []
        for metric, (op, bound) in self.bounds.items():
            if metric not in metrics:
                raise ConstraintMetricMissing(
                    f"Constraint {metric} {op} {bound:g}: the evaluator's result has no metric {metric!r} "
                    f"(it reported {sorted(metrics)}); report it or drop the constraint.")
            value = metrics[metric]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
                raise ConstraintMetricMissing(f"Constraint {metric} {op} {bound:g}: metric {metric!r} must be "
                                              f"a number, got {value!r}.")
            out.append(_violation(float(value), op, bound))
        return tuple(out)

    def _call(self, metrics: Mapping[str, Any]) -> Tuple[float, ...]:
        try:
            result = self.function(dict(metrics))
        except KeyError as error:
            raise ConstraintMetricMissing(
                f"The constraints function looked up metric {error.args[0]!r}, which the evaluator did not "
                f"report (it reported {sorted(metrics)}).") from error
        if isinstance(result, bool):
            return (0.0 if result else 1.0,)
        if isinstance(result, Mapping):
            result = list(result.values())
        values = result if isinstance(result, (list, tuple)) else [result]
        out = []
        for value in values:
            if isinstance(value, bool):
                out.append(0.0 if value else 1.0)
            elif isinstance(value, numbers.Real) and not math.isnan(value):
                out.append(float(value))
            else:
                raise TypeError(f"The constraints function must return a bool, a violation (<= 0: met), or a "
                                f"list/dict of them, got {result!r}.")
        if not out:
            raise TypeError("The constraints function returned no violation.")
        return tuple(out)

    def __repr__(self) -> str:
        return f"Constraints({self.describe()!r})"


def _violation(value: float, op: str, bound: float) -> float:
    if op in ("<=", "<"):
        miss = value - bound
    elif op in (">=", ">"):
        miss = bound - value
    else:
        return abs(value - bound)
    if op in ("<", ">") and miss == 0.0:
        return _STRICT_MISS
    return miss


def is_feasible(violations: Sequence[float]) -> bool:
    return all(v <= 0.0 for v in violations)


def total_violation(violations: Optional[Sequence[float]]) -> float:
    """The sum of the positive violations (0.0 for a feasible trial)."""
    return sum(v for v in violations if v > 0.0) if violations else 0.0


def attach(dna, violations: Optional[Sequence[float]]):
    """Marks ``dna`` (about to be fed back) with its trial's violations; returns it."""
    if violations is not None:
        dna.set_userdata(_USERDATA_KEY, tuple(float(v) for v in violations))
    return dna


def violations_of(dna) -> Optional[Tuple[float, ...]]:
    """The violations ``attach`` put on ``dna``; None when the search has no constraints."""
    userdata = getattr(dna, "userdata", None)
    return None if userdata is None else userdata.get(_USERDATA_KEY)


def stored_violations(metrics: Mapping[str, Any]) -> Optional[Tuple[float, ...]]:
    """The violations a constrained session stored in a trial's metrics (None if unconstrained)."""
    values = metrics.get(VIOLATIONS_KEY) if isinstance(metrics, Mapping) else None
    if not isinstance(values, list):
        return None
    return tuple(float(v) for v in values)


def metrics_feasible(metrics: Mapping[str, Any]) -> bool:
    """Whether a stored trial met its study's constraints (always True in an unconstrained study)."""
    violations = stored_violations(metrics)
    return violations is None or is_feasible(violations)
