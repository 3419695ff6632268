"""A read-only Optuna storage over a symnas storage, so Optuna's tools read symnas studies live.

``OptunaStorageView(storage)`` answers Optuna's ``BaseStorage`` queries from the symnas study file
itself (nothing is copied): each symnas study is an Optuna study with one direction per objective
(objective names as Optuna metric names), and each trial a ``FrozenTrial`` whose params come from
the DNASpec (a ``oneof`` or a ``manyof`` slot is categorical over the candidates' literals, a
``floatv`` a float distribution, ``log=True`` for ``scale='log'``; inactive conditional decisions
are absent), whose values are the objectives' raw metric values, whose intermediate values are the
``report(step, ...)`` measurements of the first objective, and whose user attributes are every
metric plus the concrete object (``object``), the DNA, the status and the error.

States: ``completed`` -> COMPLETE, or PRUNED when a scheduler or early-stopping policy stopped it
(its values stay: what it reached before it stopped); ``failed`` and ``rejected`` -> FAIL (the
user attribute ``status`` tells them apart); ``running`` -> RUNNING.

Finished trials never change, so each is converted once; a query reads only the trials from the
first unfinished one on. Writes raise ``ReadOnlyStudyError``.

Example::

    import optuna
    from symnas.dashboard import OptunaStorageView
    view = OptunaStorageView("runs.db")
    study = optuna.load_study(study_name=view.get_all_studies()[0].study_name, storage=view)
    print(study.best_trial.params, study.best_trial.user_attrs["object"])
"""
from __future__ import annotations

import datetime
import json
import math
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from symnas.constraints import stored_violations
from symnas.objectives import Objective
from symnas.storage import Storage, open_storage
from symnas.trial import COMPLETED, FAILED, RUNNING, STOP_KEY, TrialRecord

__all__ = ["OptunaStorageView", "ReadOnlyStudyError"]

# An Optuna trial id holds the study id in its high bits and the trial number in the low ones.
_TRIAL_ID_STRIDE = 1 << 32
_MAX_LITERAL_CHARS = 80
_EXTRA_ATTRS = ("object", "dna", "status", "error", "wall_time_s", "worker")


class ReadOnlyStudyError(RuntimeError):
    """Something tried to write to a symnas study through its read-only Optuna view."""


class _StudyState:
    """What the view keeps of one symnas study: its Optuna form and its finished trials."""

    def __init__(self, study_id: int, name: str, info: Dict[str, Any]):
        self.study_id, self.name = study_id, name
        self.objectives = tuple(Objective(**o) for o in info.get("objectives", [{"name": "reward"}]))
        self.directions = [StudyDirection.MAXIMIZE if o.direction == "max" else StudyDirection.MINIMIZE
                           for o in self.objectives]
        self.decisions = _decisions(info.get("dna_spec"))
        self.user_attrs = {"objectives": [f"{o.name} ({o.direction})" for o in self.objectives]}
        if info.get("algorithm"):
            self.user_attrs["algorithm"] = _algorithm_name(info["algorithm"])
        self.system_attrs = {"study:metric_names": [o.name for o in self.objectives]}
        self.finished: List[FrozenTrial] = []   # trials 1..n, all finished: never read again
        self.lock = threading.Lock()

    def frozen_study(self) -> FrozenStudy:
        return FrozenStudy(study_name=self.name, direction=None, directions=self.directions,
                           user_attrs=dict(self.user_attrs), system_attrs=dict(self.system_attrs),
                           study_id=self.study_id)


