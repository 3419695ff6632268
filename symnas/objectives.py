"""Objectives: which measured metrics a search optimises, and in which direction.

An evaluator returns a number, a tuple of numbers, a mapping of metric names to numbers,
or an object that converts to one (a dataclass, or anything with ``as_dict()``). The
objectives turn that into named metrics for storage and into the reward the algorithm
maximises (a float, or a tuple of floats for multi-objective algorithms).

Example::

    objs = parse_objectives({"accuracy": "max", "latency_ms": "min"})
    metrics, reward = measure_result({"accuracy": 0.9, "latency_ms": 2.0}, objs)
    # reward == (0.9, -2.0): every component is maximised by the algorithm
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

_DIRECTIONS = {"max": "max", "maximize": "max", "min": "min", "minimize": "min"}


class NonFiniteMetric(ValueError):
    """An objective came back NaN or infinite; the trial is recorded as failed."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """One optimised metric: its name and whether larger (``"max"``) or smaller is better."""

    name: str
    direction: str = "max"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"An objective needs a non-empty metric name, got {self.name!r}.")
        if self.direction not in _DIRECTIONS:
            raise ValueError(
                f"Objective {self.name!r}: direction must be 'max' or 'min', got {self.direction!r}.")
        object.__setattr__(self, "direction", _DIRECTIONS[self.direction])

    @property
    def sign(self) -> float:
        """+1 when larger is better, -1 otherwise: ``sign * value`` is always maximised."""
        return 1.0 if self.direction == "max" else -1.0


ObjectivesSpec = Union[None, str, Objective, Sequence[Union[str, Objective]], Mapping[str, str]]


def parse_objectives(spec: ObjectivesSpec) -> Tuple[Objective, ...]:
    """Normalises the ``objectives=`` argument of ``sn.search`` into a tuple of ``Objective``.

    ``None`` means a single maximised metric called ``reward``; a string names one maximised
    metric (``"latency_ms:min"`` gives a direction); a mapping gives ``name -> direction``.
    """
    if spec is None:
        return (Objective("reward", "max"),)
    if isinstance(spec, Objective):
        return (spec,)
    if isinstance(spec, str):
        name, _, direction = spec.partition(":")
        return (Objective(name, direction or "max"),)
    if isinstance(spec, Mapping):
        objectives = tuple(Objective(k, v) for k, v in spec.items())
    elif isinstance(spec, Sequence):
        objectives = tuple(o if isinstance(o, Objective) else parse_objectives(o)[0] for o in spec)
    else:
        raise TypeError(f"objectives must be a name, a list of names or a name->direction mapping, "
                        f"got {type(spec).__name__}.")
    if not objectives:
        raise ValueError("objectives is empty: name at least one metric to optimise.")
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise ValueError(f"objectives names a metric twice: {names}.")
    return objectives


def _as_metrics(result: Any, objectives: Tuple[Objective, ...]) -> Dict[str, Any]:
    if isinstance(result, bool):
        raise TypeError(f"The evaluator returned a bool ({result}); return a number or a dict of metrics.")
    if isinstance(result, numbers.Real):
        if len(objectives) != 1:
            raise ValueError(f"The evaluator returned one number but the search has {len(objectives)} "
                             f"objectives {[o.name for o in objectives]}: return a tuple or a dict.")
        return {objectives[0].name: float(result)}
    if isinstance(result, tuple):
        if len(result) != len(objectives):
            raise ValueError(f"The evaluator returned {len(result)} values but the search has "
                             f"{len(objectives)} objectives {[o.name for o in objectives]}.")
        return {o.name: v for o, v in zip(objectives, result)}
    if isinstance(result, Mapping):
        return dict(result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    as_dict = getattr(result, "as_dict", None) or getattr(result, "to_dict", None)
    if callable(as_dict):
        return dict(as_dict())
    raise TypeError(f"The evaluator returned {type(result).__name__}; return a number, a tuple of "
                    f"numbers, or a dict of metrics.")


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a metric value (numpy scalars become Python numbers)."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def measure_result(result: Any, objectives: Tuple[Objective, ...]
                   ) -> Tuple[Dict[str, Any], Union[float, Tuple[float, ...]]]:
    """Splits an evaluator's return value into (metrics, reward for the algorithm).

    Raises ``NonFiniteMetric`` when an objective is NaN/inf and ``ValueError`` when one is missing.
    """
    metrics = {str(k): _plain(v) for k, v in _as_metrics(result, objectives).items()}
    values = []
    for objective in objectives:
        if objective.name not in metrics:
            raise ValueError(f"The evaluator's result has no metric {objective.name!r} "
                             f"(got {sorted(metrics)}); it is an objective of this search.")
        value = metrics[objective.name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"Objective {objective.name!r} must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise NonFiniteMetric(f"Objective {objective.name!r} is {value}: the trial failed.")
        values.append(objective.sign * float(value))
    reward = values[0] if len(values) == 1 else tuple(values)
    return metrics, reward
