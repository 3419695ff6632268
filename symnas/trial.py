"""TrialRecord: what storage keeps of one trial (plain data, JSON-serialisable)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Union

import pyglove as pg

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
REJECTED = "rejected"
FINISHED_STATUSES = (COMPLETED, FAILED, REJECTED)


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
        """The trial's DNA, bound to ``dna_spec`` when given."""
        dna = pg.DNA.from_json(json.loads(self.dna))
        if dna_spec is not None:
            dna.use_spec(dna_spec)
        return dna

    def to_object(self) -> Any:
        """The materialised object of this trial, rebuilt from its JSON (no pickle)."""
        if self.object is None:
            raise ValueError(f"Trial {self.id} has no recorded object (status {self.status!r}).")
        return pg.from_json_str(self.object)

    def reward_for_feedback(self) -> Union[None, float, tuple]:
        if self.status != COMPLETED or self.reward is None:
            return None
        return tuple(self.reward) if isinstance(self.reward, list) else self.reward


def dna_to_json(dna: pg.DNA) -> str:
    return json.dumps(dna.to_json(compact=True), separators=(",", ":"))