class OptunaStorageView(BaseStorage):
    """Optuna's ``BaseStorage`` over a symnas storage (a SQLite path or a ``symnas.storage.Storage``),
    read-only and live: every query sees the trials recorded so far (see the module doc)."""

    def __init__(self, storage: Union[str, os.PathLike, Storage]):
        if isinstance(storage, (str, os.PathLike)) and not os.path.isfile(storage):
            raise FileNotFoundError(f"No study file at {os.fspath(storage)!r}.")
        self._storage = open_storage(storage)
        self._lock = threading.Lock()
        self._studies: Dict[int, _StudyState] = {}
        self._ids: Dict[str, int] = {}

    # -- studies ---------------------------------------------------------------------------------
    def _refresh_studies(self) -> None:
        names = self._storage.study_names()
        with self._lock:
            for name in names:
                if name not in self._ids:
                    study_id = len(self._ids) + 1   # studies only ever get added: ids stay stable
                    self._studies[study_id] = _StudyState(study_id, name, self._storage.study_info(name))
                    self._ids[name] = study_id

    def _study(self, study_id: int) -> _StudyState:
        if study_id not in self._studies:
            self._refresh_studies()
        if study_id not in self._studies:
            raise KeyError(f"No study with id {study_id}.")
        return self._studies[study_id]

    def get_all_studies(self) -> List[FrozenStudy]:
        self._refresh_studies()
        return [state.frozen_study() for state in self._studies.values()]

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name not in self._ids:
            self._refresh_studies()
        if study_name not in self._ids:
            raise KeyError(f"No study named {study_name!r}; studies here: {list(self._ids)}.")
        return self._ids[study_name]

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._study(study_id).name

    def get_study_directions(self, study_id: int) -> List[StudyDirection]:
        return list(self._study(study_id).directions)

    def get_study_user_attrs(self, study_id: int) -> Dict[str, Any]:
        return dict(self._study(study_id).user_attrs)

    def get_study_system_attrs(self, study_id: int) -> Dict[str, Any]:
        return dict(self._study(study_id).system_attrs)

    # -- trials ----------------------------------------------------------------------------------
    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Optional[Sequence[TrialState]] = None) -> List[FrozenTrial]:
        state = self._study(study_id)
        with state.lock:
            finished = state.finished
            records = self._storage.trials(state.name, since_id=len(finished))
            rest = [_frozen_trial(state, record) for record in records]
            while rest and rest[0].state.is_finished():
                finished.append(rest.pop(0))
            trials = finished + rest
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return [_copy(t) for t in trials] if deepcopy else list(trials)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        study_id, number = divmod(trial_id, _TRIAL_ID_STRIDE)
        trials = self.get_all_trials(study_id, deepcopy=False)
        if not 0 <= number < len(trials):
            raise KeyError(f"No trial with id {trial_id}.")
        return _copy(trials[number])

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        self._study(study_id)
        return study_id * _TRIAL_ID_STRIDE + trial_number

    # -- writes: refused -------------------------------------------------------------------------
    def _read_only(self, *args, **kwargs):
        raise ReadOnlyStudyError("A symnas study seen through OptunaStorageView is read-only: run "
                                 "searches with sn.search / the symnas command line.")

    create_new_study = delete_study = set_study_user_attr = set_study_system_attr = _read_only
    create_new_trial = set_trial_param = set_trial_state_values = _read_only
    set_trial_intermediate_value = set_trial_user_attr = set_trial_system_attr = _read_only


# -- conversion -------------------------------------------------------------------------------------
def _decisions(dna_spec_json: Optional[str]):
    """(name, ChoiceSlot | FloatDecision, distribution) per decision of the study's DNASpec, and the
    compiled space to decode DNA with; (None, []) when the space cannot be compiled (custom decision
    points): trials then show their objects and metrics without params."""
    if not dna_spec_json:
        return None, []
    from symnas.algorithms._decisions import ChoiceSlot, DecisionSpace  # pylint: disable=import-outside-toplevel
    from symnas.safe_json import from_json_str  # pylint: disable=import-outside-toplevel
    try:
        space = DecisionSpace(from_json_str(dna_spec_json))
    except (TypeError, ValueError):
        return None, []
    entries = []
    for decision in space.decisions:
        if isinstance(decision, ChoiceSlot):
            choices = _choice_labels(decision.literals)
            entries.append((decision.name, choices, CategoricalDistribution(choices)))
        else:
            low, high = decision.low, decision.high
            entries.append((decision.name, None, FloatDistribution(low, high, log=decision.scale == "log")))
    return space, entries


def _choice_labels(literals: Sequence[Any]) -> List[Any]:
    """Optuna categorical choices for a choice's candidates: numbers stay numbers, other literals
    become short distinct strings (``'pool'`` -> ``pool``)."""
    labels: List[Any] = []
    for literal in literals:
        if isinstance(literal, (bool, int, float)) and not (isinstance(literal, float) and math.isnan(literal)):
            labels.append(literal)
            continue
        text = _hide_search_points(str(literal))
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        if len(text) > _MAX_LITERAL_CHARS:
            text = text[:_MAX_LITERAL_CHARS - 1] + "…"
        labels.append(text)
    if len(set(map(repr, labels))) != len(labels):   # e.g. truncated alike: number them
        labels = [f"{i}: {label}" for i, label in enumerate(labels)]
    return labels


_SEARCH_POINT_NAMES = ("OneOf(", "ManyOf(", "Float(", "CustomDecisionPoint(")


def _hide_search_points(text: str) -> str:
    """A candidate's literal with its own search points as "…": ``SGD(lr=Float(min_value=...))``
    -> ``SGD(lr=…)`` (those choices are params of their own)."""
    out, i = [], 0
    while i < len(text):
        starts = [(text.find(name, i), name) for name in _SEARCH_POINT_NAMES]
        starts = [(at, name) for at, name in starts if at >= 0 and (at == 0 or not text[at - 1].isalnum())]
        if not starts:
            out.append(text[i:])
            break
        at, name = min(starts)
        out.append(text[i:at] + "…")
        depth, j = 0, at + len(name) - 1
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        i = j
    return "".join(out)


def _algorithm_name(algorithm_json: str) -> str:
    try:
        return json.loads(algorithm_json)["_type"].rpartition(".")[2]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unknown"


def _time(seconds: Optional[float]) -> Optional[datetime.datetime]:
    return None if seconds is None else datetime.datetime.fromtimestamp(seconds)


