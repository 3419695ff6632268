"""Promotion-based ASHA/Hyperband in sn.search: trials pause at rungs, are stored as ``paused`` and
resume from the checkpoint their evaluator saved (docs/multi_fidelity.md)."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pyglove as pg
import pytest

import symnas as sn
from symnas import cli
from symnas.reporting import checkpoint, report
from symnas.storage import open_storage

SPACE = pg.Dict(q=pg.floatv(0.0, 1.0))
MAX_EPOCHS = 9


def make_evaluator(log_dir, latency=False):
    """A toy training loop that saves {"epoch": e} before each report and appends every epoch it
    trains to ``<log_dir>/<q>.log`` (files, so worker processes log too)."""
    log_dir = str(log_dir)

    def evaluate(value):
        ckpt = checkpoint()
        start = 0
        if ckpt is not None and ckpt.resumed:
            with open(ckpt.file("state.json")) as f:
                start = json.load(f)["epoch"]
        accuracy = 0.0
        for epoch in range(start + 1, MAX_EPOCHS + 1):
            with open(os.path.join(log_dir, f"{value.q!r}.log"), "a") as f:
                f.write(f"{epoch}\n")
            accuracy = value.q * (1 - 0.5 ** epoch)
            if ckpt is not None:
                with open(ckpt.file("state.json"), "w") as f:
                    json.dump({"epoch": epoch}, f)
            metrics = {"accuracy": accuracy}
            if latency:
                metrics["latency"] = 1.0 - value.q + 0.01 * epoch
            if report(epoch, **metrics):
                break
        return dict(metrics)

    return evaluate


def epochs_trained(log_dir):
    """q -> the epochs trained, in order, over all of the trial's evaluations."""
    return {path[:-4]: [int(line) for line in open(os.path.join(log_dir, path))]
            for path in os.listdir(log_dir) if path.endswith(".log")}


def check_resumed_from_checkpoints(study, log_dir, num_trials):
    trained = epochs_trained(log_dir)
    records = study.records
    assert len(records) == num_trials and {r.status for r in records} == {"completed"}
    for epochs in trained.values():   # every epoch of every trial trained once: resumed at k+1, never from 1
        assert epochs == list(range(1, len(epochs) + 1))
    total = sum(len(e) for e in trained.values())
    assert total < num_trials * MAX_EPOCHS
    resumed = [r for r in records if any(m.get("pause") for m in r.measurements[:-1])]
    assert resumed, "some trial was paused at a rung and promoted later"
    for record in resumed:
        steps = [m["step"] for m in record.measurements]
        assert steps == list(range(1, len(steps) + 1))   # one measurement per epoch across the pause
    assert any(r.measurements[-1]["step"] == MAX_EPOCHS for r in records)
    return total


def test_promote_mode_resumes_paused_trials_at_the_next_epoch_sequentially(tmp_path):
    scheduler = sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=3, mode="promote")
    study = sn.search(SPACE, make_evaluator(tmp_path), sn.algorithms.Random(seed=0), num_trials=12,
                      storage=str(tmp_path / "runs.db"), objectives="accuracy", progress=False,
                      scheduler=scheduler, checkpoint_root=tmp_path / "ckpt")
    total = check_resumed_from_checkpoints(study, str(tmp_path), 12)
    assert total <= 12 * MAX_EPOCHS // 2
    assert scheduler.paused == []
    never_promoted = [r for r in study.records if r.measurements[-1].get("pause")]
    assert never_promoted and all(r.measurements[-1].get("stop") for r in never_promoted)   # pruned at the end
    assert not any(os.scandir(tmp_path / "ckpt" / study.name))   # finished trials' folders removed


def test_promote_mode_resumes_paused_trials_in_worker_processes(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    scheduler = sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=3, mode="promote")
    study = sn.search(SPACE, make_evaluator(logs), sn.algorithms.Random(seed=1), num_trials=12,
                      storage=None, objectives="accuracy", progress=False, scheduler=scheduler, workers=2)
    check_resumed_from_checkpoints(study, str(logs), 12)


