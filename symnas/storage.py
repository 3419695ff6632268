"""Persistence of studies and their trials: in memory, or in an embedded SQLite file.

Everything is stored as JSON text (never pickled), so opening a study file from elsewhere
cannot run code. SQLite runs in WAL mode, so several processes may search the same study:
trial ids are allocated inside an immediate transaction, and none is lost or duplicated.
Read-only users (``symnas show``, ``sn.Study.load``) open the file read-only; a file that is not
a symnas study is refused before SQLite writes anything to it. A file locked by another program
fails after ``lock_timeout`` seconds (5 by default) with a message naming the lock.

Example::

    storage = open_storage("runs.db")          # or open_storage(None) for in-memory
    storage.open_study("demo", {"dna_spec": "..."})
    trial_id = storage.create_trial("demo", dna='{"value": [0, 1]}', started_at=0.0, worker="w0")
"""
from __future__ import annotations

import abc
import json
import os
import pathlib
import sqlite3
import threading
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Union

from symnas.trial import COMPLETED, FAILED, FINISHED_STATUSES, RUNNING, TrialRecord, decode_json, encode_json

DEFAULT_STORAGE = "symnas.db"   # where sn.search and pg.sample(backend="symnas") record studies by default
SCHEMA_VERSION = "2"
_READABLE_SCHEMAS = ("1", "2")     # version 1 lacks heartbeats, retries and checkpoints
DEFAULT_LOCK_TIMEOUT_S = 5.0


class StorageError(RuntimeError):
    """A study storage cannot be opened, is incompatible, or is corrupted."""


class StudyMismatch(StorageError):
    """A study of this name exists with a different search space, algorithm or objectives."""


class TrialSummary(NamedTuple):
    """What resuming needs of a trial (no object, metrics or reports are read)."""

    id: int
    dna: str
    status: str
    reward: Any
    worker: Optional[str]
    started_at: Optional[float]
    heartbeat: Optional[float]
    retry_of: Optional[int]


