"""The search loop: recording, failures, objectives, resume after SIGKILL, pg.sample backend."""
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyglove as pg
import pytest

import symnas as sn
from symnas.materialize import Materializer
from symnas.storage import SQLiteStorage, StorageError, StudyMismatch

SPACE = pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3]))


def quadratic(v):
    return v.n - v.x ** 2


def test_search_records_every_trial_and_finds_best():
    study = sn.search(SPACE, quadratic, pg.geno.Random(seed=1), num_trials=40, storage=None, progress=False)
    frame = study.trials
    assert len(frame) == 40
    assert set(frame["status"]) == {"completed"}
    assert study.best_trial.metrics["reward"] == pytest.approx(frame["reward"].max())
    assert study.best.n == 3
    assert study.best_trial.to_object() == study.best
    assert frame["wall_time_s"].notna().all()


def test_failing_or_nan_trials_are_recorded_and_the_search_goes_on():
    def evaluate(v):
        if v.n == 1:
            raise RuntimeError("evaluator exploded")
        if v.n == 2:
            return math.nan
        return v.x

    study = sn.search(SPACE, evaluate, pg.geno.Random(seed=2), num_trials=30, storage=None, progress=False)
    frame = study.trials
    assert len(frame) == 30
    failed = frame[frame.status == "failed"]
    assert len(failed) > 0 and (frame.status == "completed").any()
    assert failed["error"].str.contains("evaluator exploded|is nan").all()


def test_rejected_trials_keep_their_reason_and_metrics():
    def evaluate(v):
        if v.n != 3:
            raise sn.TrialRejected("n too small", metrics={"fisher": 1.0, "fisher_original": 2.0})
        return 1.0

    study = sn.search(SPACE, evaluate, pg.geno.Random(seed=3), num_trials=15, storage=None, progress=False)
    rejected = [r for r in study.records if r.status == "rejected"]
    assert rejected and all(r.error == "n too small" and r.metrics["fisher"] == 1.0 for r in rejected)


def test_dict_results_and_named_objective_with_min_direction():
    study = sn.search(SPACE, lambda v: {"loss": v.x ** 2, "n": v.n}, pg.geno.Random(seed=4), num_trials=30,
                      storage=None, objectives="loss:min", progress=False)
    assert study.best_trial.metrics["loss"] == pytest.approx(study.trials["loss"].min())


def test_multi_objective_study_reports_a_pareto_front_not_a_single_best():
    class TwoObjectiveRandom(pg.geno.Random):
        @property
        def multi_objective(self):
            return True

    study = sn.search(SPACE, lambda v: {"acc": v.n + v.x, "latency": v.n * 2.0}, TwoObjectiveRandom(seed=5),
                      num_trials=40, storage=None, objectives={"acc": "max", "latency": "min"}, progress=False)
    front = study.pareto_front()
    assert front
    points = [(r.metrics["acc"], r.metrics["latency"]) for r in study.completed]
    for r in front:
        a, lat = r.metrics["acc"], r.metrics["latency"]
        assert not any(a2 >= a and l2 <= lat and (a2 > a or l2 < lat) for a2, l2 in points)
    with pytest.raises(ValueError, match="pareto_front"):
        _ = study.best
    fig = study.plot()
    assert fig.axes[0].get_xlabel().startswith("acc")


def test_single_objective_algorithm_refuses_several_objectives():
    with pytest.raises(ValueError, match="multi-objective"):
        sn.search(SPACE, quadratic, pg.geno.Random(seed=0), num_trials=1, storage=None,
                  objectives={"a": "max", "b": "min"}, progress=False)


def test_evaluator_with_wrong_arity_fails_the_trial_with_a_clear_error():
    class TwoObjectiveRandom(pg.geno.Random):
        @property
        def multi_objective(self):
            return True

    study = sn.search(SPACE, lambda v: 1.0, TwoObjectiveRandom(seed=5), num_trials=2, storage=None,
                      objectives=["a", "b"], progress=False)
    assert all("one number but the search has 2 objectives" in r.error for r in study.records)


def test_space_without_decision_points_is_refused():
    with pytest.raises(ValueError, match="no decision points"):
        sn.search(pg.Dict(x=1), quadratic, pg.geno.Random(), num_trials=1, storage=None)


