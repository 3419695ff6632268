"""A persistent PyGlove tuning backend, so plain ``pg.sample`` records and resumes studies too.

Importing symnas registers it under the name ``"symnas"``.

Example::

    for arch, feedback in pg.sample(space, sn.algorithms.Reinforce(seed=1), num_examples=100,
                                    name="nb201", backend="symnas", storage="runs.db"):
        feedback(evaluate(arch))
    sn.Study.load("runs.db", "nb201").trials

Killed and started again with the same ``name`` and ``storage``, the loop resumes: finished
trials are kept, the algorithm is rebuilt from them, and an interrupted trial comes back first.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import pyglove as pg

from symnas.errors import TrialRejected
from symnas.loop import propose
from symnas.session import ActiveTrial, SearchSession
from symnas.storage import DEFAULT_STORAGE
from symnas.trial import RUNNING


class _SessionFeedback(pg.tuning.Feedback):
    """The feedback of one trial, writing through a SearchSession."""

    def __init__(self, backend: "SymnasBackend", trial: ActiveTrial, metrics_to_optimize: Sequence[str]):
        super().__init__(metrics_to_optimize)
        self._backend = backend
        self._trial = trial
        self._last: Optional[Dict[str, Any]] = None
        self._metadata: Dict[str, Any] = {}

    @property
    def id(self) -> int:
        return self._trial.record.id

    @property
    def dna(self) -> pg.DNA:
        return self._trial.dna

    @property
    def checkpoint_to_warm_start_from(self) -> Optional[str]:
        return None

    @property
    def status(self) -> str:
        return "PENDING" if self._trial.record.status == RUNNING else "COMPLETED"

    def get_trial(self) -> pg.tuning.Trial:
        return SearchSession._pg_trial(self._trial.record, self._trial.dna)  # pylint: disable=protected-access

    def set_metadata(self, key: str, value: Any, per_trial: bool = True) -> None:
        self._metadata[key] = value

    def get_metadata(self, key: str, per_trial: bool = True) -> Optional[Any]:
        return self._metadata.get(key)

    def add_link(self, name: str, url: str) -> None:
        self._metadata.setdefault("links", {})[name] = url

    def _add_measurement(self, reward, metrics, step, checkpoint_path, elapse_secs) -> None:
        if self._trial.record.status != RUNNING:
            raise pg.tuning.RaceConditionError(f"Trial {self.id} is already finished.")
        values = dict(metrics or {})
        if reward is not None:
            if isinstance(reward, (tuple, list)):
                values.update(zip(self._metrics_to_optimize, reward))
            else:
                values["reward"] = reward
        self._last = values
        self._backend.session.report(self._trial, step, values)

    def done(self, metadata=None, related_links=None) -> None:
        if self._trial.record.status != RUNNING:
            return
        if self._last is None:
            raise ValueError(f"At least one measurement should be added for trial {self.id}.")
        self._backend.session.complete(self._trial, self._last)

    def skip(self, reason: Optional[str] = None) -> None:
        if self._trial.record.status == RUNNING:
            self._backend.session.reject(self._trial, TrialRejected(reason or "skipped by the caller"))

    def should_stop_early(self) -> bool:
        session = self._backend.session
        if session.early_stopping is None or not self._trial.record.measurements:
            return False
        return bool(session.early_stopping.should_stop_early(self.get_trial()))

    def end_loop(self) -> None:
        self._backend.active = False
        self._backend.session.close()


@pg.tuning.add_backend("symnas")
class SymnasBackend(pg.tuning.Backend):
    """``pg.sample(..., backend="symnas", storage="runs.db")``: trials are stored as they finish."""

    def __init__(self, name: Optional[str], group: Optional[str], dna_spec: pg.DNASpec,
                 algorithm: pg.DNAGenerator, metrics_to_optimize: Sequence[str],
                 early_stopping_policy: Optional[pg.tuning.EarlyStoppingPolicy] = None,
                 num_examples: Optional[int] = None, storage: Any = DEFAULT_STORAGE, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"The symnas backend does not take {sorted(kwargs)}; it takes storage=.")
        del group
        self.session = SearchSession(dna_spec, algorithm, storage=storage, name=name,
                                     objectives=list(metrics_to_optimize),
                                     early_stopping=early_stopping_policy)
        self.metrics_to_optimize = list(metrics_to_optimize)
        self.num_examples = num_examples
        self.active = True
        self._current: Optional[_SessionFeedback] = None

    def next(self) -> pg.tuning.Feedback:
        if not self.active:
            raise StopIteration()
        if self._current is not None and self._current.status == "PENDING":
            return self._current  # PyGlove's contract: an unfinished trial is handed out again
        trials, _ = propose(self.session, 1, 0, self.num_examples)   # the run loop's proposal step
        if not trials:
            self.session.close()
            raise StopIteration()
        self._current = _SessionFeedback(self, trials[0], self.metrics_to_optimize)
        return self._current

    @classmethod
    def poll_result(cls, name: str, **kwargs):
        raise NotImplementedError(
            f"Read a symnas study with sn.Study.load(storage, {name!r}) rather than pg.poll_result.")
