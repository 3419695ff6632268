"""Trials on a real local Ray cluster (a head and a worker node on 127.0.0.1, started and stopped here)."""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pyglove as pg
import pytest

ray = pytest.importorskip("ray")

import symnas as sn  # noqa: E402
from symnas.builtin_spaces import toy_objective  # noqa: E402

SPACE = pg.Dict(x=pg.floatv(-1.0, 1.0), lr=pg.floatv(1e-4, 1.0, scale="log"), n=pg.oneof([1, 2, 3]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_cli() -> str:
    return shutil.which("ray") or str(pathlib.Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node with one CPU each, all on 127.0.0.1."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    # A throw-away cluster on 127.0.0.1: no auth token (Ray >= 2.5x would otherwise write one to
    # ~/.ray that a later cluster's worker nodes do not pick up).
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    def ray_start(*args):
        result = subprocess.run([_ray_cli(), "start", *args, *common], capture_output=True, text=True,
                                env=env, timeout=180)
        if result.returncode != 0:
            pytest.fail(f"ray start {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")

    try:
        ray_start("--head", f"--port={port}", "--include-dashboard=false")
        ray_start(f"--address={address}")
        yield address
    finally:
        subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, timeout=120)
        patch.undo()


def test_trials_complete_on_the_cluster_and_equal_a_sequential_run(cluster):
    sequential = sn.search(SPACE, toy_objective, sn.algorithms.Random(seed=7), num_trials=8, storage=None,
                           progress=False)
    on_ray = sn.search(SPACE, toy_objective, sn.algorithms.Random(seed=7), num_trials=8, storage=None,
                       progress=False, backend="ray", address=cluster, resources={"num_cpus": 1})
    assert [(r.id, r.dna, r.metrics) for r in on_ray.records] == \
           [(r.id, r.dna, r.metrics) for r in sequential.records]
    assert all(r.status == "completed" for r in on_ray.records)


def test_killing_a_ray_worker_mid_trial_fails_that_trial_only(cluster, tmp_path):
    pid_file = tmp_path / "victim.pid"

    def evaluate(value):
        if value.n == 2:  # the victim: announces its process and waits to be killed
            pid_file.write_text(str(os.getpid()))
            time.sleep(60)
        return float(value.n)

    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not pid_file.exists():
            time.sleep(0.05)
        time.sleep(0.2)
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    study = sn.search(pg.Dict(n=pg.oneof([1, 2, 3])), evaluate, pg.geno.Sweeping(), num_trials=None,
                      storage=tmp_path / "ray.db", progress=False, backend="ray", address=cluster)
    thread.join(5)
    assert killed
    by_n = {r.to_object().n: r for r in study.records}
    assert by_n[1].status == by_n[3].status == "completed"
    assert by_n[2].status == "failed" and "Ray task failed" in by_n[2].error
    assert "WorkerCrashedError" in by_n[2].error or "died" in by_n[2].error.lower()


def test_a_trial_past_its_timeout_is_cancelled_and_failed(cluster):
    def evaluate(value):
        if value.n == 1:
            time.sleep(60)
        return float(value.n)

    study = sn.search(pg.Dict(n=pg.oneof([1, 2])), evaluate, pg.geno.Sweeping(), num_trials=None,
                      storage=None, progress=False, backend="ray", address=cluster, trial_timeout=3)
    by_n = {r.to_object().n: r for r in study.records}
    assert by_n[1].status == "failed" and by_n[1].error.startswith("timed out after 3 s")
    assert by_n[2].status == "completed", by_n[2].error


def test_reports_from_ray_tasks_reach_storage_and_early_stopping(cluster):
    from symnas.reporting import report

    def evaluate(value):
        for step in range(3):
            if report(step=step, partial=value.n * step):
                return {"reward": -1.0, "stopped_at": step}
        return float(value.n)

    class StopAtStepOne(pg.tuning.EarlyStoppingPolicy):
        def should_stop_early(self, trial):
            return trial.measurements[-1].step >= 1

    study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=2), num_trials=4, storage=None,
                      progress=False, backend="ray", address=cluster, early_stopping=StopAtStepOne())
    assert len(study.records) == 4
    for record in study.records:
        assert record.status == "completed", record.error
        assert [m["step"] for m in record.measurements] == [0, 1]
        assert [m["metrics"]["partial"] for m in record.measurements] == [0, record.to_object().n]
        assert record.metrics["stopped_at"] == 1


def test_per_trial_resources_no_node_offers_are_a_clear_error(cluster):
    with pytest.raises(ValueError, match="No node of the Ray cluster offers"):
        sn.search(SPACE, toy_objective, num_trials=2, storage=None, progress=False, backend="ray",
                  address=cluster, resources={"num_cpus": 2})


def test_an_unreachable_address_is_a_connection_error_naming_it(tmp_path):
    port = _free_port()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        sn.search(SPACE, toy_objective, num_trials=2, storage=tmp_path / "u.db", progress=False,
                  backend="ray", address=f"127.0.0.1:{port}")
    assert not (tmp_path / "u.db").exists()  # nothing was created before the check


def test_the_command_line_runs_a_search_on_the_cluster(cluster, tmp_path, capsys):
    from symnas import cli
    db = tmp_path / "cli.db"
    assert cli.main(["search", "toy", "--trials", "4", "--storage", str(db), "--backend", "ray",
                     "--address", cluster, "--cpus-per-trial", "1", "--no-progress"]) == 0
    assert "4 trials 4 completed" in capsys.readouterr().out
    assert len(sn.Study.load(db).completed) == 4


def test_asha_stops_trials_running_as_ray_tasks(cluster):
    from symnas.reporting import report

    def evaluate(value):
        for epoch in range(1, 10):
            accuracy = value.n * (1 - 0.5 ** epoch) + value.x
            if report(step=epoch, accuracy=accuracy):
                break
        return {"accuracy": accuracy, "epochs": epoch}

    study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=4), num_trials=8, storage=None, progress=False,
                      objectives="accuracy", backend="ray", address=cluster,
                      scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=9))
    assert len(study.completed) == 8
    stopped = [r for r in study.completed if r.metrics["epochs"] < 9]
    assert stopped and all(r.measurements[-1].get("stop") for r in stopped)
    assert all(r.measurements[-1]["step"] in (1, 3) for r in stopped)
