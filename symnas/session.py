"""SearchSession: the state of one search in one process, shared by ``sn.search`` and ``pg.sample``.

It ties the pieces of the data flow together: the algorithm proposes a DNA, the session
records a trial, materialises the concrete object, and when the evaluation ends it turns the
result into metrics and a reward, feeds the algorithm, and stores the finished trial. On
start it reads the study's history and rebuilds the algorithm's state with
``DNAGenerator.recover``; trials left ``running`` by a killed process of this machine are
evaluated again with the same DNA, so no finished trial is lost or repeated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import traceback
import uuid
from typing import Any, Dict, List, Optional, Tuple, Union

import pyglove as pg

import symnas
from symnas import objectives as objectives_lib
from symnas.errors import TrialRejected
from symnas.materialize import Materializer
from symnas.storage import Storage, open_storage
from symnas.trial import COMPLETED, FAILED, REJECTED, RUNNING, STOP_KEY, TrialRecord, dna_to_json


@dataclasses.dataclass
class ActiveTrial:
    """A trial being evaluated: its record, DNA and (when a space is known) concrete object."""

    record: TrialRecord
    dna: pg.DNA
    value: Any = None
    started: float = 0.0


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_alive(worker: Optional[str]) -> bool:
    """Whether the process that owns a running trial may still be working on it."""
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    if host != socket.gethostname():
        return True  # another machine: we cannot tell, so we leave its trial alone
    try:
        pid = int(rest.partition(":")[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_study_name(space_json: str, algorithm: pg.DNAGenerator, objectives) -> str:
    """A name that is the same for the same call, so running it again resumes the study."""
    digest = hashlib.sha1()
    digest.update(space_json.encode())
    digest.update(pg.to_json_str(algorithm).encode())
    digest.update(repr(objectives).encode())
    return f"study-{digest.hexdigest()[:12]}"


class SearchSession:
    """One process's view of a study: proposes, records and completes trials.

    Example::

        session = SearchSession(space, sn.algorithms.Random(seed=0), storage=None)
        trial = session.next_trial()
        session.complete(trial, 0.5)
    """

    def __init__(self, space: Any, algorithm: pg.DNAGenerator,
                 storage: Union[None, str, os.PathLike, Storage] = None, name: Optional[str] = None,
                 objectives: objectives_lib.ObjectivesSpec = None,
                 early_stopping: Optional[pg.tuning.EarlyStoppingPolicy] = None,
                 record_objects: bool = True, extra_info: Optional[Dict[str, Any]] = None):
        if not isinstance(algorithm, pg.DNAGenerator):
            raise TypeError(f"algorithm must be a pg.DNAGenerator (e.g. sn.algorithms.Random()), "
                            f"got {type(algorithm).__name__}.")
        self.objectives = objectives_lib.parse_objectives(objectives)
        if len(self.objectives) > 1 and not algorithm.multi_objective:
            raise ValueError(
                f"The search has {len(self.objectives)} objectives {[o.name for o in self.objectives]} but "
                f"{type(algorithm).__name__} optimises one: use a multi-objective algorithm such as "
                f"sn.algorithms.NSGA2, or one objective.")
        if isinstance(space, pg.DNASpec):
            self.materializer = None
            self.dna_spec = space
        else:
            self.materializer = Materializer(space)
            self.dna_spec = self.materializer.dna_spec
        space_json = pg.to_json_str(space, save_ref_value=True)   # a pg.Ref in the space: its value
        self.algorithm = algorithm
        self.early_stopping = early_stopping
        bind_search = getattr(early_stopping, "bind_search", None)   # sn.schedulers: objectives, no pausing
        if callable(bind_search):
            bind_search(self.objectives, can_pause=False)
        self.record_objects = record_objects and self.materializer is not None
        self.storage = open_storage(storage)
        self.name = name or default_study_name(space_json, algorithm, self.objectives)
        compat = hashlib.sha1((pg.to_json_str(self.dna_spec) + repr(self.objectives)).encode()).hexdigest()
        self.info = self.storage.open_study(self.name, {
            "compat": compat,
            "space": space_json,
            "dna_spec": pg.to_json_str(self.dna_spec),
            "algorithm": pg.to_json_str(algorithm),
            "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "symnas_version": symnas.__version__,
            **(extra_info or {}),  # e.g. where the command line finds the evaluator again
        })
        self.worker = _worker_id()
        self._pending: List[TrialRecord] = []
        self._seen_id = 0
        self.num_finished = 0
        self.best_reward: Optional[float] = None
        self._recover()

    # -- history -------------------------------------------------------------------------------
    def _recover(self) -> None:
        if self.algorithm.dna_spec is None:
            self.algorithm.setup(self.dna_spec)
        elif pg.ne(self.algorithm.dna_spec, self.dna_spec):
            raise ValueError(f"{type(self.algorithm).__name__} was set up with another search space; "
                             f"use a new algorithm object for this search.")
        if self.early_stopping is not None and self.early_stopping.dna_spec is None:
            self.early_stopping.setup(self.dna_spec)
        records = self.storage.trials(self.name)
        history: List[Tuple[pg.DNA, Any]] = []
        pg_trials = []
        for record in records:
            dna = record.to_dna(self.dna_spec)
            history.append((dna, record.reward_for_feedback()))
            if record.status == RUNNING and not _process_alive(record.worker):
                self._pending.append(record)
            self._count_finished(record)
            if self.early_stopping is not None:
                pg_trials.append(self._pg_trial(record, dna))
        if history:
            self.algorithm.recover(history)
        if pg_trials:
            self.early_stopping.recover(pg_trials)
        self._seen_id = records[-1].id if records else 0

    def _count_finished(self, record: TrialRecord) -> None:
        if record.finished:
            self.num_finished += 1
        reward = record.reward_for_feedback()
        if isinstance(reward, float) and (self.best_reward is None or reward > self.best_reward):
            self.best_reward = reward

    @staticmethod
    def _pg_trial(record: TrialRecord, dna: pg.DNA) -> pg.tuning.Trial:
        """The trial as PyGlove's early-stopping policies see it (reward = the ``reward`` metric if any)."""
        measurements = [pg.tuning.Measurement(step=m["step"], reward=m["metrics"].get("reward"),
                                              metrics=m["metrics"], elapse_secs=m.get("elapsed_s", 0.0))
                        for m in record.measurements]
        return pg.tuning.Trial(id=record.id, dna=dna, measurements=measurements,
                               created_time=int(record.started_at or 0),
                               status="COMPLETED" if record.finished else "PENDING")

    def sync(self) -> int:
        """Feeds the algorithm trials finished by other processes on the same study; returns how many."""
        fed = 0
        for record in self.storage.trials(self.name, since_id=self._seen_id):
            if record.worker == self.worker:
                self._seen_id = record.id  # fed by complete(); skip it on the next sync too
                continue
            if not record.finished:
                break
            self._seen_id = record.id
            reward = record.reward_for_feedback()
            if reward is not None:
                self.algorithm.feedback(record.to_dna(self.dna_spec), reward)
            self._count_finished(record)
            fed += 1
        return fed

    # -- trials --------------------------------------------------------------------------------
    def next_trial(self) -> ActiveTrial:
        """The next trial to evaluate: an interrupted one first, else a new proposal.

        Raises StopIteration when the algorithm has nothing more to propose.
        """
        now = time.time()
        if self._pending:
            record = self._pending.pop(0)
            self.storage.restart_trial(self.name, record.id, now, self.worker)
            record.status, record.started_at, record.worker, record.measurements = RUNNING, now, self.worker, []
            dna = record.to_dna(self.dna_spec)
        else:
            dna = self.algorithm.propose()
            dna_json = dna_to_json(dna)
            trial_id = self.storage.create_trial(self.name, dna_json, now, self.worker)
            record = TrialRecord(id=trial_id, dna=dna_json, started_at=now, worker=self.worker)
        trial = ActiveTrial(record=record, dna=dna, started=time.perf_counter())
        if self.materializer is not None:
            try:
                trial.value = self.materializer.materialize(dna)
            except Exception as error:  # pylint: disable=broad-except
                self.fail(trial, f"The DNA could not be materialised: {error!r}")
                raise _MaterializeFailed(trial) from error
            if self.record_objects:
                trial.record.object = pg.to_json_str(trial.value, save_ref_value=True)
        return trial

    def report(self, trial: ActiveTrial, step: int, metrics: Dict[str, Any]) -> bool:
        """Stores an intermediate measurement; True if the early-stopping policy stops the trial."""
        measurement = {"step": step, "metrics": {k: objectives_lib._plain(v) for k, v in metrics.items()},
                       "elapsed_s": time.perf_counter() - trial.started}
        trial.record.measurements.append(measurement)
        stop = False
        if hasattr(self.early_stopping, "stops_at"):   # sn.schedulers: no pg.tuning.Trial to build
            stop = self.early_stopping.stops_at(trial.record.id, step, measurement["metrics"])
        elif self.early_stopping is not None:
            stop = bool(self.early_stopping.should_stop_early(self._pg_trial(trial.record, trial.dna)))
        if stop:
            measurement[STOP_KEY] = True   # so the trial reads as pruned (e.g. in the dashboard)
        self.storage.add_measurement(self.name, trial.record.id, measurement)
        return stop

    def complete(self, trial: ActiveTrial, result: Any) -> TrialRecord:
        """Records the evaluator's result; a bad result (NaN, missing objective) fails the trial."""
        try:
            metrics, reward = objectives_lib.measure_result(result, self.objectives)
        except (ValueError, TypeError) as error:
            return self.fail(trial, f"{type(error).__name__}: {error}")
        record = trial.record
        record.metrics, record.status = metrics, COMPLETED
        record.reward = list(reward) if isinstance(reward, tuple) else reward
        self.algorithm.feedback(trial.dna, reward)
        if isinstance(reward, float) and (self.best_reward is None or reward > self.best_reward):
            self.best_reward = reward
        return self._finish(trial)

    def fail(self, trial: ActiveTrial, error: str) -> TrialRecord:
        trial.record.status, trial.record.error = FAILED, error
        return self._finish(trial)

    def reject(self, trial: ActiveTrial, rejection: TrialRejected) -> TrialRecord:
        record = trial.record
        record.status, record.error = REJECTED, str(rejection)
        record.metrics = {k: objectives_lib._plain(v) for k, v in rejection.metrics.items()}
        return self._finish(trial)

    def finish_with_exception(self, trial: ActiveTrial, error: BaseException) -> TrialRecord:
        """Records a trial whose evaluator raised: rejected for TrialRejected, failed otherwise."""
        if isinstance(error, TrialRejected):
            return self.reject(trial, error)
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return self.fail(trial, text[-4000:])

    def _finish(self, trial: ActiveTrial) -> TrialRecord:
        record = trial.record
        record.finished_at = time.time()
        record.wall_time_s = time.perf_counter() - trial.started
        self.storage.finish_trial(self.name, record)
        self.num_finished += 1
        return record


class _MaterializeFailed(Exception):
    """The proposed DNA could not be turned into an object; the trial is already recorded as failed."""

    def __init__(self, trial: ActiveTrial):
        super().__init__(trial.record.error)
        self.trial = trial
