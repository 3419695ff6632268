"""Persistence of studies and their trials: in memory, or in an embedded SQLite file.

Everything is stored as JSON text (never pickled), so opening a study file from elsewhere
cannot run code. SQLite runs in WAL mode, so several processes may search the same study:
trial ids are allocated inside an immediate transaction, and none is lost or duplicated.

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
from typing import Any, Dict, Iterable, List, Optional, Union

from symnas.trial import FINISHED_STATUSES, RUNNING, TrialRecord

SCHEMA_VERSION = "1"


class StorageError(RuntimeError):
    """A study storage cannot be opened, is incompatible, or is corrupted."""


class StudyMismatch(StorageError):
    """A study of this name exists with a different search space or objectives."""


class Storage(abc.ABC):
    """Where studies and trials live. Implementations must be safe to use from several threads."""

    @abc.abstractmethod
    def open_study(self, name: str, info: Dict[str, Any]) -> Dict[str, Any]:
        """Creates the study if absent; returns its stored info. Raises StudyMismatch when the
        stored ``compat`` entry differs from ``info['compat']``."""

    @abc.abstractmethod
    def study_names(self) -> List[str]:
        """Names of the studies in this storage, oldest first."""

    @abc.abstractmethod
    def study_info(self, name: str) -> Dict[str, Any]:
        """The info stored with a study (space, algorithm, objectives, ...)."""

    @abc.abstractmethod
    def create_trial(self, study: str, dna: str, started_at: float, worker: str) -> int:
        """Allocates the next trial id of ``study`` with status ``running``."""

    @abc.abstractmethod
    def restart_trial(self, study: str, trial_id: int, started_at: float, worker: str) -> None:
        """Marks an interrupted ``running`` trial as running again (evaluated anew)."""

    @abc.abstractmethod
    def finish_trial(self, study: str, record: TrialRecord) -> None:
        """Stores the final state of a trial."""

    @abc.abstractmethod
    def add_measurement(self, study: str, trial_id: int, measurement: Dict[str, Any]) -> None:
        """Appends an intermediate measurement (``{"step": .., "metrics": {..}}``) to a trial."""

    @abc.abstractmethod
    def trials(self, study: str, since_id: int = 0) -> List[TrialRecord]:
        """The trials of ``study`` with id > ``since_id``, in id order."""

    def num_finished(self, study: str) -> int:
        return sum(t.status in FINISHED_STATUSES for t in self.trials(study))

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

    def create_trial(self, study, dna, started_at, worker):
        with self._lock:
            trials = self._trials[study]
            record = TrialRecord(id=len(trials) + 1, dna=dna, started_at=started_at, worker=worker)
            trials.append(record)
            return record.id

    def restart_trial(self, study, trial_id, started_at, worker):
        record = self._trials[study][trial_id - 1]
        record.status, record.started_at, record.worker = RUNNING, started_at, worker
        record.measurements = []

    def finish_trial(self, study, record):
        with self._lock:
            self._trials[study][record.id - 1] = _copy_record(record)

    def add_measurement(self, study, trial_id, measurement):
        self._trials[study][trial_id - 1].measurements.append(measurement)

    def trials(self, study, since_id=0):
        return [_copy_record(t) for t in self._trials.get(study, [])[since_id:]]

    def num_finished(self, study):
        return sum(t.status in FINISHED_STATUSES for t in self._trials.get(study, []))

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
            f"Study {name!r} already exists in this storage with a different search space, algorithm "
            f"or objectives. Pass another name= (or another storage) to start a new study.")


_TRIAL_COLUMNS = ("id", "dna", "status", "metrics", "reward", "object", "error", "started_at",
                  "finished_at", "wall_time_s", "measurements", "worker")

# Created on first use, so files written before warm start existed keep their schema version.
_QUEUE_TABLE = ("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, study TEXT NOT NULL, "
                "dna TEXT NOT NULL)")


class SQLiteStorage(Storage):
    """An embedded SQLite file (WAL mode), safe for several threads and processes.

    Example::

        storage = SQLiteStorage("runs.db")
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = str(path)
        _check_writable(self.path)
        self._local = threading.local()
        try:
            connection = self._connection()
            with connection:
                connection.execute("CREATE TABLE IF NOT EXISTS symnas_meta (key TEXT PRIMARY KEY, value TEXT)")
            row = connection.execute("SELECT value FROM symnas_meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._create_schema(connection)
            elif row[0] != SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} was written by a symnas storage schema version {row[0]}, but this symnas "
                    f"reads version {SCHEMA_VERSION}. Use a matching symnas version or a new file.")
        except sqlite3.DatabaseError as error:
            raise StorageError(f"{self.path} is not a readable symnas study file ({error}).") from error

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        with connection:
            connection.execute("""CREATE TABLE IF NOT EXISTS studies (
                name TEXT PRIMARY KEY, info TEXT NOT NULL, created_at REAL DEFAULT (julianday('now')))""")
            connection.execute("""CREATE TABLE IF NOT EXISTS trials (
                study TEXT NOT NULL, id INTEGER NOT NULL, dna TEXT NOT NULL, status TEXT NOT NULL,
                metrics TEXT, reward TEXT, object TEXT, error TEXT, started_at REAL, finished_at REAL,
                wall_time_s REAL, measurements TEXT, worker TEXT, PRIMARY KEY (study, id))""")
            connection.execute(
                "INSERT OR IGNORE INTO symnas_meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                             check_same_thread=False)
            except sqlite3.OperationalError as error:
                raise StorageError(f"Cannot open study file {self.path!r}: {error}.") from error
            _enable_wal(connection)
            # WAL + NORMAL survives a killed process (not a power cut) without an fsync per trial.
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, tuple(args))
        except sqlite3.DatabaseError as error:
            raise StorageError(f"Study file {self.path!r}: {error}.") from error

    def open_study(self, name, info):
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            row = connection.execute("SELECT info FROM studies WHERE name=?", (name,)).fetchone()
            if row is None:
                connection.execute("INSERT INTO studies (name, info) VALUES (?, ?)", (name, json.dumps(info)))
                stored = info
            else:
                stored = json.loads(row[0])
            connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            connection.execute("ROLLBACK") if connection.in_transaction else None
            raise StorageError(f"Study file {self.path!r}: {error}.") from error
        _check_compat(name, stored, info)
        return stored

    def study_names(self):
        return [r[0] for r in self._execute("SELECT name FROM studies ORDER BY created_at, name")]

    def study_info(self, name):
        row = self._execute("SELECT info FROM studies WHERE name=?", (name,)).fetchone()
        if row is None:
            raise KeyError(f"No study named {name!r} in {self.path}; studies here: {self.study_names()}.")
        return json.loads(row[0])

    def create_trial(self, study, dna, started_at, worker):
        connection = self._connection()
        for _ in range(3):
            try:
                connection.execute("BEGIN IMMEDIATE")
                (next_id,) = connection.execute(
                    "SELECT COALESCE(MAX(id), 0) + 1 FROM trials WHERE study=?", (study,)).fetchone()
                connection.execute(
                    "INSERT INTO trials (study, id, dna, status, started_at, worker, measurements) "
                    "VALUES (?, ?, ?, ?, ?, ?, '[]')", (study, next_id, dna, RUNNING, started_at, worker))
                connection.execute("COMMIT")
                return next_id
            except sqlite3.IntegrityError:
                connection.execute("ROLLBACK")
            except sqlite3.DatabaseError as error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise StorageError(f"Study file {self.path!r}: {error}.") from error
        raise StorageError(f"Could not allocate a trial id in {self.path!r} after 3 attempts.")

    def restart_trial(self, study, trial_id, started_at, worker):
        self._execute("UPDATE trials SET status=?, started_at=?, worker=?, measurements='[]' "
                      "WHERE study=? AND id=?", (RUNNING, started_at, worker, study, trial_id))

    def finish_trial(self, study, record):
        self._execute(
            "UPDATE trials SET status=?, metrics=?, reward=?, object=?, error=?, finished_at=?, wall_time_s=?, "
            "measurements=? WHERE study=? AND id=?",
            (record.status, json.dumps(record.metrics), json.dumps(record.reward), record.object,
             record.error, record.finished_at, record.wall_time_s, json.dumps(record.measurements),
             study, record.id))

    def add_measurement(self, study, trial_id, measurement):
        self._execute("UPDATE trials SET measurements=json_insert(measurements, '$[#]', json(?)) "
                      "WHERE study=? AND id=?", (json.dumps(measurement), study, trial_id))

    def trials(self, study, since_id=0):
        rows = self._execute(
            f"SELECT {', '.join(_TRIAL_COLUMNS)} FROM trials WHERE study=? AND id>? ORDER BY id",
            (study, since_id)).fetchall()
        records = []
        for row in rows:
            values = dict(zip(_TRIAL_COLUMNS, row))
            values["metrics"] = json.loads(values["metrics"]) if values["metrics"] else {}
            values["reward"] = json.loads(values["reward"]) if values["reward"] else None
            values["measurements"] = json.loads(values["measurements"]) if values["measurements"] else []
            records.append(TrialRecord(**values))
        return records

    def num_finished(self, study):
        (count,) = self._execute(
            f"SELECT COUNT(*) FROM trials WHERE study=? AND status IN ({','.join('?' * len(FINISHED_STATUSES))})",
            (study, *FINISHED_STATUSES)).fetchone()
        return count

    def enqueue(self, study, dnas, skip_existing=False):
        self._execute(_QUEUE_TABLE)
        connection = self._connection()
        added = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for dna in dnas:
                if skip_existing and connection.execute(
                        "SELECT 1 FROM queue WHERE study=? AND dna=? UNION ALL "
                        "SELECT 1 FROM trials WHERE study=? AND dna=? LIMIT 1", (study, dna, study, dna)).fetchone():
                    continue
                connection.execute("INSERT INTO queue (study, dna) VALUES (?, ?)", (study, dna))
                added.append(dna)
            connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StorageError(f"Study file {self.path!r}: {error}.") from error
        return added

    def queued(self, study):
        if not self._has_queue():
            return []
        return [r[0] for r in self._execute("SELECT dna FROM queue WHERE study=? ORDER BY id", (study,))]

    def pop_queued(self, study):
        if not self._has_queue():
            return None
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            row = connection.execute("SELECT id, dna FROM queue WHERE study=? ORDER BY id LIMIT 1",
                                     (study,)).fetchone()
            if row is not None:
                connection.execute("DELETE FROM queue WHERE id=?", (row[0],))
            connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StorageError(f"Study file {self.path!r}: {error}.") from error
        return None if row is None else row[1]

    def _has_queue(self) -> bool:
        return self._execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='queue'").fetchone() is not None

    def close(self):
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _enable_wal(connection: sqlite3.Connection, timeout_s: float = 60.0) -> None:
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
    folder = pathlib.Path(path).resolve().parent
    if not folder.is_dir():
        raise StorageError(f"Cannot create study file {path!r}: folder {str(folder)!r} does not exist.")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"Study file {path!r} is not readable and writable by this user.")
    elif not os.access(folder, os.W_OK):
        raise StorageError(f"Cannot create study file {path!r}: folder {str(folder)!r} is not writable.")


def open_storage(storage: Union[None, str, os.PathLike, Storage]) -> Storage:
    """``None`` -> in memory; a path -> SQLite file; a Storage -> itself."""
    if storage is None:
        return MemoryStorage()
    if isinstance(storage, Storage):
        return storage
    if isinstance(storage, (str, os.PathLike)):
        if str(storage) == ":memory:":
            return MemoryStorage()
        return SQLiteStorage(storage)
    raise TypeError(f"storage must be None, a file path or a symnas Storage, got {type(storage).__name__}.")
