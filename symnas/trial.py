"""TrialRecord: what storage keeps of one trial (plain data, JSON-serialisable)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Union

import pyglove as pg

from symnas.safe_json import dna_from_json, from_json

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
REJECTED = "rejected"
FINISHED_STATUSES = (COMPLETED, FAILED, REJECTED)
# A measurement carries STOP_KEY: True when the early-stopping policy or scheduler stopped the trial there.
STOP_KEY = "stop"


@dataclasses.dataclass
class TrialRecord:
    """One trial of a study.

    ``dna`` is PyGlove's compact DNA JSON (a string), ``object`` the materialised object as
    PyGlove JSON, ``reward`` what the algorithm was fed (signed so larger is better; a list for
    several objectives), ``metrics`` everything the evaluator returned, ``measurements`` the
    intermediate reports (``{"step": .., "metrics": {..}}``) made through ``symnas.reporting``.
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


def _compact_value(dna: pg.DNA) -> Any:
    """PyGlove's compact DNA value (``DNA.to_json(compact=True)['value']``), ~10x faster."""
    try:  # the symbolic attribute access of pg.Object costs most of the time on a hot path
        attributes = dna._sym_attributes  # pylint: disable=protected-access
        value, children = dict.__getitem__(attributes, "value"), dict.__getitem__(attributes, "children")
    except (AttributeError, KeyError, TypeError):
        value, children = dna.value, dna.children
    if not children:
        return value
    nodes = [_compact_value(child) for child in children]
    if value is None:
        return nodes
    if len(nodes) == 1:
        single = nodes[0]
        return ["__tuple__", value, *single[1:]] if _is_tuple(single) else ["__tuple__", value, single]
    return ["__tuple__", value, nodes]


def _is_tuple(node: Any) -> bool:
    return isinstance(node, list) and bool(node) and node[0] == "__tuple__"


def dna_to_json(dna: pg.DNA) -> str:
    """The DNA as PyGlove's compact JSON text (without metadata), readable by ``pg.DNA.from_json``."""
    return json.dumps({"_type": _DNA_TYPE, "format": "compact", "value": _compact_value(dna)},
                      separators=(",", ":"))
