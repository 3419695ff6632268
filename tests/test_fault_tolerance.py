"""A trial can never wedge a study: interrupts, dead processes, heartbeats, retries, NaN reports,
no repeated points after resumes, read-only readers, locked files, and resuming without a replay."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pyglove as pg
import pytest

import symnas as sn
from symnas.errors import SearchInterrupted
from symnas.session import SearchSession
from symnas.storage import SQLiteStorage, StorageError
from symnas.study import Study

SPACE = pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2, 3]))


def _statuses(db, name):
    return [r.status for r in Study.load(db, name).records]


def _exit_on_third(calls):
    def evaluate(v):
        calls.append(v)
        if len(calls) == 3:
            sys.exit(0)
        return v.x
    return evaluate


# -- sys.exit / KeyboardInterrupt inside an objective ---------------------------------------------------
def test_sys_exit_in_an_objective_stops_the_search_and_records_the_trial_as_interrupted(tmp_path):
    db = tmp_path / "exit.db"
    with pytest.raises(SearchInterrupted, match=r"trial 3 was interrupted \(its objective called sys.exit\(0\)\)"):
        sn.search(SPACE, _exit_on_third([]), sn.algorithms.Random(seed=0), num_trials=10, storage=db,
                  name="e", progress=False)
    assert _statuses(db, "e") == ["completed", "completed", "interrupted"]
    # the next run goes on: the interrupted trial is kept, not evaluated again, not counted
    sn.search(SPACE, lambda v: v.x, sn.algorithms.Random(seed=0), num_trials=5, storage=db, name="e", progress=False)
    assert _statuses(db, "e") == ["completed"] * 2 + ["interrupted"] + ["completed"] * 3


def test_sys_exit_in_a_script_exits_non_zero_with_one_clear_message(tmp_path):
    script = tmp_path / "exits.py"
    script.write_text(textwrap.dedent("""
        import sys, pyglove as pg, symnas as sn
        def evaluate(v):
            sys.exit(0)
        sn.search(pg.Dict(x=pg.floatv(0.0, 1.0)), evaluate, num_trials=5, storage=sys.argv[1], name="s",
                  progress=False)
    """))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "s.db")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "trial 1 was interrupted (its objective called sys.exit(0))" in result.stderr
    assert "Traceback" not in result.stderr
    assert _statuses(tmp_path / "s.db", "s") == ["interrupted"]


def test_sys_exit_in_a_worker_process_stops_the_search_too(tmp_path):
    db = tmp_path / "w.db"

    def evaluate(v):
        if v.n == 2:
            sys.exit(4)
        return v.x
    with pytest.raises(SearchInterrupted, match=r"sys.exit\(4\)"):
        sn.search(SPACE, evaluate, sn.algorithms.Random(seed=1), num_trials=30, storage=db, name="w",
                  progress=False, workers=2)
    statuses = _statuses(db, "w")
    assert "interrupted" in statuses and "running" not in statuses


def test_keyboard_interrupt_in_an_objective_propagates_and_records_the_trial_as_interrupted(tmp_path):
    db = tmp_path / "k.db"

    def evaluate(v):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt) as error:
        sn.search(SPACE, evaluate, num_trials=5, storage=db, name="k", progress=False)
    assert "recorded as interrupted" in "".join(getattr(error.value, "__notes__", []))
    record = Study.load(db, "k").records[0]
    assert record.status == "interrupted" and "KeyboardInterrupt" in record.error


# -- a process that dies in the middle of a trial -------------------------------------------------------
_DYING_SCRIPT = textwrap.dedent("""
    import ctypes, os, signal, sys, pyglove as pg, symnas as sn
    how = sys.argv[2]
    def evaluate(v):
        if v.n == 2 and how != "none":   # the same point kills the process whenever it comes back
            if how == "os._exit":
                os._exit(3)
            if how == "segfault":
                ctypes.string_at(0)
            if how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
        return v.x
    sn.search(pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2, 3])), evaluate,
              sn.algorithms.Random(seed=5), num_trials=int(sys.argv[3]), storage=sys.argv[1], name="d",
              progress=False, retry_failed=int(sys.argv[4]))
