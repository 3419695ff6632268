"""TrialRecord: what storage keeps of one trial (plain data, JSON-serialisable).

Statuses: ``running``; ``completed``, ``failed`` and ``rejected`` (finished: they count towards
``num_trials``); ``interrupted`` (stopped by Ctrl-C or by ``sys.exit`` inside the objective: kept,
not evaluated to its end, not counted). Non-finite numbers are stored as the JSON strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (plain JSON has no NaN) and read back as floats.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, List, Optional, Union

import pyglove as pg

from symnas.pyglove_fastpaths import compact_value
from symnas.safe_json import dna_from_json, from_json

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
REJECTED = "rejected"
INTERRUPTED = "interrupted"
FINISHED_STATUSES = (COMPLETED, FAILED, REJECTED)
# A measurement carries STOP_KEY: True when the early-stopping policy or scheduler stopped the trial there.
STOP_KEY = "stop"


@dataclasses.dataclass
class TrialRecord:
    """One trial of a study.

    ``dna`` is PyGlove's compact DNA JSON (a string), ``object`` the materialised object as
    PyGlove JSON, ``reward`` what the algorithm was fed (signed so larger is better; a list for
    several objectives), ``metrics`` everything the evaluator returned, ``measurements`` the
    intermediate reports (``{"step": .., "metrics": {..}}``) made through ``symnas.reporting``,
    ``heartbeat`` when its process last said it was alive, ``retry_of`` the trial it evaluates again.
    """

    id: int
    dna: str
    status: str = RUNNING
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
    reward: Union[None, float, List[float]] = None
    object: Optional[str] = None
    error: Optional[str] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    wall_time_s: Optional[float] = None
    measurements: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    worker: Optional[str] = None
    heartbeat: Optional[float] = None
    retry_of: Optional[int] = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dna(self, dna_spec: Optional[pg.DNASpec] = None) -> pg.DNA:
        """The trial's DNA, rebuilt from its plain numbers and bound to ``dna_spec`` when given."""
        return dna_from_json(self.dna, dna_spec)

    def to_object(self) -> Any:
        """The materialised object of this trial, rebuilt from its JSON (no pickle, no imports)."""
        if self.object is None:
            raise ValueError(f"Trial {self.id} has no recorded object (status {self.status!r}).")
        return from_json(self.object, source=f"trial {self.id}'s object")

    def reward_for_feedback(self) -> Union[None, float, tuple]:
        if self.status != COMPLETED or self.reward is None:
            return None
        return tuple(self.reward) if isinstance(self.reward, list) else self.reward


_DNA_TYPE = pg.DNA.__serialization_key__


def dna_to_json(dna: pg.DNA) -> str:
    """The DNA as PyGlove's compact JSON text (without metadata), readable by ``pg.DNA.from_json``."""
    return json.dumps({"_type": _DNA_TYPE, "format": "compact", "value": compact_value(dna)},
                      separators=(",", ":"))


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _with_non_finite(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _with_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_non_finite(v) for v in value]
    return value


def encode_json(value: Any) -> str:
    """Valid JSON text for stored metrics, rewards and reports (non-finite floats as strings)."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:   # rare: only when a value is NaN or infinite
        return json.dumps(_finite_json(value), allow_nan=False)


def decode_json(text: Optional[str], default: Any = None) -> Any:
    """The value of ``encode_json`` text (``"NaN"``, ``"Infinity"``, ``"-Infinity"`` become floats)."""
    if not text:
        return default
    value = json.loads(text)
    return _with_non_finite(value) if "NaN" in text or "Infinity" in text else value


def error_headline(text: Optional[str], width: int = 160) -> str:
    """The line of an error text that names it (a traceback's last line), at most ``width`` characters."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no error text)"
    return line if len(line) <= width else line[:width - 3] + "..."


def most_common_error(errors: List[str]) -> Optional[tuple]:
    """(headline, count) of the most frequent error among ``errors``; None when there is none."""
    counts: Dict[str, int] = {}
    for text in errors:
        headline = error_headline(text)
        counts[headline] = counts.get(headline, 0) + 1
    if not counts:
        return None
    return max(counts.items(), key=lambda item: item[1])
