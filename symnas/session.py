"""SearchSession: the state of one search in one process, shared by ``sn.search`` and ``pg.sample``.

It ties the pieces of the data flow together: the algorithm proposes a DNA, the session
records a trial, materialises the concrete object, and when the evaluation ends it turns the
result into metrics and a reward, feeds the algorithm, and stores the finished trial.

On start it reads the study's history:

- a trial left ``running`` by a process that is gone (same machine: its pid no longer exists;
  any machine: no heartbeat for ``stale_after`` seconds) is recorded as failed with that reason,
  then the search goes on; it is evaluated again only with ``retry_failed=N``;
- the algorithm's state comes from its last checkpoint (JSON, for algorithms with
  ``state_dict``/``load_state_dict``) plus the trials after it, else from replaying the history
  (``DNAGenerator.recover``).

While trials run, a heartbeat thread records every ``heartbeat_interval`` seconds that this
process is alive, and the algorithm's state is checkpointed at most every few seconds.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
import types
import uuid
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

import pyglove as pg

import symnas
from symnas import constraints as constraints_lib
from symnas import objectives as objectives_lib
from symnas.errors import TrialRejected
from symnas.materialize import Materializer
from symnas.pyglove_fastpaths import object_json
from symnas.safe_json import dna_from_json
from symnas.storage import MemoryStorage, Storage, TrialSummary, open_storage
from symnas.trial import (COMPLETED, FAILED, FINISHED_STATUSES, INTERRUPTED, PAUSE_KEY, PAUSED, REJECTED, RUNNING,
                          STOP_KEY, TrialRecord, dna_to_json)

HEARTBEAT_INTERVAL_S = 10.0
STALE_AFTER_S = 60.0
CHECKPOINT_INTERVAL_S = 5.0


@dataclasses.dataclass
class ActiveTrial:
    """A trial being evaluated: its record, DNA and (when a space is known) concrete object."""

    record: TrialRecord
    dna: pg.DNA
    value: Any = None
    started: float = 0.0
    # promotion-based schedulers: (the trial's checkpoint folder, the step it resumes after or None)
    checkpoint: Optional[Tuple[str, Optional[int]]] = None


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_gone(worker: Optional[str]) -> Optional[int]:
    """The pid of ``worker`` when it ran on this machine and no longer exists, else None."""
    if not worker:
        return None
    host, _, rest = worker.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(rest.partition(":")[0])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except PermissionError:
        return None
    return None


def objective_fingerprint(evaluate: Optional[Callable[[Any], Any]]) -> Optional[str]:
    """A short hash of the evaluator's code (its byte code and constants), so editing it names a new
    study; ``None`` when the evaluator has no code to read (the object's own ``evaluate()``)."""
    if evaluate is None:
        return None
    given = getattr(evaluate, "symnas_fingerprint", None)
    if isinstance(given, str):
        return given
    function = getattr(evaluate, "__func__", evaluate)
    code = getattr(function, "__code__", None)
    if code is None:
        code = getattr(getattr(type(evaluate), "__call__", None), "__code__", None)
    if code is None:
        return None
    return hashlib.sha1(_code_bytes(code)).hexdigest()[:12]


def _code_bytes(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        parts.append(_code_bytes(const) if isinstance(const, types.CodeType) else _const_text(const).encode())
    return b"\x00".join(parts)


def _const_text(const: Any) -> str:
    if isinstance(const, frozenset):   # its repr's order depends on the string hash seed
        return "frozenset(" + ",".join(sorted(_const_text(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(c) for c in const) + ")"
    return repr(const)


def default_study_name(space_json: str, algorithm: pg.DNAGenerator, objectives,
                       objective: Optional[str] = None) -> str:
    """A name that is the same for the same call, so running it again resumes the study; a changed
    space, algorithm, objectives or evaluator code gives another name."""
    digest = hashlib.sha1()
    digest.update(space_json.encode())
    digest.update(pg.to_json_str(algorithm).encode())
    digest.update(repr(objectives).encode())
    if objective:
        digest.update(objective.encode())
    return f"study-{digest.hexdigest()[:12]}"


def check_dna_spec(dna_spec: pg.DNASpec) -> None:
    """Raises ValueError naming a decision point no algorithm can sample (infinite or empty range)."""
    for point in dna_spec.decision_points:
        if isinstance(point, pg.geno.Float):
            low, high = point.min_value, point.max_value
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(f"floatv {str(point.id) or point.name!r}: bounds must be finite numbers, got "
                                 f"[{low}, {high}].")
            if not low < high:
                raise ValueError(f"floatv {str(point.id) or point.name!r}: min_value ({low}) must be smaller "
                                 f"than max_value ({high}).")
        elif isinstance(point, pg.geno.Choices) and not point.candidates:
            raise ValueError(f"oneof/manyof {str(point.id) or point.name!r} has no candidates.")


def _ranges(ids: Iterable[int]) -> List[List[int]]:
    """Sorted ids as [first, last] runs (a checkpoint of 20,000 trials stays small)."""
    runs: List[List[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def _from_ranges(runs: Iterable[Iterable[int]]) -> Set[int]:
    ids: Set[int] = set()
    for first, last in runs:
        ids.update(range(int(first), int(last) + 1))
    return ids


class _Heartbeat(threading.Thread):
    """Records every ``interval`` seconds that this process is alive and still runs its trials."""

    def __init__(self, session: "SearchSession", interval: float):
        super().__init__(name=f"symnas-heartbeat-{session.name}", daemon=True)
        self._session, self._interval = session, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                self._session.beat()
            except Exception:  # pylint: disable=broad-except
                pass   # a busy file this time; the next beat tries again (staleness allows several misses)

    def stop(self) -> None:
        self._stop_event.set()


class SearchSession:
    """One process's view of a study: proposes, records and completes trials.

    Example::

        session = SearchSession(space, sn.algorithms.Random(seed=0), storage=None)
        trial = session.next_trial()
        session.complete(trial, 0.5)
        session.close()
    """

    def __init__(self, space: Any, algorithm: pg.DNAGenerator,
                 storage: Union[None, str, os.PathLike, Storage] = None, name: Optional[str] = None,
                 objectives: objectives_lib.ObjectivesSpec = None,
                 early_stopping: Optional[pg.tuning.EarlyStoppingPolicy] = None,
                 record_objects: bool = True, extra_info: Optional[Dict[str, Any]] = None,
                 retry_failed: int = 0, objective: Optional[str] = None,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL_S, stale_after: float = STALE_AFTER_S,
                 constraints: constraints_lib.ConstraintsSpec = None, can_pause: bool = False,
                 checkpoint_root: Union[None, str, os.PathLike] = None, keep_checkpoints: bool = False):
        if not isinstance(algorithm, pg.DNAGenerator):
            raise TypeError(f"algorithm must be a pg.DNAGenerator (e.g. sn.algorithms.Random()), "
                            f"got {type(algorithm).__name__}.")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise TypeError(f"name must be a non-empty string or None, got {name!r}.")
        if isinstance(retry_failed, bool) or not isinstance(retry_failed, int) or retry_failed < 0:
            raise ValueError(f"retry_failed must be a non-negative integer, got {retry_failed!r}.")
        self.objectives = objectives_lib.parse_objectives(objectives)
        self.constraints = constraints_lib.Constraints.parse(constraints)
        if len(self.objectives) > 1 and not algorithm.multi_objective:
            raise ValueError(
                f"The search has {len(self.objectives)} objectives {[o.name for o in self.objectives]} but "
                f"{type(algorithm).__name__} optimises one: use a multi-objective algorithm such as "
                f"sn.algorithms.NSGA2, or one objective.")
        if isinstance(space, pg.DNASpec):
            self.materializer = None
            self.dna_spec = space
        elif isinstance(space, pg.Symbolic):
            self.materializer = Materializer(space)
            self.dna_spec = self.materializer.dna_spec
        else:
            hint = " (wrap it: pg.Dict({...}))" if isinstance(space, dict) else \
                " (wrap it: pg.List([...]))" if isinstance(space, list) else ""
            raise TypeError(f"The search space must be a PyGlove symbolic value (pg.Dict, pg.List, a pg.Object "
                            f"or pg.oneof/floatv), got {type(space).__name__}{hint}.")
        check_dna_spec(self.dna_spec)
        space_json = pg.to_json_str(space, save_ref_value=True)   # a pg.Ref in the space: its value
        algorithm_json = pg.to_json_str(algorithm)
        self.algorithm = algorithm
        self.early_stopping = early_stopping
        bind_search = getattr(early_stopping, "bind_search", None)   # sn.schedulers: objectives, pausing
        if callable(bind_search):
            bind_search(self.objectives, can_pause=can_pause)
        # promotion-based ASHA/Hyperband: trials pause at rungs and resume from their checkpoint folders
        self.pausing = can_pause and getattr(early_stopping, "mode", None) == "promote"
        self.keep_checkpoints = bool(keep_checkpoints)
        self.record_objects = record_objects and self.materializer is not None
        self.retry_failed = retry_failed
        self.heartbeat_interval, self.stale_after = float(heartbeat_interval), float(stale_after)
        self.storage = open_storage(storage)
        named_by = self.objectives if self.constraints is None else (self.objectives, self.constraints.describe())
        self.name = name or default_study_name(space_json, algorithm, named_by, objective)
        compat = hashlib.sha1((pg.to_json_str(self.dna_spec) + repr(self.objectives)).encode()).hexdigest()
        self.info = self.storage.open_study(self.name, {
            "compat": compat,
            "space": space_json,
            "dna_spec": pg.to_json_str(self.dna_spec),
            "algorithm": algorithm_json,
            "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "objective": objective,
            "symnas_version": symnas.__version__,
            **({"constraints": self.constraints.describe()} if self.constraints is not None else {}),
            **(extra_info or {}),  # e.g. where the command line finds the evaluator again
        })
        self._checkpoint_key = hashlib.sha1(algorithm_json.encode()).hexdigest()[:16]
        self.worker = _worker_id()
        self._lock = threading.Lock()
        self._in_flight: Dict[int, ActiveTrial] = {}
        self._queue: collections.deque = collections.deque()   # (dna json, retry_of): evaluated before proposals
        self._attempts: Dict[int, int] = collections.Counter()        # root id -> trials of it
        self._known: Set[int] = set()   # trials whose proposal the algorithm's state accounts for
        self._fed: Set[int] = set()     # trials whose reward it was fed
        self._violations: Dict[int, Optional[Tuple[float, ...]]] = {}   # trial id -> constraint violations
        self._seen_id = 0
        self._heartbeat: Optional[_Heartbeat] = None
        self._last_checkpoint = time.monotonic()
        self.num_finished = 0
        self.num_failed = 0
        self.failures_this_run: List[str] = []
        self.best_reward: Optional[float] = None
        self.resumed = False
        self._paused: Set[int] = set()           # trials stored as paused
        self._resume_first: List[int] = []       # paused after their driver died mid-trial: resumed first
        self._warned_empty = False
        self._temporary_root: Optional[str] = None
        self.checkpoint_root: Optional[str] = None
        if self.pausing:
            self.checkpoint_root = self._checkpoint_root(checkpoint_root)
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
        summaries = self.storage.trial_summaries(self.name)
        self.resumed = bool(summaries)
        if self.constraints is not None and summaries:   # one read of the metrics, not one per trial
            self._violations = {r.id: constraints_lib.stored_violations(r.metrics)
                                for r in self.storage.trials(self.name) if r.status == COMPLETED}
        if not self.storage.read_only:
            summaries = self._fail_stale(summaries)
        restored = self._restore_checkpoint()
        history: List[Tuple[pg.DNA, Any]] = []
        later: List[Tuple[int, pg.DNA, Any]] = []   # known to the state (or retries): feedback only
        for summary in summaries:
            reward = _reward(summary)
            self._count(summary, reward)
            root = summary.retry_of or summary.id
            self._attempts[root] += 1
            if summary.status == RUNNING:
                continue   # another live process's trial: sync() feeds it when it finishes
            if restored and summary.id in self._known:
                if reward is not None and summary.id not in self._fed:
                    later.append((summary.id, self._dna(summary), reward))
                continue
            if summary.retry_of is not None:
                self._known.add(summary.id)
                if reward is not None:
                    later.append((summary.id, self._dna(summary), reward))
                continue
            history.append((self._dna(summary), reward))
            self._known.add(summary.id)
            if reward is not None:
                self._fed.add(summary.id)
        if history:
            self.algorithm.recover(history)
        for trial_id, dna, reward in later:
            self.algorithm.feedback(dna, reward)
            self._fed.add(trial_id)
        if self.early_stopping is not None and summaries:
            self.early_stopping.recover([self._pg_trial(r, self._dna(r)) for r in self.storage.trials(self.name)])
        self._paused = {s.id for s in summaries if s.status == PAUSED}
        if self.pausing:   # paused at a rung: the scheduler promotes them; paused by a death: resumed first
            self.early_stopping.restore_paused(sorted(self._paused - set(self._resume_first)))
        running = [s.id for s in summaries if s.status == RUNNING]
        self._seen_id = running[0] - 1 if running else (summaries[-1].id if summaries else 0)
        if self.retry_failed:
            for summary in _latest_attempts(summaries):
                self._maybe_retry(summary.retry_of or summary.id, summary.status, summary.dna)

    def _dna(self, summary) -> pg.DNA:
        """The trial's DNA, carrying its constraint violations for the algorithm (constrained searches)."""
        return constraints_lib.attach(dna_from_json(summary.dna, self.dna_spec), self._violations_of(summary))

    def _violations_of(self, summary) -> Optional[Tuple[float, ...]]:
        if self.constraints is None or summary.status != COMPLETED:
            return None
        if summary.id not in self._violations:   # summaries carry no metrics: read the trial once
            self._violations[summary.id] = constraints_lib.stored_violations(
                self.storage.trial(self.name, summary.id).metrics)
        return self._violations[summary.id]

    def _count(self, summary, reward) -> None:
        if summary.status in FINISHED_STATUSES:
            self.num_finished += 1
        if summary.status == FAILED:
            self.num_failed += 1
        if isinstance(reward, float) and (self.best_reward is None or reward > self.best_reward) and \
                constraints_lib.is_feasible(self._violations_of(summary) or ()):
            self.best_reward = reward

    def _fail_stale(self, summaries: List[TrialSummary]) -> List[TrialSummary]:
        """Records as failed the running trials whose process is gone; returns the updated summaries."""
        now = time.time()
        updated = []
        for summary in summaries:
            reason = self._why_stale(summary, now) if summary.status == RUNNING else None
            if reason is not None and self.pausing and self._has_saved_state(summary.id) and \
                    self._pause_stale(summary):
                summary = summary._replace(status=PAUSED)   # it resumes from its checkpoint, not from scratch
                self._resume_first.append(summary.id)
            elif reason is not None and self.storage.fail_stale(self.name, summary.id, summary.heartbeat, reason, now):
                summary = summary._replace(status=FAILED)
            updated.append(summary)
        return updated

    def _pause_stale(self, summary: TrialSummary) -> bool:
        """Stores a running trial whose process died as paused (promote mode, its folder holds state)."""
        record = self.storage.trial(self.name, summary.id)
        if record.status != RUNNING or record.heartbeat != summary.heartbeat:
            return False   # another process took it meanwhile
        record.status, record.finished_at = PAUSED, time.time()
        self.storage.finish_trial(self.name, record)
        return True

    def _why_stale(self, summary: TrialSummary, now: float) -> Optional[str]:
        host, _, rest = (summary.worker or "?:?").partition(":")
        pid = rest.partition(":")[0]
        last = summary.heartbeat if summary.heartbeat is not None else summary.started_at
        since = f"; its last heartbeat was {now - last:.0f} s before this start" if last else ""
        retry = " Pass retry_failed=1 (--retry-failed 1) to evaluate it again."
        if _pid_gone(summary.worker) is not None:
            return (f"The process running this trial (pid {pid} on {host}) died before the trial finished "
                    f"(killed, crashed, or it called os._exit){since}; the search went on without it.{retry}")
        if summary.heartbeat is not None and now - summary.heartbeat > self.stale_after:
            return (f"No heartbeat for {now - summary.heartbeat:.0f} s from the process running this trial "
                    f"(pid {pid} on {host}): it died or hung; the search went on without it.{retry}")
        return None

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
        for summary in self.storage.trial_summaries(self.name, since_id=self._seen_id):
            if summary.worker == self.worker or summary.id in self._known:
                self._seen_id = summary.id  # ours (fed by complete()) or fed already
                continue
            if summary.status == RUNNING:
                break   # fed in id order: wait for it
            self._seen_id = summary.id
            reward = _reward(summary)
            if reward is not None:
                self.algorithm.feedback(self._dna(summary), reward)
                self._fed.add(summary.id)
            self._known.add(summary.id)
            self._attempts[summary.retry_of or summary.id] += 1
            self._count(summary, reward)
            fed += 1
        return fed

    # -- algorithm checkpoints -----------------------------------------------------------------
    def _restore_checkpoint(self) -> bool:
        if not callable(getattr(self.algorithm, "load_state_dict", None)):
            return False
        text = self.storage.load_checkpoint(self.name, self._checkpoint_key)
        if text is None:
            return False
        try:
            saved = json.loads(text)
            self.algorithm.load_state_dict(saved["algorithm"])
        except (ValueError, KeyError, TypeError, IndexError):
            self.algorithm.setup(self.dna_spec)   # an unreadable checkpoint: replay the history instead
            return False
        self._known, self._fed = _from_ranges(saved["known"]), _from_ranges(saved["fed"])
        return True

    def checkpoint(self, force: bool = False) -> bool:
        """Saves the algorithm's state as JSON (at most every few seconds unless ``force``); True if saved."""
        state_dict = getattr(self.algorithm, "state_dict", None)
        if not callable(state_dict) or self.storage.read_only:
            return False
        if not force and time.monotonic() - self._last_checkpoint < CHECKPOINT_INTERVAL_S:
            return False
        text = json.dumps({"algorithm": state_dict(), "known": _ranges(self._known), "fed": _ranges(self._fed)},
                          separators=(",", ":"), allow_nan=False)
        self.storage.save_checkpoint(self.name, self._checkpoint_key, text)
        self._last_checkpoint = time.monotonic()
        return True

    # -- trials --------------------------------------------------------------------------------
    def next_trial(self) -> Optional[ActiveTrial]:
        """The next trial to evaluate: a queued DNA first (``enqueue``: retries), then a point queued in
        the study (warm start: ``sn.search(initial=...)``, ``Study.enqueue``), else a new proposal.

        Returns None when the proposal could not be materialised (the trial is recorded as failed
        with the reason); raises StopIteration when the algorithm has nothing more to propose.
        """
        now = time.time()
        if self._queue:
            dna_json, retry_of = self._queue.popleft()
            dna = dna_from_json(dna_json, self.dna_spec)
            trial_id = self.storage.create_trial(self.name, dna_json, now, self.worker, retry_of=retry_of)
            record = TrialRecord(id=trial_id, dna=dna_json, started_at=now, worker=self.worker, heartbeat=now,
                                 retry_of=retry_of)
            self._attempts[retry_of or trial_id] += 1
        else:
            dna_json = self.storage.pop_queued(self.name)
            dna = self.algorithm.propose() if dna_json is None else dna_from_json(dna_json, self.dna_spec)
            dna_json = dna_json or dna_to_json(dna)
            trial_id = self.storage.create_trial(self.name, dna_json, now, self.worker)
            record = TrialRecord(id=trial_id, dna=dna_json, started_at=now, worker=self.worker, heartbeat=now)
            self._attempts[trial_id] += 1
        self._known.add(trial_id)
        trial = ActiveTrial(record=record, dna=dna, started=time.perf_counter(),
                            checkpoint=(self._folder(trial_id), None) if self.pausing else None)
        if not self._begin(trial):
            return None
        if self.materializer is not None and self.record_objects:
            trial.record.object = object_json(trial.value)
        return trial

    # -- paused trials (promotion-based schedulers) -----------------------------------------------
    @property
    def num_paused(self) -> int:
        """Trials stored as paused: created, not finished, waiting to be resumed or finalised."""
        return len(self._paused)

    def _checkpoint_root(self, given: Union[None, str, os.PathLike]) -> str:
        if given is not None:
            return os.fspath(given)
        path = getattr(self.storage, "path", None)
        if isinstance(path, str) and path != ":memory:":
            return path + ".checkpoints"
        self._temporary_root = tempfile.mkdtemp(prefix="symnas-checkpoints-")
        return self._temporary_root

    def _folder(self, trial_id: int) -> str:
        """Where trial ``trial_id`` saves its state: ``<root>/<study name>/<trial id>``."""
        return os.path.join(self.checkpoint_root or "", self.name, str(trial_id))

    def _has_saved_state(self, trial_id: int) -> bool:
        folder = self._folder(trial_id)
        return os.path.isdir(folder) and any(os.scandir(folder))

    def is_paused(self, trial: ActiveTrial) -> bool:
        """Whether the scheduler paused ``trial`` at a rung (its evaluation then ends as paused)."""
        return self.pausing and trial.record.id in self.early_stopping.paused

    def next_resume(self) -> Optional[ActiveTrial]:
        """The paused trial to evaluate now (one whose driver died first, then the one the scheduler
        promotes), set running again with its measurements and checkpoint, or None."""
        if not self.pausing:
            return None
        trial_id = self._resume_first.pop(0) if self._resume_first else self.early_stopping.next_resume()
        if trial_id is None:
            return None
        now = time.time()
        record = self.storage.resume_trial(self.name, trial_id, self.worker, now)
        self._paused.discard(trial_id)
        last_step = record.measurements[-1]["step"] if record.measurements else None
        if last_step is not None and not self._has_saved_state(trial_id) and not self._warned_empty:
            self._warned_empty = True
            warnings.warn(f"symnas: trial {trial_id} resumes with an empty checkpoint folder, so it trains from "
                          f"scratch: its evaluator saves nothing (save to sn.reporting.checkpoint().file(...) "
                          f"before each report, or use sn.train.Trainer).", RuntimeWarning, stacklevel=2)
        dna = dna_from_json(record.dna, self.dna_spec)
        trial = ActiveTrial(record=record, dna=dna, started=time.perf_counter() - (record.wall_time_s or 0.0),
                            checkpoint=(self._folder(trial_id), last_step))
        return trial if self._begin(trial) else self.next_resume()

    def _begin(self, trial: ActiveTrial) -> bool:
        """Sets ``trial`` in flight (heartbeat on) and materialises its DNA; False when that failed
        (the trial is then recorded as failed with the reason)."""
        with self._lock:
            self._in_flight[trial.record.id] = trial
        self._start_heartbeat()
        if self.materializer is not None:
            try:
                trial.value = self.materializer.materialize(trial.dna)
            except Exception as error:  # pylint: disable=broad-except
                self.fail(trial, f"The DNA could not be materialised: {error!r}")
                return False
        return True

    def finalize_paused(self) -> List[TrialRecord]:
        """Ends every trial still paused (the search is over): completed with the metrics it returned
        when it paused, its last measurement marked ``stop`` (pruned)."""
        ended = []
        for trial_id in sorted(self._paused):
            record = self.storage.trial(self.name, trial_id)
            if record.status != PAUSED:
                continue
            if record.measurements:
                record.measurements[-1] = {**record.measurements[-1], STOP_KEY: True}
            if record.reward is None:   # paused by a dying driver, never measured: nothing to complete
                record.status, record.error = FAILED, "paused when its process died; the search ended first"
                self.num_failed += 1
            else:
                record.status = COMPLETED
            record.finished_at = time.time()
            self.storage.finish_trial(self.name, record)
            self._paused.discard(trial_id)
            self.num_finished += 1
            self.early_stopping.finish(trial_id)
            if not self.keep_checkpoints:
                shutil.rmtree(self._folder(trial_id), ignore_errors=True)
            ended.append(record)
        return ended

    def enqueue(self, dna: Union[pg.DNA, str], retry_of: Optional[int] = None) -> None:
        """Evaluates ``dna`` (a DNA, or its JSON) next, before the algorithm proposes again; with
        ``retry_of`` the new trial records which one it evaluates again."""
        dna_json = dna if isinstance(dna, str) else dna_to_json(dna)
        self._queue.append((dna_json, retry_of))

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None and not isinstance(self.storage, MemoryStorage):
            self._heartbeat = _Heartbeat(self, self.heartbeat_interval)
            self._heartbeat.start()

    def beat(self) -> None:
        """Records that this process is alive and still runs its trials (the heartbeat thread calls it)."""
        with self._lock:
            ids = list(self._in_flight)
        self.storage.heartbeat(self.name, ids, time.time())

    @property
    def in_flight(self) -> List[ActiveTrial]:
        with self._lock:
            return list(self._in_flight.values())

    def report(self, trial: ActiveTrial, step: int, metrics: Dict[str, Any]) -> bool:
        """Stores an intermediate measurement; True if the early-stopping policy stops the trial."""
        measurement = {"step": step, "metrics": {k: objectives_lib._plain(v) for k, v in metrics.items()},
                       "elapsed_s": time.perf_counter() - trial.started}
        trial.record.measurements.append(measurement)
        stop = pause = False
        if hasattr(self.early_stopping, "decide"):   # sn.schedulers: no pg.tuning.Trial to build
            decision = self.early_stopping.decide(trial.record.id, step, measurement["metrics"])
            pause = decision == "pause"
            stop = decision == "stop"
        elif self.early_stopping is not None:
            stop = bool(self.early_stopping.should_stop_early(self._pg_trial(trial.record, trial.dna)))
        if stop:
            measurement[STOP_KEY] = True   # so the trial reads as pruned (e.g. in the dashboard)
        if pause:
            measurement[PAUSE_KEY] = True   # resumed from here when promoted
            stop = True
        self.storage.add_measurement(self.name, trial.record.id, measurement)
        return stop

    def complete(self, trial: ActiveTrial, result: Any, status: str = COMPLETED) -> TrialRecord:
        """Records the evaluator's result; a bad result (NaN, missing objective) fails the trial.
        ``status=PAUSED`` stores it as paused (promotion-based schedulers). The algorithm is fed
        once per trial: when its evaluation first ends (a resumed trial is not fed again)."""
        try:
            metrics, reward = objectives_lib.measure_result(result, self.objectives)
        except (ValueError, TypeError) as error:
            return self.fail(trial, f"{type(error).__name__}: {error}")
        record = trial.record
        if self.constraints is not None:
            try:
                violations = self.constraints.violations(metrics)
            except constraints_lib.ConstraintMetricMissing as error:
                record.metrics = metrics
                self.fail(trial, str(error))
                raise   # a mistake in the search's set-up, not in this trial: stop with its one line
            metrics[constraints_lib.FEASIBLE_KEY] = constraints_lib.is_feasible(violations)
            metrics[constraints_lib.VIOLATIONS_KEY] = list(violations)
            constraints_lib.attach(trial.dna, violations)
        record.metrics, record.status = metrics, status
        record.reward = list(reward) if isinstance(reward, tuple) else reward
        if record.id not in self._fed:
            self.algorithm.feedback(trial.dna, reward)
            self._fed.add(record.id)
        if isinstance(reward, float) and (self.best_reward is None or reward > self.best_reward) and \
                constraints_lib.metrics_feasible(metrics):
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

    def interrupt(self, trial: ActiveTrial, reason: str) -> TrialRecord:
        """Records a trial stopped from outside its evaluation (Ctrl-C, ``sys.exit``): kept, not counted."""
        trial.record.status, trial.record.error = INTERRUPTED, reason
        return self._finish(trial)

    def interrupt_in_flight(self, reason: str) -> List[TrialRecord]:
        """Records every trial of this session still running as interrupted (the search is stopping)."""
        return [self.interrupt(trial, reason) for trial in self.in_flight]

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
        with self._lock:
            self._in_flight.pop(record.id, None)
        if record.status in FINISHED_STATUSES:
            self.num_finished += 1
        if record.status == FAILED:
            self.num_failed += 1
            self.failures_this_run.append(record.error or "")
        if record.status == PAUSED:
            self._paused.add(record.id)
        elif self.pausing:
            self.early_stopping.finish(record.id)
            if record.status in FINISHED_STATUSES and not self.keep_checkpoints:
                shutil.rmtree(self._folder(record.id), ignore_errors=True)
        self._maybe_retry(record.retry_of or record.id, record.status, record.dna)
        self.checkpoint()
        return record

    def _maybe_retry(self, root: int, status: str, dna_json: str) -> None:
        if status in (FAILED, INTERRUPTED) and self._attempts[root] - 1 < self.retry_failed:
            self.enqueue(dna_json, retry_of=root)

    def close(self) -> None:
        """Stops the heartbeat and saves the algorithm's state; the session can still be read."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._temporary_root is not None and not self.keep_checkpoints:
            shutil.rmtree(self._temporary_root, ignore_errors=True)
            self._temporary_root = None
        if not self.storage.read_only:
            self.checkpoint(force=True)


def _reward(summary: TrialSummary) -> Union[None, float, tuple]:
    if summary.status not in (COMPLETED, PAUSED) or summary.reward is None:
        return None
    return tuple(summary.reward) if isinstance(summary.reward, list) else summary.reward


def _latest_attempts(summaries: List[TrialSummary]) -> List[TrialSummary]:
    """The last trial of each retry chain, in id order."""
    latest: Dict[int, TrialSummary] = {}
    for summary in summaries:
        latest[summary.retry_of or summary.id] = summary
    return sorted(latest.values(), key=lambda s: s.id)