def test_unwritable_storage_path_names_the_folder(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        sn.search(SPACE, quadratic, pg.geno.Random(), num_trials=1, storage=str(tmp_path / "no" / "x.db"))
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    if os.access(readonly, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    with pytest.raises(StorageError, match="not writable"):
        sn.search(SPACE, quadratic, pg.geno.Random(), num_trials=1, storage=str(readonly / "x.db"))


def test_corrupted_or_foreign_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a readable symnas study file"):
        SQLiteStorage(path)


def test_same_name_with_another_space_is_refused(tmp_path):
    db = str(tmp_path / "s.db")
    sn.search(SPACE, quadratic, pg.geno.Random(seed=0), num_trials=2, storage=db, name="s", progress=False)
    with pytest.raises(StudyMismatch, match="different search space"):
        sn.search(pg.Dict(y=pg.oneof([1, 2])), lambda v: 1.0, pg.geno.Random(), num_trials=2, storage=db,
                  name="s", progress=False)


def test_running_the_same_call_again_continues_the_study(tmp_path):
    db = str(tmp_path / "c.db")
    first = sn.search(SPACE, quadratic, pg.geno.Random(seed=7), num_trials=10, storage=db, progress=False)
    second = sn.search(SPACE, quadratic, pg.geno.Random(seed=7), num_trials=25, storage=db, progress=False)
    assert first.name == second.name
    assert [r.id for r in second.records] == list(range(1, 26))
    # the seeded random sequence continues where it stopped instead of repeating its first proposals
    uninterrupted = sn.search(SPACE, quadratic, pg.geno.Random(seed=7), num_trials=25, storage=None,
                              progress=False)
    assert [r.dna for r in second.records] == [r.dna for r in uninterrupted.records]


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time, pyglove as pg, symnas as sn
    SPACE = pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3]))
    def slow(v):
        time.sleep(0.05)
        return v.n - v.x ** 2
    sn.search(SPACE, slow, pg.geno.Random(seed=11), num_trials=int(sys.argv[2]), storage=sys.argv[1],
              name="killme", progress=False, retry_failed=int(sys.argv[3]))