class Storage(abc.ABC):
    """Where studies and trials live. Implementations must be safe to use from several threads."""

    read_only = False

    @abc.abstractmethod
    def open_study(self, name: str, info: Dict[str, Any]) -> Dict[str, Any]:
        """Creates the study if absent; returns its stored info. Raises StudyMismatch when the
        stored ``compat`` or ``algorithm`` entry differs from ``info``'s."""

    @abc.abstractmethod
    def study_names(self) -> List[str]:
        """Names of the studies in this storage, oldest first."""

    @abc.abstractmethod
    def study_info(self, name: str) -> Dict[str, Any]:
        """The info stored with a study (space, algorithm, objectives, ...)."""

    @abc.abstractmethod
    def create_trial(self, study: str, dna: str, started_at: float, worker: str,
                     retry_of: Optional[int] = None) -> int:
        """Allocates the next trial id of ``study`` with status ``running``."""

    @abc.abstractmethod
    def finish_trial(self, study: str, record: TrialRecord) -> None:
        """Stores the final state of a trial."""

    @abc.abstractmethod
    def add_measurement(self, study: str, trial_id: int, measurement: Dict[str, Any]) -> None:
        """Appends an intermediate measurement (``{"step": .., "metrics": {..}}``) to a trial."""

    @abc.abstractmethod
    def trials(self, study: str, since_id: int = 0) -> List[TrialRecord]:
        """The trials of ``study`` with id > ``since_id``, in id order."""

    def trial_summaries(self, study: str, since_id: int = 0) -> List[TrialSummary]:
        """Like ``trials`` without objects, metrics and reports (what a resume reads)."""
        return [TrialSummary(r.id, r.dna, r.status, r.reward, r.worker, r.started_at, r.heartbeat, r.retry_of)
                for r in self.trials(study, since_id)]

    def trial(self, study: str, trial_id: int) -> TrialRecord:
        for record in self.trials(study, since_id=trial_id - 1):
            if record.id == trial_id:
                return record
            break
        raise KeyError(f"Study {study!r} has no trial {trial_id}.")

    def num_trials(self, study: str, statuses: Optional[Sequence[str]] = None) -> int:
        """How many trials ``study`` has (with one of ``statuses`` when given)."""
        return sum(statuses is None or t.status in statuses for t in self.trial_summaries(study))

    def num_finished(self, study: str) -> int:
        return self.num_trials(study, FINISHED_STATUSES)

    def best_trial(self, study: str) -> Optional[TrialRecord]:
        """The completed trial with the largest single reward (None when none completed)."""
        best = None
        for summary in self.trial_summaries(study):
            if summary.status == COMPLETED and isinstance(summary.reward, (int, float)) and \
                    (best is None or summary.reward > best.reward):
                best = summary
        return None if best is None else self.trial(study, best.id)

    def errors(self, study: str) -> List[str]:
        """The error texts of the failed trials, in id order."""
        return [t.error for t in self.trials(study) if t.status == FAILED and t.error]

    def heartbeat(self, study: str, trial_ids: Iterable[int], now: float) -> None:
        """Records that the process running ``trial_ids`` is alive (default: nothing to record)."""

    def fail_stale(self, study: str, trial_id: int, heartbeat: Optional[float], error: str, now: float) -> bool:
        """Marks a ``running`` trial failed if its heartbeat is still ``heartbeat``; True if it did."""
        record = self.trial(study, trial_id)
        if record.status != RUNNING or record.heartbeat != heartbeat:
            return False
        record.status, record.error, record.finished_at = FAILED, error, now
        self.finish_trial(study, record)
        return True

    def save_checkpoint(self, study: str, key: str, state: str) -> None:
        """Keeps the algorithm's state (JSON text) for ``study`` under ``key`` (default: not kept)."""

    def load_checkpoint(self, study: str, key: str) -> Optional[str]:
        """The state saved under ``key``, or None."""
        return None

    # -- queue: points to evaluate before any proposal (warm start) ------------------------------
    def enqueue(self, study: str, dnas: List[str], skip_existing: bool = False) -> List[str]:
        """Appends DNA JSON texts to the study's queue (kept until a session takes them); with
        ``skip_existing`` one already queued or already a trial is left out, checked in the same
        transaction (two processes queueing the same point queue it once). Returns those queued."""
        raise NotImplementedError(f"{type(self).__name__} has no queue of points.")

    def queued(self, study: str) -> List[str]:
        """The DNA JSON texts still queued, oldest first."""
        return []

    def pop_queued(self, study: str) -> Optional[str]:
        """Takes the oldest queued DNA (atomically: two processes never take the same), or None."""
        return None

    def close(self) -> None:
        """Releases resources; the default does nothing."""