""")


@pytest.mark.parametrize("how", ["os._exit", "segfault", "sigkill"])
def test_a_trial_that_kills_its_process_is_failed_on_the_next_start_and_the_search_goes_on(tmp_path, how):
    script = tmp_path / "dies.py"
    script.write_text(_DYING_SCRIPT)
    db = str(tmp_path / "d.db")
    first = subprocess.run([sys.executable, str(script), db, how, "12", "0"], capture_output=True, timeout=120)
    assert first.returncode != 0
    dead = [r for r in Study.load(db, "d").records if r.status == "running"]
    assert len(dead) == 1
    # the same command again: the dead trial is failed with the reason, never re-run first; the search
    # goes on (other points with n == 2 kill it again, so run with an objective that does not)
    second = subprocess.run([sys.executable, str(script), db, "none", "12", "0"], capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    records = Study.load(db, "d").records
    killed = records[dead[0].id - 1]
    assert killed.status == "failed" and "died before the trial finished" in killed.error
    assert f"pid {dead[0].worker.split(':')[1]}" in killed.error
    assert sum(r.finished for r in records) == 12 and all(r.id != killed.id for r in records[dead[0].id:])
    assert "running" not in [r.status for r in records]


def test_a_trial_without_a_heartbeat_from_another_machine_is_failed_and_a_live_one_is_left_alone(tmp_path):
    db = tmp_path / "h.db"
    sn.search(SPACE, lambda v: v.x, sn.algorithms.Random(seed=0), num_trials=2, storage=db, name="h",
              progress=False)
    storage = SQLiteStorage(db)
    dna = storage.trials("h")[0].dna
    now = time.time()
    stale = storage.create_trial("h", dna, now - 600, "elsewhere:4242:abcd")
    live = storage.create_trial("h", dna, now, "elsewhere:4243:abcd")
    storage.heartbeat("h", [stale], now - 300)
    session = SearchSession(SPACE, sn.algorithms.Random(seed=0), storage=SQLiteStorage(db), name="h",
                            stale_after=60.0)
    session.close()
    records = {r.id: r for r in Study.load(db, "h").records}
    assert records[stale].status == "failed" and "No heartbeat for 300 s" in records[stale].error
    assert "pid 4242 on elsewhere" in records[stale].error
    assert records[live].status == "running"


def test_a_running_trial_beats_its_heartbeat(tmp_path):
    db = tmp_path / "beat.db"
    beats = []

    def evaluate(v):
        for _ in range(6):
            time.sleep(0.1)
            with sqlite3.connect(db) as connection:
                beats.append(connection.execute("SELECT heartbeat FROM trials WHERE id=1").fetchone()[0])
        return v.x
    session = SearchSession(SPACE, sn.algorithms.Random(seed=0), storage=db, name="b", heartbeat_interval=0.1)
    from symnas.search import run_trials
    run_trials(session, evaluate, 1, progress=False)
    assert len(set(beats)) >= 3 and beats == sorted(beats)


def test_retry_failed_evaluates_failed_trials_again_up_to_n_times(tmp_path):
    attempts = {}

    def flaky(v):   # each point fails on its first two attempts
        key = (v.n, round(v.x, 12))
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] <= 2:
            raise RuntimeError(f"flaky attempt {attempts[key]}")
        return v.x
    study = sn.search(SPACE, flaky, sn.algorithms.Random(seed=0), num_trials=9, storage=None, progress=False,
                      retry_failed=2)
    records = study.records
    chains = {}
    for record in records:
        chains.setdefault(record.retry_of or record.id, []).append(record)
    assert len(chains) == 3 and all([r.status for r in chain] == ["failed", "failed", "completed"]
                                    for chain in chains.values())
    assert all(len({r.dna for r in chain}) == 1 for chain in chains.values())
    no_retry = sn.search(SPACE, flaky, sn.algorithms.Random(seed=1), num_trials=3, storage=None, progress=False)
    assert all(r.retry_of is None for r in no_retry.records)


# -- NaN and infinity in metrics and reports -------------------------------------------------------------
def _reporting_nan(v):
    from symnas.reporting import report
    report(0, loss=float("nan"), reward=float("inf"))
    return {"reward": v.x, "loss": float("nan"), "peak": float("-inf")}


@pytest.mark.parametrize("workers", [1, 2])
def test_non_finite_reports_and_metrics_are_stored_as_valid_json_and_the_search_goes_on(tmp_path, workers):
    db = tmp_path / "nan.db"
    study = sn.search(SPACE, _reporting_nan, sn.algorithms.Random(seed=0), num_trials=4, storage=db, name="n",
                      progress=False, workers=workers)
    assert _statuses(db, "n") == ["completed"] * 4

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    with sqlite3.connect(db) as connection:
        for metrics, measurements in connection.execute("SELECT metrics, measurements FROM trials"):
            assert strict(metrics)["loss"] == "NaN" and strict(measurements)[0]["metrics"]["reward"] == "Infinity"
    record = study.records[0]
    assert record.metrics["loss"] != record.metrics["loss"] and record.metrics["peak"] == float("-inf")
    assert record.measurements[0]["metrics"]["reward"] == float("inf")


# -- RegularizedEvolution never proposes a point twice ---------------------------------------------------
SMALL = pg.Dict(a=pg.oneof(range(4)), b=pg.oneof(range(4)), c=pg.oneof(range(4)))   # 64 points


def test_evolution_never_reproposes_across_resumes_with_the_default_seed(tmp_path):
    db = tmp_path / "evo.db"
    for total in (12, 24, 36, 48):
        sn.search(SMALL, lambda v: float(v.a + v.b + v.c), sn.algorithms.RegularizedEvolution(population_size=8),
                  num_trials=total, storage=db, name="evo", progress=False)
        with sqlite3.connect(db) as connection:   # without the checkpoint the history is replayed
            if total == 24:
                connection.execute("DELETE FROM checkpoints")
    dnas = [r.dna for r in Study.load(db, "evo").records]
    assert len(dnas) == 48 and len(set(dnas)) == 48


def test_evolution_never_reproposes_with_two_workers_across_resumes(tmp_path):
    db = tmp_path / "evo2.db"
    for total in (16, 32, 48):
        study = sn.search(SMALL, lambda v: float(v.a * v.b - v.c), sn.algorithms.RegularizedEvolution(population_size=8),
                          num_trials=total, storage=db, name="evo2", progress=False, workers=2)
    dnas = [r.dna for r in study.records]
    assert len(dnas) >= 48 and len(set(dnas)) == len(dnas)


def test_evolution_never_reproposes_a_point_another_process_tried(tmp_path):
    db = tmp_path / "two.db"
    sn.search(SMALL, lambda v: float(v.a), sn.algorithms.RegularizedEvolution(population_size=4, seed=1),
              num_trials=30, storage=db, name="two", progress=False)
    other = SearchSession(SMALL, sn.algorithms.RegularizedEvolution(population_size=4, seed=2), storage=db,
                          name="two")
    for _ in range(30):
        trial = other.next_trial()
        other.complete(trial, float(trial.value.a))
    other.close()
    dnas = [r.dna for r in Study.load(db, "two").records]
    assert len(set(dnas)) == len(dnas) == 60


# -- readers that write nothing; locks ------------------------------------------------------------------
def test_show_and_study_load_leave_a_study_file_as_it_was(tmp_path, capsys):
    db = tmp_path / "ro.db"
    sn.search(SPACE, lambda v: v.x, sn.algorithms.Random(seed=0), num_trials=3, storage=db, name="r",
              progress=False)
    before = db.read_bytes()
    study = Study.load(db)
    assert len(study) == 3 and study.best_trial.status == "completed" and len(study.trials) == 3
    from symnas import cli
    assert cli.main(["show", str(db)]) == 0
    assert db.read_bytes() == before
    with pytest.raises(StorageError, match="read-only"):
        study.storage.create_trial("r", "{}", 0.0, "me")


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path, capsys):
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
        connection.execute("INSERT INTO users VALUES ('ada')")
    connection.close()
    before, listing = foreign.read_bytes(), sorted(os.listdir(tmp_path))
    with pytest.raises(StorageError, match="another program.*users.*left untouched"):
        Study.load(foreign)
    with pytest.raises(StorageError, match="another program"):
        sn.search(SPACE, lambda v: v.x, num_trials=1, storage=foreign, progress=False)
    from symnas import cli
    assert cli.main(["show", str(foreign)]) == 2
    assert "another program" in capsys.readouterr().err
    assert foreign.read_bytes() == before and sorted(os.listdir(tmp_path)) == listing
    with sqlite3.connect(foreign) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_locked_study_file_fails_fast_naming_the_lock(tmp_path):
    db = tmp_path / "locked.db"
    sn.search(SPACE, lambda v: v.x, num_trials=1, storage=db, name="l", progress=False)
    locker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        connection = sqlite3.connect({str(db)!r}, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(StorageError, match="is locked by another process.*waited 5 s"):
            sn.search(SPACE, lambda v: v.x, num_trials=2, storage=db, name="l", progress=False)
        assert time.monotonic() - start < 15
    finally:
        locker.kill()
        locker.wait()


# -- resuming without reading or replaying everything ----------------------------------------------------
def test_study_len_and_best_do_not_read_the_whole_table(tmp_path, monkeypatch):
    db = tmp_path / "big.db"
    sn.search(SPACE, lambda v: v.x, sn.algorithms.Random(seed=0), num_trials=30, storage=db, name="b",
              progress=False)
    study = Study.load(db, "b")
    best_x = max(r.metrics["reward"] for r in study.records)
    monkeypatch.setattr(SQLiteStorage, "trials", lambda *a, **k: pytest.fail("read every trial"))
    assert len(study) == 30
    assert study.best_trial.metrics["reward"] == best_x
    assert study.best.x == best_x


@pytest.mark.parametrize("algorithm", ["Random", "RegularizedEvolution", "Reinforce"])
def test_resume_restores_the_algorithm_from_its_checkpoint_without_a_replay(tmp_path, algorithm, monkeypatch):
    db = tmp_path / "ck.db"

    def make():
        return getattr(sn.algorithms, algorithm)(seed=3)

    def objective(v):
        return v.n - (v.x - 0.3) ** 2
    sn.search(SPACE, objective, make(), num_trials=40, storage=db, name="c", progress=False)
    replays = []
    monkeypatch.setattr(type(make()), "_replay", lambda self, *a: replays.append(a))
    resumed = sn.search(SPACE, objective, make(), num_trials=60, storage=db, name="c", progress=False)
    assert replays == []
    monkeypatch.undo()
    uninterrupted = sn.search(SPACE, objective, make(), num_trials=60, storage=None, progress=False)
    assert [r.dna for r in resumed.records] == [r.dna for r in uninterrupted.records]


@pytest.mark.slow
def test_resuming_a_finished_20000_trial_study_takes_under_2_seconds(tmp_path):
    db = tmp_path / "huge.db"
    space = pg.List([pg.oneof(range(5)) for _ in range(6)])
    sn.search(space, lambda v: float(sum(v)), sn.algorithms.RegularizedEvolution(seed=0), num_trials=20000,
              storage=db, name="huge", progress=False, record_objects=False)
    start = time.perf_counter()
    study = sn.search(space, lambda v: float(sum(v)), sn.algorithms.RegularizedEvolution(seed=0),
                      num_trials=20000, storage=db, name="huge", progress=False)
    assert len(study) == 20000 and study.best_trial.metrics["reward"] == 24.0   # 6 choices of 0..4
    assert time.perf_counter() - start < 2.0