""")


def test_sigkill_in_the_middle_then_rerun_fails_the_killed_trial_and_repeats_nothing(tmp_path):
    db = str(tmp_path / "k.db")
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), db, "60", "0"])
    deadline = time.time() + 180    # a loaded machine may take long to start the process
    storage = None
    while time.time() < deadline:
        time.sleep(0.2)
        if os.path.exists(db):
            storage = storage or SQLiteStorage(db)
            try:
                if storage.num_finished("killme") >= 8:
                    break
            except (KeyError, StorageError):
                pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {r.id: r for r in SQLiteStorage(db).trials("killme")}
    finished_before = {i: r for i, r in before.items() if r.finished}
    killed = [i for i, r in before.items() if r.status == "running"]
    assert 8 <= len(finished_before) < 60 and len(killed) <= 1
    subprocess.run([sys.executable, str(script), db, "60", "0"], check=True, timeout=120)
    after = SQLiteStorage(db).trials("killme")
    assert [r.id for r in after] == list(range(1, 61))
    for trial_id in killed:   # failed with the reason, on the next start, and not evaluated again
        assert after[trial_id - 1].status == "failed" and "died before the trial finished" in after[trial_id - 1].error
    assert all(r.status == "completed" for r in after if r.id not in killed)
    for trial_id, record in finished_before.items():  # nothing finished was lost or re-run
        assert after[trial_id - 1].metrics == record.metrics
        assert after[trial_id - 1].finished_at == record.finished_at
    reference = sn.search(SPACE, quadratic, pg.geno.Random(seed=11), num_trials=60, storage=None,
                          progress=False)
    assert [r.dna for r in after] == [r.dna for r in reference.records]
    # asked for, the killed trial is evaluated again with its DNA (a new trial that names it)
    subprocess.run([sys.executable, str(script), db, "61", "1"], check=True, timeout=120)
    third = SQLiteStorage(db).trials("killme")
    retried = [r for r in third if r.retry_of is not None]
    assert len(third) == 61 and sum(r.finished for r in third) == 61
    assert [(r.retry_of, r.dna, r.status) for r in retried] == [(i, before[i].dna, "completed") for i in killed]


def test_pg_sample_with_symnas_backend_persists_and_resumes(tmp_path):
    db = str(tmp_path / "pg.db")
    seen = []
    for value, feedback in pg.sample(SPACE, pg.geno.Random(seed=3), num_examples=6, name="pgs",
                                     backend="symnas", storage=db):
        seen.append(feedback.id)
        feedback(value.n - value.x ** 2)
    for value, feedback in pg.sample(SPACE, pg.geno.Random(seed=3), num_examples=10, name="pgs",
                                     backend="symnas", storage=db):
        seen.append(feedback.id)
        if value.n == 1:
            feedback.skip("n=1 is not interesting")
        else:
            feedback(value.n - value.x ** 2)
    assert seen == list(range(1, 11))
    study = sn.Study.load(db, "pgs")
    assert len(study.trials) == 10
    assert set(study.trials["status"]) <= {"completed", "rejected"}


def test_intermediate_reports_are_stored_and_early_stopping_can_stop():
    class StopAfterTwo(pg.tuning.EarlyStoppingPolicy):
        def should_stop_early(self, trial):
            return len(trial.measurements) >= 2

    from symnas.reporting import report

    def evaluate(v):
        steps = 0
        for step in range(10):
            steps += 1
            if report(step=step, accuracy=0.1 * step):
                break
        return {"reward": float(steps)}

    study = sn.search(SPACE, evaluate, pg.geno.Random(seed=1), num_trials=3, storage=None,
                      early_stopping=StopAfterTwo(), progress=False)
    assert all(r.metrics["reward"] == 2.0 for r in study.records)
    assert all([m["step"] for m in r.measurements] == [0, 1] for r in study.records)
    assert report(step=0, accuracy=1.0) is False  # outside a search it is a no-op


@pytest.mark.parametrize("space", [
    pg.Dict(a=pg.oneof([pg.Dict(x=pg.floatv(0.1, 1.0, scale="log"), y=pg.oneof([1, 2])), 3]),
            b=pg.manyof(2, [1, pg.Dict(z=pg.oneof([5, 6])), 3]), c=pg.oneof(["u", "v"])),
    pg.List([pg.oneof(["none", "skip", "conv"]) for _ in range(6)]),
    pg.oneof([1, 2, 3]),
    pg.manyof(3, ["a", "b", "c", "d"], distinct=False),
    pg.Dict(nested=pg.List([pg.Dict(k=pg.oneof([1, 3]), w=pg.floatv(1e-3, 1.0, scale="log"))])),
])
def test_fast_materializer_equals_pyglove_decode(space):
    materializer = Materializer(space)
    algorithm = pg.geno.Random(seed=0)
    algorithm.setup(materializer.dna_spec)
    for _ in range(30):
        dna = algorithm.propose()
        assert pg.eq(materializer.materialize(dna), materializer.template.decode(dna))


def test_dna_json_round_trips_like_pyglove():
    import json
    from symnas.trial import dna_to_json
    space = pg.Dict(a=pg.oneof([pg.Dict(x=pg.floatv(0.1, 1.0), y=pg.oneof([1, 2])), 3]),
                    b=pg.manyof(2, [1, pg.Dict(z=pg.oneof([5, pg.Dict(w=pg.oneof([7, 8]))])), 3]))
    spec = pg.hyper.template(space).dna_spec()
    algorithm = pg.geno.Random(seed=0)
    algorithm.setup(spec)
    for _ in range(40):
        dna = algorithm.propose()
        assert json.loads(dna_to_json(dna))["value"] == dna.to_json(compact=True)["value"]
        assert pg.DNA.from_json(json.loads(dna_to_json(dna))) == dna


def test_illegal_transformation_in_a_search_is_recorded_as_rejected_with_its_step():
    conv = sn.program.Conv2d(c_in=16, c_out=16, h=8, w=8, k=3)
    space = sn.program.Schedule(conv, steps=[sn.program.Group(pg.oneof([1, 2, 3]))])
    study = sn.search(space, lambda s: -s.flops, sn.algorithms.Random(seed=0), num_trials=8, storage=None,
                      progress=False)
    statuses = {r.status for r in study.records}
    assert statuses == {"completed", "rejected"}
    assert all("groups=3" in r.error and "step 0" in r.error for r in study.records if r.status == "rejected")