class MemoryStorage(Storage):
    """Keeps studies in this process's memory (lost when it exits)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._info: Dict[str, Dict[str, Any]] = {}
        self._trials: Dict[str, List[TrialRecord]] = {}
        self._checkpoints: Dict[tuple, str] = {}
        self._queue: Dict[str, List[str]] = {}

    def open_study(self, name, info):
        with self._lock:
            if name in self._info:
                _check_compat(name, self._info[name], info)
            else:
                self._info[name] = dict(info)
                self._trials[name] = []
            return self._info[name]

    def study_names(self):
        return list(self._info)

    def study_info(self, name):
        if name not in self._info:
            raise KeyError(f"No study named {name!r}; studies here: {self.study_names()}.")
        return self._info[name]

    def create_trial(self, study, dna, started_at, worker, retry_of=None):
        with self._lock:
            trials = self._trials[study]
            record = TrialRecord(id=len(trials) + 1, dna=dna, started_at=started_at, worker=worker,
                                 heartbeat=started_at, retry_of=retry_of)
            trials.append(record)
            return record.id

    def finish_trial(self, study, record):
        with self._lock:
            self._trials[study][record.id - 1] = _copy_record(record)

    def add_measurement(self, study, trial_id, measurement):
        self._trials[study][trial_id - 1].measurements.append(measurement)

    def trials(self, study, since_id=0):
        return [_copy_record(t) for t in self._trials.get(study, [])[since_id:]]

    def trial(self, study, trial_id):
        trials = self._trials.get(study, [])
        if not 1 <= trial_id <= len(trials):
            raise KeyError(f"Study {study!r} has no trial {trial_id}.")
        return _copy_record(trials[trial_id - 1])

    def save_checkpoint(self, study, key, state):
        self._checkpoints[(study, key)] = state

    def load_checkpoint(self, study, key):
        return self._checkpoints.get((study, key))

    def enqueue(self, study, dnas, skip_existing=False):
        with self._lock:
            queue = self._queue.setdefault(study, [])
            present = set(queue) | {t.dna for t in self._trials.get(study, [])} if skip_existing else set()
            added = []
            for dna in dnas:
                if dna not in present:
                    queue.append(dna)
                    added.append(dna)
                    present.add(dna) if skip_existing else None
            return added

    def queued(self, study):
        with self._lock:
            return list(self._queue.get(study, []))

    def pop_queued(self, study):
        with self._lock:
            queue = self._queue.get(study)
            return queue.pop(0) if queue else None


def _copy_record(record: TrialRecord) -> TrialRecord:
    copied = TrialRecord(**vars(record))
    copied.metrics = dict(record.metrics)
    copied.measurements = list(record.measurements)
    return copied


def _check_compat(name: str, stored: Dict[str, Any], info: Dict[str, Any]) -> None:
    if stored.get("compat") != info.get("compat"):
        raise StudyMismatch(
            f"Study {name!r} already exists in this storage with a different search space or objectives. "
            f"Pass another name= (or another storage) to start a new study.")
    if "algorithm" in stored and "algorithm" in info and not _same_algorithm(stored["algorithm"], info["algorithm"]):
        raise StudyMismatch(
            f"Study {name!r} was started with the algorithm {_short(stored['algorithm'])}, this call passes "
            f"{_short(info['algorithm'])}. Pass another name= (or another storage) to start a new study.")


def _same_algorithm(a: str, b: str) -> bool:
    """Same class and settings; the seed may differ (processes sharing a study use different seeds)."""
    def settings(text):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, dict):
            value.pop("seed", None)
        return value
    return a == b or settings(a) == settings(b)


def _short(algorithm_json: str) -> str:
    try:
        value = json.loads(algorithm_json)
    except ValueError:
        return algorithm_json[:80]
    if not isinstance(value, dict):
        return str(value)[:80]
    name = str(value.get("_type", "?")).rpartition(".")[2]
    args = ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "_type")
    return f"{name}({args})"[:120]


_TRIAL_COLUMNS = ("id", "dna", "status", "metrics", "reward", "object", "error", "started_at",
                  "finished_at", "wall_time_s", "measurements", "worker", "heartbeat", "retry_of")
_SUMMARY_COLUMNS = ("id", "dna", "status", "reward", "worker", "started_at", "heartbeat", "retry_of")
_V2_COLUMNS = ("heartbeat", "retry_of")

# Created on first use, so files written before warm start existed keep their schema version.
_QUEUE_TABLE = ("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, study TEXT NOT NULL, "
                "dna TEXT NOT NULL)")


class SQLiteStorage(Storage):
    """An embedded SQLite file (WAL mode), safe for several threads and processes.

    ``read_only=True`` opens an existing study file without writing to it (``PRAGMA query_only``).

    Example::

        storage = SQLiteStorage("runs.db")
    """

    def __init__(self, path: Union[str, os.PathLike], read_only: bool = False,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S):
        self.path = os.fspath(path)
        self.read_only = read_only
        self.lock_timeout = float(lock_timeout)
        self._local = threading.local()
        if read_only:
            if not os.path.isfile(self.path):
                raise StorageError(f"No study file at {self.path!r}.")
        else:
            _check_writable(self.path)
        _refuse_foreign(self.path, self.lock_timeout)    # before SQLite writes anything (journal mode, tables)
        deadline = time.monotonic() + self.lock_timeout
        while True:   # a file another process is creating can read as malformed for a moment
            try:
                self._open_schema(read_only)
                return
            except StorageError as error:
                if "malformed" not in str(error) or time.monotonic() > deadline:
                    raise
                self.close()
                time.sleep(0.02)

    def _open_schema(self, read_only: bool) -> None:
        try:
            connection = self._connection()
            row = connection.execute("SELECT value FROM symnas_meta WHERE key='schema_version'").fetchone() \
                if _has_table(connection, "symnas_meta") else None
            if row is None and read_only:
                raise StorageError(f"{self.path} is not a symnas study file (no symnas tables).")
            if row is None:
                self._create_schema(connection)
                version = SCHEMA_VERSION
            elif row[0] not in _READABLE_SCHEMAS:
                raise StorageError(
                    f"{self.path} was written by a symnas storage schema version {row[0]}, but this symnas "
                    f"reads versions {', '.join(_READABLE_SCHEMAS)}. Use a matching symnas version or a new file.")
            else:
                version = row[0]
            if version != SCHEMA_VERSION and not read_only:
                self._migrate(connection)
            self._columns = {r[1] for r in connection.execute("PRAGMA table_info(trials)")}
        except sqlite3.OperationalError as error:
            raise self._error(error) from error
        except sqlite3.DatabaseError as error:
            raise StorageError(f"{self.path} is not a readable symnas study file ({error}).") from error

    # -- connections ------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                if self.read_only:
                    # query_only rather than SQLite's mode=ro: see _refuse_foreign
                    connection = sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None,
                                                 check_same_thread=False)
                    connection.execute("PRAGMA query_only=1")
                else:
                    connection = sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None,
                                                 check_same_thread=False)
                    _enable_wal(connection, self.lock_timeout)
                    # WAL + NORMAL survives a killed process (not a power cut) without an fsync per trial.
                    connection.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError as error:
                raise self._error(error) from error
            self._local.connection = connection
        return connection

    def _error(self, error: sqlite3.DatabaseError) -> StorageError:
        text = str(error)
        if "locked" in text or "busy" in text:
            return StorageError(
                f"Study file {self.path!r} is locked by another process (waited {self.lock_timeout:g} s for its "
                f"lock): close the program that holds it (an sqlite3 shell with an open transaction, a "
                f"crashed writer on a network file system) or use another file.")
        if "readonly" in text.replace(" ", "") or "read-only" in text:
            return StorageError(f"Study file {self.path!r} is opened read-only; this needs to write to it.")
        return StorageError(f"Study file {self.path!r}: {error}.")

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, tuple(args))
        except sqlite3.DatabaseError as error:
            raise self._error(error) from error

    def _write(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        if self.read_only:
            raise StorageError(f"Study file {self.path!r} is opened read-only; this needs to write to it.")
        return self._execute(sql, args)

    def _transaction(self, work):
        """Runs ``work(connection)`` inside BEGIN IMMEDIATE ... COMMIT."""
        if self.read_only:
            raise StorageError(f"Study file {self.path!r} is opened read-only; this needs to write to it.")
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            result = work(connection)
            connection.execute("COMMIT")
            return result
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.IntegrityError):
                raise self._error(error) from error
            raise

    # -- schema ----------------------------------------------------------------------------------
    def _create_schema(self, connection: sqlite3.Connection) -> None:
        def create(c):
            c.execute("CREATE TABLE IF NOT EXISTS symnas_meta (key TEXT PRIMARY KEY, value TEXT)")
            c.execute("""CREATE TABLE IF NOT EXISTS studies (
                name TEXT PRIMARY KEY, info TEXT NOT NULL, created_at REAL DEFAULT (julianday('now')))""")
            c.execute("""CREATE TABLE IF NOT EXISTS trials (
                study TEXT NOT NULL, id INTEGER NOT NULL, dna TEXT NOT NULL, status TEXT NOT NULL,
                metrics TEXT, reward TEXT, object TEXT, error TEXT, started_at REAL, finished_at REAL,
                wall_time_s REAL, measurements TEXT, worker TEXT, heartbeat REAL, retry_of INTEGER,
                PRIMARY KEY (study, id))""")
            c.execute("""CREATE TABLE IF NOT EXISTS checkpoints (
                study TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, saved_at REAL,
                PRIMARY KEY (study, key))""")
            c.execute("INSERT OR IGNORE INTO symnas_meta (key, value) VALUES ('schema_version', ?)",
                      (SCHEMA_VERSION,))
        self._transaction(create)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Version 1 -> 2: heartbeat and retry_of columns, the checkpoints table."""
        def migrate(c):
            (version,) = c.execute("SELECT value FROM symnas_meta WHERE key='schema_version'").fetchone()
            if version == SCHEMA_VERSION:
                return   # another process migrated it meanwhile
            columns = {r[1] for r in c.execute("PRAGMA table_info(trials)")}
            for column, kind in (("heartbeat", "REAL"), ("retry_of", "INTEGER")):
                if column not in columns:
                    c.execute(f"ALTER TABLE trials ADD COLUMN {column} {kind}")
            c.execute("""CREATE TABLE IF NOT EXISTS checkpoints (
                study TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, saved_at REAL,
                PRIMARY KEY (study, key))""")
            c.execute("UPDATE symnas_meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION,))
        self._transaction(migrate)

    def _select(self, columns: Sequence[str]) -> str:
        """Column list; columns a version-1 file (opened read-only) lacks read as NULL."""
        return ", ".join(c if c in self._columns or c not in _V2_COLUMNS else f"NULL AS {c}" for c in columns)

    # -- studies ---------------------------------------------------------------------------------
    def open_study(self, name, info):
        def open_(c):
            row = c.execute("SELECT info FROM studies WHERE name=?", (name,)).fetchone()
            if row is None:
                c.execute("INSERT INTO studies (name, info) VALUES (?, ?)", (name, json.dumps(info)))
                return info
            return json.loads(row[0])
        stored = self._transaction(open_)
        _check_compat(name, stored, info)
        return stored

    def study_names(self):
        return [r[0] for r in self._execute("SELECT name FROM studies ORDER BY created_at, name")]

    def study_info(self, name):
        row = self._execute("SELECT info FROM studies WHERE name=?", (name,)).fetchone()
        if row is None:
            raise KeyError(f"No study named {name!r} in {self.path}; studies here: {self.study_names()}.")
        return json.loads(row[0])

    # -- trials ----------------------------------------------------------------------------------
    def create_trial(self, study, dna, started_at, worker, retry_of=None):
        def create(c):
            (next_id,) = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM trials WHERE study=?", (study,)).fetchone()
            c.execute("INSERT INTO trials (study, id, dna, status, started_at, worker, measurements, heartbeat, "
                      "retry_of) VALUES (?, ?, ?, ?, ?, ?, '[]', ?, ?)",
                      (study, next_id, dna, RUNNING, started_at, worker, started_at, retry_of))
            return next_id
        for _ in range(3):
            try:
                return self._transaction(create)
            except sqlite3.IntegrityError:
                continue
        raise StorageError(f"Could not allocate a trial id in {self.path!r} after 3 attempts.")

    def finish_trial(self, study, record):
        self._write(
            "UPDATE trials SET status=?, metrics=?, reward=?, object=?, error=?, finished_at=?, wall_time_s=?, "
            "measurements=? WHERE study=? AND id=?",
            (record.status, encode_json(record.metrics), encode_json(record.reward), record.object,
             record.error, record.finished_at, record.wall_time_s, encode_json(record.measurements),
             study, record.id))

    def add_measurement(self, study, trial_id, measurement):
        self._write("UPDATE trials SET measurements=json_insert(measurements, '$[#]', json(?)) "
                    "WHERE study=? AND id=?", (encode_json(measurement), study, trial_id))

    def heartbeat(self, study, trial_ids, now):
        ids = list(trial_ids)
        if ids:
            self._write(f"UPDATE trials SET heartbeat=? WHERE study=? AND status=? AND id IN "
                        f"({','.join('?' * len(ids))})", (now, study, RUNNING, *ids))

    def fail_stale(self, study, trial_id, heartbeat, error, now):
        cursor = self._write(
            "UPDATE trials SET status=?, error=?, finished_at=? WHERE study=? AND id=? AND status=? AND "
            "heartbeat IS ?", (FAILED, error, now, study, trial_id, RUNNING, heartbeat))
        return cursor.rowcount == 1

    def trials(self, study, since_id=0):
        rows = self._execute(
            f"SELECT {self._select(_TRIAL_COLUMNS)} FROM trials WHERE study=? AND id>? ORDER BY id",
            (study, since_id)).fetchall()
        return [_record(row) for row in rows]

    def trial(self, study, trial_id):
        row = self._execute(f"SELECT {self._select(_TRIAL_COLUMNS)} FROM trials WHERE study=? AND id=?",
                            (study, trial_id)).fetchone()
        if row is None:
            raise KeyError(f"Study {study!r} has no trial {trial_id}.")
        return _record(row)

    def trial_summaries(self, study, since_id=0):
        rows = self._execute(
            f"SELECT {self._select(_SUMMARY_COLUMNS)} FROM trials WHERE study=? AND id>? ORDER BY id",
            (study, since_id)).fetchall()
        return [TrialSummary(i, dna, status, decode_json(reward), worker, started, beat, retry)
                for i, dna, status, reward, worker, started, beat, retry in rows]

    def num_trials(self, study, statuses=None):
        if statuses is None:
            (count,) = self._execute("SELECT COUNT(*) FROM trials WHERE study=?", (study,)).fetchone()
        else:
            (count,) = self._execute(
                f"SELECT COUNT(*) FROM trials WHERE study=? AND status IN ({','.join('?' * len(statuses))})",
                (study, *statuses)).fetchone()
        return count

    def best_trial(self, study):
        # single-objective rewards are JSON numbers; a list (several objectives) has no single best
        row = self._execute(
            f"SELECT {self._select(_TRIAL_COLUMNS)} FROM trials WHERE study=? AND status=? AND "
            f"json_valid(reward) AND json_type(reward) IN ('real', 'integer') "
            f"ORDER BY CAST(reward AS REAL) DESC, id LIMIT 1", (study, COMPLETED)).fetchone()
        return None if row is None else _record(row)

    def errors(self, study):
        return [r[0] for r in self._execute(
            "SELECT error FROM trials WHERE study=? AND status=? AND error IS NOT NULL ORDER BY id",
            (study, FAILED))]

    # -- algorithm checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, study, key, state):
        if "checkpoints" not in self._tables():
            return
        self._write("INSERT OR REPLACE INTO checkpoints (study, key, state, saved_at) VALUES (?, ?, ?, ?)",
                    (study, key, state, time.time()))

    def load_checkpoint(self, study, key):
        if "checkpoints" not in self._tables():
            return None
        row = self._execute("SELECT state FROM checkpoints WHERE study=? AND key=?", (study, key)).fetchone()
        return None if row is None else row[0]

    def _tables(self) -> set:
        tables = getattr(self, "_table_names", None)
        if tables is None:
            tables = self._table_names = {r[0] for r in self._execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        return tables

    # -- queue of points to evaluate first (warm start) --------------------------------------------
    def enqueue(self, study, dnas, skip_existing=False):
        def add(c):
            c.execute(_QUEUE_TABLE)
            added = []
            for dna in dnas:
                if skip_existing and c.execute(
                        "SELECT 1 FROM queue WHERE study=? AND dna=? UNION ALL "
                        "SELECT 1 FROM trials WHERE study=? AND dna=? LIMIT 1", (study, dna, study, dna)).fetchone():
                    continue
                c.execute("INSERT INTO queue (study, dna) VALUES (?, ?)", (study, dna))
                added.append(dna)
            return added
        return self._transaction(add)

    def queued(self, study):
        if not self._has_queue():
            return []
        return [r[0] for r in self._execute("SELECT dna FROM queue WHERE study=? ORDER BY id", (study,))]

    def pop_queued(self, study):
        # A plain read first: a search with nothing queued pays no write transaction per proposal.
        while self._has_queue() and not self.read_only:
            row = self._execute("SELECT id, dna FROM queue WHERE study=? ORDER BY id LIMIT 1", (study,)).fetchone()
            if row is None:
                return None
            taken = self._transaction(lambda c, i=row[0]: c.execute("DELETE FROM queue WHERE id=?", (i,)).rowcount)
            if taken == 1:   # else another process took it meanwhile: try the next one
                return row[1]
        return None

    def _has_queue(self) -> bool:
        # not cached: another process may create the table while this one searches
        return self._execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='queue'").fetchone() is not None


    def close(self):
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _record(row: tuple) -> TrialRecord:
    values = dict(zip(_TRIAL_COLUMNS, row))
    values["metrics"] = decode_json(values["metrics"], {})
    values["reward"] = decode_json(values["reward"])
    values["measurements"] = decode_json(values["measurements"], [])
    return TrialRecord(**values)


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    return connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
        is not None


def _refuse_foreign(path: str, lock_timeout: float) -> None:
    """Raises StorageError for an existing file that is not a symnas study, without writing to it."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    # No open() of our own to read the header: closing any other descriptor of the file would drop
    # the POSIX locks of this process's SQLite connections to it (SQLite's "how to corrupt" 2.2).
    # query_only: this connection cannot change the file. (Not SQLite's mode=ro: closing a mode=ro
    # connection drops the WAL locks of this process's other connections to the same file.)
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            connection = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)
            try:
                connection.execute("PRAGMA query_only=1")
                tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                connection.close()
            break
        except sqlite3.DatabaseError as error:
            if time.monotonic() < deadline and ("malformed" in str(error) or "locked" in str(error)):
                time.sleep(0.02)
                continue
            reason = "not an SQLite database" if "not a database" in str(error) else str(error)
            raise StorageError(f"{path} is not a readable symnas study file ({reason}); it was left untouched.") \
                from error
    if tables and "symnas_meta" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageError(f"{path} is an SQLite database of another program (tables: {shown}), not a "
                           f"symnas study; it was left untouched.")


def _enable_wal(connection: sqlite3.Connection, timeout_s: float) -> None:
    """Switches to WAL; retried because SQLite answers "database is locked" at once, without waiting
    for the busy timeout, while another process is creating the same file."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _check_writable(path: str) -> None:
    try:
        folder = pathlib.Path(path).resolve().parent
        is_dir = folder.is_dir()
        exists = os.path.exists(path)
    except OSError as error:   # a name too long, a loop of links
        raise StorageError(f"Cannot use {path[:80]!r}{'...' if len(path) > 80 else ''} as a study file: "
                           f"{error.strerror}.") from error
    if not is_dir:
        raise StorageError(f"Cannot create study file {path!r}: folder {str(folder)!r} does not exist.")
    if exists:
        if os.path.isdir(path):
            raise StorageError(f"Study file {path!r} is a folder.")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"Study file {path!r} is not readable and writable by this user.")
    elif not os.access(folder, os.W_OK):
        raise StorageError(f"Cannot create study file {path!r}: folder {str(folder)!r} is not writable.")


def open_storage(storage: Union[None, str, os.PathLike, Storage], read_only: bool = False) -> Storage:
    """``None`` -> in memory; a path -> SQLite file (``read_only``: opened without writing); a Storage -> itself."""
    if storage is None:
        return MemoryStorage()
    if isinstance(storage, Storage):
        return storage
    if isinstance(storage, (str, os.PathLike)):
        if os.fspath(storage) == ":memory:":
            return MemoryStorage()
        return SQLiteStorage(storage, read_only=read_only)
    raise TypeError(f"storage must be None, a file path or a symnas Storage, got {type(storage).__name__}.")