def test_promote_mode_with_hyperband_and_two_objectives(tmp_path):
    scheduler = sn.schedulers.Hyperband(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=3, mode="promote")
    study = sn.search(SPACE, make_evaluator(tmp_path, latency=True), sn.algorithms.NSGA2(population_size=4, seed=0),
                      num_trials=15, storage=None, objectives={"accuracy": "max", "latency": "min"},
                      progress=False, scheduler=scheduler)
    check_resumed_from_checkpoints(study, str(tmp_path), 15)
    assert study.pareto_front()


def test_an_evaluator_that_saves_nothing_is_warned_and_retrained(tmp_path):
    def evaluate(value):
        for epoch in range(1, MAX_EPOCHS + 1):
            accuracy = value.q * (1 - 0.5 ** epoch)
            if report(epoch, accuracy=accuracy):
                break
        return {"accuracy": accuracy}

    with pytest.warns(RuntimeWarning, match="saves nothing"):
        study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=9, storage=None,
                          objectives="accuracy", progress=False,
                          scheduler=sn.schedulers.ASHA(max_resource=MAX_EPOCHS, mode="promote"))
    assert len(study.records) == 9 and {r.status for r in study.records} == {"completed"}


def test_the_pyglove_backend_still_refuses_promote_mode():
    with pytest.raises(ValueError, match="mode='promote'.*use mode='stop'"):
        sn.session.SearchSession(SPACE, sn.algorithms.Random(), storage=None,
                                 early_stopping=sn.schedulers.ASHA(max_resource=9, mode="promote"))


DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import symnas as sn
    from test_promote import SPACE, MAX_EPOCHS, make_evaluator
    log_dir, db, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    train = make_evaluator(log_dir)

    def evaluate(value):
        from symnas.reporting import report
        import symnas.reporting as reporting
        original = reporting._current_reporter.get()
        def reporter(step, metrics):
            answer = original(step, metrics)
            if kill_at and sum(p.endswith(".log") for p in os.listdir(log_dir)) >= kill_at and step == 2 \
                    and not answer:
                os.kill(os.getpid(), signal.SIGKILL)     # the driver dies mid-trial, its state saved at epoch 2
            return answer
        token = reporting._current_reporter.set(reporter)
        try:
            return train(value)
        finally:
            reporting._current_reporter.reset(token)

    evaluate.symnas_fingerprint = "promote-kill-test"
    sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=12, storage=db, name="kill",
              objectives="accuracy", progress=False,
              scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS, mode="promote"))
""")


def test_paused_trials_survive_a_kill_9_of_the_driver_and_resume_from_checkpoints(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=os.path.dirname(__file__)))
    db = str(tmp_path / "runs.db")
    first = subprocess.run([sys.executable, str(script), str(logs), db, "6"], capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr
    storage = open_storage(db)
    statuses = {t.id: t.status for t in storage.trials("kill")}
    assert "paused" in statuses.values() and list(statuses.values()).count("running") == 1
    killed = [i for i, s in statuses.items() if s == "running"][0]
    cli.main(["show", db])
    shown = capsys.readouterr().out
    assert f"{list(statuses.values()).count('paused')} paused" in shown, shown
    storage.close()
    optuna = pytest.importorskip("optuna")
    from symnas.dashboard import OptunaStorageView
    states = {t.number + 1: t.state for t in optuna.load_study(study_name="kill", storage=OptunaStorageView(db)).trials}
    assert all((states[i] == optuna.trial.TrialState.WAITING) == (s == "paused") for i, s in statuses.items())

    second = subprocess.run([sys.executable, str(script), str(logs), db, "0"], capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    study = sn.Study.load(db, "kill")
    check_resumed_from_checkpoints(study, str(logs), 12)
    killed_record = study.records[killed - 1]
    assert [m["step"] for m in killed_record.measurements][:3] == [1, 2, 3]   # resumed after epoch 2
