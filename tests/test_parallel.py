"""Parallel trials in worker processes: results, crash isolation, time-outs, reports, proposals."""
import ctypes
import os
import subprocess
import sys
import textwrap
import time

import pyglove as pg
import pytest

import symnas as sn
from symnas.reporting import report

SPACE = pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3]))


def quadratic(v):
    return v.n - v.x ** 2


def test_two_workers_complete_every_trial_with_the_evaluators_results():
    study = sn.search(SPACE, quadratic, sn.algorithms.Random(seed=3), num_trials=12, storage=None,
                      workers=2, progress=False)
    records = study.records
    assert [r.id for r in records] == list(range(1, 13))
    assert all(r.status == "completed" for r in records)
    for record in records:
        value = record.to_object()
        assert record.metrics["reward"] == pytest.approx(value.n - value.x ** 2)


def test_parallel_results_equal_sequential_ones_for_a_feedback_free_algorithm(tmp_path):
    sequential = sn.search(SPACE, quadratic, sn.algorithms.Random(seed=5), num_trials=10, storage=None,
                           progress=False)
    parallel = sn.search(SPACE, quadratic, sn.algorithms.Random(seed=5), num_trials=10,
                         storage=tmp_path / "p.db", workers=2, progress=False)
    assert [(r.id, r.dna, r.metrics) for r in sequential.records] == \
           [(r.id, r.dna, r.metrics) for r in parallel.records]


def misbehave(value):
    kind = value.kind
    if kind == "raise":
        raise RuntimeError("evaluator exploded")
    if kind == "exit":
        os._exit(7)
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "hang":
        time.sleep(60)
    if kind == "oom":
        import resource  # pylint: disable=import-outside-toplevel
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, hard))
        try:
            return len(bytearray(8 << 30))
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return 1.0


def test_raising_crashing_hanging_and_out_of_memory_trials_fail_with_their_reason_and_the_search_goes_on():
    space = pg.Dict(kind=pg.oneof(["ok", "raise", "exit", "segfault", "hang", "oom"]), i=pg.oneof([0, 1]))
    # Sweeping proposes every combination once, then raises StopIteration: the loop must end then.
    study = sn.search(space, misbehave, pg.geno.Sweeping(), num_trials=None, storage=None, workers=2,
                      trial_timeout=2.0, progress=False)
    records = study.records
    assert len(records) == 12 and all(r.finished for r in records)
    errors = {}
    for record in records:
        errors.setdefault(record.to_object().kind, []).append(record)
    assert all(r.status == "completed" and r.metrics["reward"] == 1.0 for r in errors["ok"])
    assert all("evaluator exploded" in r.error for r in errors["raise"])
    assert all(r.error == "worker process exited with code 7 during the trial" for r in errors["exit"])
    assert all(r.error == "worker process died with signal SIGSEGV" for r in errors["segfault"])
    assert all(r.error.startswith("timed out after 2 s") for r in errors["hang"])
    assert all("MemoryError" in r.error for r in errors["oom"])


def test_closures_and_lambdas_are_sent_to_workers():
    offset = 10.0
    study = sn.search(SPACE, lambda v: v.n + offset, sn.algorithms.Random(seed=1), num_trials=4,
                      storage=None, workers=2, progress=False)
    assert all(r.metrics["reward"] >= 11.0 for r in study.records)


def reporting_evaluator(value):
    for step in range(3):
        if report(step=step, partial=value.n * step):
            return {"reward": -1.0, "stopped_at": step}
    return float(value.n)


def test_reports_from_workers_reach_storage_and_early_stopping():
    class StopAtStepOne(pg.tuning.EarlyStoppingPolicy):
        def should_stop_early(self, trial):
            return trial.measurements[-1].step >= 1

    study = sn.search(SPACE, reporting_evaluator, sn.algorithms.Random(seed=2), num_trials=4, storage=None,
                      workers=2, progress=False, early_stopping=StopAtStepOne())
    for record in study.records:
        assert [m["step"] for m in record.measurements] == [0, 1]
        assert record.metrics["stopped_at"] == 1