def _params(state: _StudyState, record: TrialRecord) -> Tuple[Dict[str, Any], Dict[str, BaseDistribution]]:
    space, entries = state.decisions
    if space is None:
        return {}, {}
    from symnas.algorithms._decisions import dna_from_compact  # pylint: disable=import-outside-toplevel
    try:
        values = space.decode(dna_from_compact(json.loads(record.dna)["value"]))
    except (ValueError, TypeError, KeyError):
        return {}, {}
    params, distributions = {}, {}
    for (name, choices, distribution), value in zip(entries, values):
        if value is None:
            continue   # an inactive conditional decision
        if choices is not None:
            params[name] = choices[value]
        else:
            params[name] = min(max(float(value), distribution.low), distribution.high)
        distributions[name] = distribution
    return params, distributions


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _object_text(record: TrialRecord) -> Optional[str]:
    """The trial's object in PyGlove's compact Python notation (``Trainer(model=..., epochs=3)``),
    written from its stored JSON: no class is imported or built, so it costs microseconds and
    works for classes this process never imported."""
    if record.object is None:
        return None
    try:
        return _json_text(json.loads(record.object))
    except (ValueError, TypeError, RecursionError):
        return record.object


def _json_text(node: Any) -> str:
    if isinstance(node, dict):
        type_name = node.get("_type")
        if type_name is None:
            return "{" + ", ".join(f"{key!r}: {_json_text(value)}" for key, value in node.items()) + "}"
        if type_name in ("type", "function", "method"):
            return str(node.get("name", type_name))
        fields = ", ".join(f"{key}={_json_text(value)}" for key, value in node.items() if key != "_type")
        return f"{type_name.rpartition('.')[2]}({fields})"
    if isinstance(node, list):
        if node and node[0] == "__tuple__":
            items = [_json_text(v) for v in node[1:]]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(_json_text(v) for v in node) + "]"
    return repr(node)


def _frozen_trial(state: _StudyState, record: TrialRecord) -> FrozenTrial:
    first = state.objectives[0].name
    intermediate = {}
    stopped = False
    for measurement in record.measurements:
        value = _number(measurement.get("metrics", {}).get(first))
        if value is not None:
            intermediate[int(measurement["step"])] = value
        stopped = stopped or bool(measurement.get(STOP_KEY))
    values = None
    if record.status == COMPLETED:
        raw = [_number(record.metrics.get(o.name)) for o in state.objectives]
        values = raw if all(v is not None for v in raw) else None
    if record.status == COMPLETED and values is not None:
        trial_state = TrialState.PRUNED if stopped else TrialState.COMPLETE
    elif record.status == RUNNING:
        trial_state = TrialState.RUNNING
    else:
        trial_state = TrialState.FAIL
    user_attrs: Dict[str, Any] = {}
    for key, value in record.metrics.items():
        user_attrs[f"metric:{key}" if key in _EXTRA_ATTRS else key] = value
    user_attrs.update(status=record.status, dna=_dna_value(record.dna), worker=record.worker)
    if record.wall_time_s is not None:
        user_attrs["wall_time_s"] = round(record.wall_time_s, 3)
    if record.error:
        user_attrs["error"] = record.error.strip().splitlines()[-1][:500] if record.status == FAILED \
            else record.error[:500]
    text = _object_text(record)
    if text is not None:
        user_attrs["object"] = text
    params, distributions = _params(state, record)
    started = record.started_at if record.started_at is not None else record.finished_at
    finished = record.finished_at if trial_state.is_finished() else None
    if trial_state.is_finished() and finished is None:
        finished = started
    return FrozenTrial(
        number=record.id - 1, state=trial_state, value=None, values=values,
        datetime_start=_time(started) or datetime.datetime.fromtimestamp(0),
        datetime_complete=_time(finished), params=params, distributions=distributions,
        user_attrs=user_attrs, system_attrs=_constraint_attrs(record), intermediate_values=intermediate,
        trial_id=state.study_id * _TRIAL_ID_STRIDE + record.id - 1)


def _constraint_attrs(record: TrialRecord) -> Dict[str, float]:
    """A constrained study's violations as Optuna constraints: the dashboard marks infeasible trials."""
    violations = stored_violations(record.metrics) if record.status == COMPLETED else None
    return {f"constraints:{i}": v for i, v in enumerate(violations or ())}


def _dna_value(dna_json: str) -> str:
    try:
        return json.dumps(json.loads(dna_json)["value"], separators=(",", ":"))
    except (ValueError, KeyError, TypeError):
        return dna_json


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy the caller may change (params and attributes are plain data; the cache stays intact)."""
    copied = FrozenTrial(
        number=trial.number, state=trial.state, value=None,
        values=list(trial.values) if trial.values is not None else None,
        datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
        params=dict(trial.params), distributions=dict(trial.distributions),
        user_attrs=dict(trial.user_attrs), system_attrs=dict(trial.system_attrs),
        intermediate_values=dict(trial.intermediate_values), trial_id=trial._trial_id)  # pylint: disable=protected-access
    return copied