class OneAtATimeRandom(pg.geno.Random):
    """Random search that asserts it is never asked for a proposal before its last feedback."""

    max_pending = 1
    outstanding = 0

    def _propose(self):
        assert type(self).outstanding == 0, "proposed while a trial was still in flight"
        type(self).outstanding += 1
        return super()._propose()

    def _feedback(self, dna, reward):
        type(self).outstanding -= 1


def test_max_pending_bounds_the_proposals_in_flight():
    study = sn.search(SPACE, quadratic, OneAtATimeRandom(seed=0), num_trials=5, storage=None, workers=2,
                      progress=False)
    assert len(study.completed) == 5


@pytest.mark.parametrize("workers", [0, -2])
def test_non_positive_workers_is_a_value_error_naming_it(workers, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        sn.search(SPACE, quadratic, num_trials=2, storage=tmp_path / "w.db", workers=workers, progress=False)
    assert not (tmp_path / "w.db").exists()


def test_bad_trial_timeout_and_backend_are_value_errors():
    with pytest.raises(ValueError, match="trial_timeout"):
        sn.search(SPACE, quadratic, num_trials=2, storage=None, trial_timeout=0, progress=False)
    with pytest.raises(ValueError, match="backend"):
        sn.search(SPACE, quadratic, num_trials=2, storage=None, backend="dask", progress=False)


def test_a_script_without_main_guard_runs_workers_without_rerunning_itself(tmp_path):
    script = tmp_path / "search_script.py"
    script.write_text(textwrap.dedent("""
        import pyglove as pg, symnas as sn
        print("script body ran")
        space = pg.Dict(x=pg.floatv(0.0, 1.0))
        study = sn.search(space, lambda v: v.x, sn.algorithms.Random(seed=0), num_trials=4, storage=None,
                          workers=2, progress=False)
        print("completed", len(study.completed))
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("script body ran") == 1
    assert "completed 4" in result.stdout


RESUMABLE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import pyglove as pg, symnas as sn

    PID_LOG = sys.argv[2]

    def evaluate(v):
        with open(PID_LOG, "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(0.2)
        return v.x

    sn.search(pg.Dict(x=pg.floatv(0.0, 1.0)), evaluate, sn.algorithms.Random(seed=0), num_trials=16,
              storage=sys.argv[1], name="resumable", workers=2, progress=False)
""")


def test_a_killed_parallel_search_resumes_and_fails_its_killed_trials_without_repeating_any(tmp_path):
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE_SCRIPT)
    db, pids = tmp_path / "r.db", tmp_path / "pids.txt"
    driver = subprocess.Popen([sys.executable, str(script), str(db), str(pids)])
    def completed():
        try:
            return len(sn.Study.load(db, "resumable").completed)
        except (FileNotFoundError, KeyError, ValueError, sn.storage.StorageError):
            return 0

    deadline = time.time() + 120
    while time.time() < deadline and completed() < 4:
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    before = {r.id: r for r in sn.Study.load(db, "resumable").records}
    assert any(r.status == "running" for r in before.values())  # killed with trials in flight
    time.sleep(0.5)
    for pid in set(pids.read_text().split()):  # the workers died with their driver
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()

    rerun = subprocess.run([sys.executable, str(script), str(db), str(pids)], timeout=120)
    assert rerun.returncode == 0
    after = sn.Study.load(db, "resumable").records
    assert [r.id for r in after] == list(range(1, 17))
    for trial_id, record in before.items():  # finished trials kept as they were; killed ones failed
        if record.status == "completed":
            assert after[trial_id - 1].finished_at == record.finished_at
        else:
            assert after[trial_id - 1].status == "failed" and "died" in after[trial_id - 1].error
        assert after[trial_id - 1].dna == record.dna
    assert all(r.status == "completed" for r in after if r.id not in before)
