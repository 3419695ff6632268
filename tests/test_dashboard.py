"""symnas dashboard: optuna-dashboard on a symnas study file, through a read-only Optuna storage view."""
import json
import os
import shutil
import sqlite3
import threading
import time
import urllib.request

import pyglove as pg
import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_dashboard")

import symnas as sn  # noqa: E402
from symnas.cli import main  # noqa: E402
from symnas.dashboard import DashboardServer, OptunaStorageView, ReadOnlyStudyError  # noqa: E402
from symnas.errors import TrialRejected  # noqa: E402
from symnas.reporting import report  # noqa: E402
from symnas.storage import SQLiteStorage  # noqa: E402

TrialState = optuna.trial.TrialState

SPACE = pg.Dict(op=pg.oneof([pg.Dict(kernel=pg.oneof([3, 5])), "pool", "skip"]),
                lr=pg.floatv(1e-4, 1e-1, scale="log"), width=pg.oneof([8, 16, 32]))


def evaluate(value):
    if value.op == "skip" and value.width == 8:
        raise RuntimeError("boom")
    if value.op == "skip" and value.width == 16:
        raise TrialRejected("too slow", metrics={"latency_ms": 99.0})
    quality = value.width / 32 + (0.5 if value.op == "pool" else 0.0) - abs(value.lr - 0.01)
    for epoch in range(1, 10):
        accuracy = quality * (1 - 0.5 ** epoch)
        if report(epoch, accuracy=accuracy):
            break
    return {"accuracy": accuracy, "epochs": epoch, "params": value.width * 100}


def two_objectives(value):
    return {"accuracy": value.x, "latency_ms": value.y * (1.5 - value.x)}


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dash") / "runs.db")
    sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=30, storage=path, name="cnn",
              objectives="accuracy", progress=False,
              scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=9))
    sn.search(pg.Dict(x=pg.floatv(0.0, 1.0), y=pg.oneof([1, 2, 3])), two_objectives,
              sn.algorithms.NSGA2(seed=0), num_trials=24, storage=path, name="pareto",
              objectives={"accuracy": "max", "latency_ms": "min"}, progress=False)
    return path


def test_each_symnas_study_is_an_optuna_study_with_its_objectives(study_file):
    view = OptunaStorageView(study_file)
    studies = {s.study_name: s for s in view.get_all_studies()}
    assert set(studies) == {"cnn", "pareto"}
    assert studies["cnn"].directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert studies["pareto"].directions == [optuna.study.StudyDirection.MAXIMIZE,
                                            optuna.study.StudyDirection.MINIMIZE]
    pareto = optuna.load_study(study_name="pareto", storage=view)
    assert pareto.metric_names == ["accuracy", "latency_ms"]


def test_trials_carry_dnaspec_params_metric_values_and_objects(study_file):
    view = OptunaStorageView(study_file)
    study = optuna.load_study(study_name="cnn", storage=view)
    symnas_study = sn.Study.load(study_file, "cnn")
    trials = study.trials
    assert len(trials) == 30 == len(symnas_study.records)
    for trial, record in zip(trials, symnas_study.records):
        assert trial.number == record.id - 1
        assert trial.user_attrs["status"] == record.status
        obj = record.to_object()
        assert trial.params["lr"] == pytest.approx(obj.lr)
        assert trial.params["width"] == obj.width
        if isinstance(obj.op, str):
            assert trial.params["op"] == obj.op and "op[=0/3].kernel" not in trial.params
        else:   # the conditional decision exists only where its branch was taken
            assert trial.params["op"] == "{kernel=…}" and trial.params["op[=0/3].kernel"] == obj.op.kernel
        assert trial.user_attrs["object"] == pg.format(obj, compact=True, python_format=True)
    dists = trials[0].distributions
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["width"] == optuna.distributions.CategoricalDistribution([8, 16, 32])
    assert dists["op"].choices[1:] == ("pool", "skip")


def test_states_map_failed_rejected_and_stopped_trials(study_file):
    view = OptunaStorageView(study_file)
    trials = optuna.load_study(study_name="cnn", storage=view).trials
    records = sn.Study.load(study_file, "cnn").records
    states = {}
    for trial, record in zip(trials, records):
        states.setdefault(trial.state, []).append(trial)
        if record.status == "failed":
            assert trial.state == TrialState.FAIL and trial.user_attrs["error"] == "RuntimeError: boom"
        elif record.status == "rejected":
            assert trial.state == TrialState.FAIL and trial.user_attrs["latency_ms"] == 99.0
            assert trial.user_attrs["error"] == "too slow"
        elif record.metrics["epochs"] < 9:   # stopped by ASHA at a rung
            assert trial.state == TrialState.PRUNED and trial.values == [record.metrics["accuracy"]]
            assert max(trial.intermediate_values) == record.metrics["epochs"]
        else:
            assert trial.state == TrialState.COMPLETE and trial.value == record.metrics["accuracy"]
            assert trial.intermediate_values == {
                m["step"]: m["metrics"]["accuracy"] for m in record.measurements}
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= set(states)


def test_best_trial_importance_and_pareto_front_match_symnas(study_file):
    view = OptunaStorageView(study_file)
    study = optuna.load_study(study_name="cnn", storage=view)
    best = sn.Study.load(study_file, "cnn").best_trial
    assert study.best_trial.number == best.id - 1 and study.best_value == best.metrics["accuracy"]
    importances = optuna.importance.get_param_importances(study)
    assert {"op", "lr", "width"} <= set(importances)
    pareto = optuna.load_study(study_name="pareto", storage=view)
    assert sorted(t.number + 1 for t in pareto.best_trials) == \
        sorted(r.id for r in sn.Study.load(study_file, "pareto").pareto_front())


def test_the_view_sees_new_and_running_trials_and_converts_finished_ones_once(tmp_path):
    path = str(tmp_path / "live.db")
    space = pg.Dict(x=pg.floatv(0.0, 1.0))
    sn.search(space, lambda v: v.x, sn.algorithms.Random(seed=1), num_trials=3, storage=path, name="s",
              progress=False)
    view = OptunaStorageView(path)
    study_id = view.get_study_id_from_name("s")
    first = view.get_all_trials(study_id, deepcopy=False)
    assert len(first) == 3
    storage = SQLiteStorage(path)
    storage.create_trial("s", storage.trials("s")[0].dna, time.time(), "elsewhere:1")   # another machine's
    sn.search(space, lambda v: v.x, sn.algorithms.Random(seed=1), num_trials=5, storage=path, name="s",
              progress=False)
    second = view.get_all_trials(study_id, deepcopy=False)
    assert [t.state for t in second].count(TrialState.RUNNING) == 1
    assert sum(t.state == TrialState.COMPLETE for t in second) == 5
    assert all(a is b for a, b in zip(first, second[:3]))   # finished trials: converted once


def test_the_view_refuses_writes(study_file):
    view = OptunaStorageView(study_file)
    with pytest.raises(ReadOnlyStudyError, match="read-only"):
        view.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "new")
    with pytest.raises(ReadOnlyStudyError):
        view.set_trial_user_attr(view.get_trial_id_from_study_id_trial_number(1, 0), "k", 1)
    with pytest.raises(FileNotFoundError, match="No study file"):
        OptunaStorageView(study_file + ".missing")


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_the_server_answers_the_dashboards_api_and_follows_a_running_search(study_file, tmp_path):
    path = str(tmp_path / "runs.db")
    with sqlite3.connect(study_file) as source, sqlite3.connect(path) as copy:
        source.backup(copy)   # WAL mode: a file copy may miss the latest trials
    with DashboardServer(path, port=0) as server:
        api = server.url.replace("/dashboard", "/api")
        studies = {s["study_name"]: s for s in _get(api + "/studies")["study_summaries"]}
        cnn = studies["cnn"]["study_id"]
        detail = _get(f"{api}/studies/{cnn}")
        assert len(detail["trials"]) == 30 and detail["objective_names"] == ["accuracy"]
        best = sn.Study.load(path, "cnn").best_trial
        assert detail["best_trials"][0]["number"] == best.id - 1
        assert detail["best_trials"][0]["values"] == [best.metrics["accuracy"]]
        importances = _get(f"{api}/studies/{cnn}/param_importances")["param_importances"][0]
        assert {"op", "lr", "width"} <= {i["name"] for i in importances}
        pareto = _get(f"{api}/studies/{studies['pareto']['study_id']}")
        assert len(pareto["best_trials"]) == len(sn.Study.load(path, "pareto").pareto_front())
        # a search writing the same file meanwhile: its trials appear (the dashboard caches 2 s)
        sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=34, storage=path, name="cnn",
                  objectives="accuracy", progress=False,
                  scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=9))
        deadline = time.monotonic() + 15
        while len(_get(f"{api}/studies/{cnn}")["trials"]) != 34:
            assert time.monotonic() < deadline, "new trials never reached the dashboard"
            time.sleep(0.5)


def test_dashboard_command_errors_are_one_line(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "missing.db")]) == 2
    assert "no study file at" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    SQLiteStorage(str(empty))
    assert main(["dashboard", str(empty)]) == 2
    assert "holds no study" in capsys.readouterr().err


def test_dashboard_command_refuses_a_bad_port(study_file, capsys):
    assert main(["dashboard", study_file, "--port", "70000"]) == 2
    assert "port must be an integer in [0, 65535]" in capsys.readouterr().err


# -- a real browser ---------------------------------------------------------------------------------
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = _chromium(), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("no chromium + chromedriver on this machine (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them when apt is available)")
    from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.binary_location = binary
    chrome = webdriver.Chrome(service=Service(driver), options=options)   # no Selenium Manager download
    yield chrome
    chrome.quit()


def _page_text(browser, url, *expected, timeout=30):
    """Loads ``url`` and waits until every expected text is on the page; returns the page text."""
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    browser.get(url)
    deadline = time.monotonic() + timeout
    while True:
        text = browser.find_element(By.TAG_NAME, "body").text
        missing = [e for e in expected if e not in text]
        if not missing:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never showed {missing}; it shows:\n{text[:2000]}")
        time.sleep(0.25)


@pytest.mark.browser
def test_the_dashboard_page_shows_the_study_its_trial_count_and_best_value(study_file, browser):
    best = sn.Study.load(study_file, "cnn").best_trial
    with DashboardServer(study_file, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        studies = _page_text(browser, server.url, "cnn", "pareto")
        assert "MAXIMIZE, MINIMIZE" in studies
        top = _page_text(browser, server.url + "/studies/1", "cnn", "History", "Hyperparameter Importance",
                         f"Best Trial (number={best.id - 1})")
        assert str(best.metrics["accuracy"]) in top
        _page_text(browser, server.url + "/studies/1/trials", "30 Trials")
        _page_text(browser, server.url + "/studies/1/smartSelection", "Parallel Coordinate", "Param lr",
                   "Param width", "Param op")
        _page_text(browser, server.url + "/studies/2", "pareto", "Pareto Front", "Best Trials")


@pytest.mark.parametrize("space", [
    SPACE,
    pg.Dict(a=pg.oneof([pg.Dict(x=pg.floatv(0.1, 1.0, scale="log"), y=pg.oneof([1, 2])), 3]),
            b=pg.manyof(2, [1, pg.Dict(z=pg.oneof([5, 6])), 3]), c=pg.oneof(["u", "v"])),
    pg.List([pg.oneof(["none", "skip", "conv"]) for _ in range(4)]),
    pg.oneof([1, 2, 3]),
    pg.manyof(3, ["a", "b", "c", "d"], distinct=False),
    pg.Dict(op=pg.oneof([pg.Dict(k=pg.oneof([3, 5]), j=pg.oneof([pg.Dict(q=pg.oneof([1, 2])), 7])), "pool"]),
            lr=pg.floatv(1e-4, 1e-1)),
])
def test_stored_dna_is_read_back_as_pyglove_reads_it(space):
    from symnas.algorithms._decisions import dna_from_compact
    from symnas.trial import dna_to_json
    algorithm = sn.algorithms.Random(seed=1)
    algorithm.setup(pg.dna_spec(space))
    for _ in range(50):
        text = dna_to_json(algorithm.propose())
        fast = dna_from_compact(json.loads(text)["value"])
        slow = pg.DNA.from_json(json.loads(text))
        assert fast == slow and fast.to_json() == slow.to_json()


def test_objects_are_written_from_their_json_without_building_them():
    from symnas.dashboard.optuna_view import _json_text
    trainer_json = {"_type": "my.private.module.Trainer", "lr": 0.001, "betas": ["__tuple__", 0.9, 0.999],
                    "layers": [{"_type": "my.private.module.Conv", "width": 8}], "extra": {"k": None}}
    assert _json_text(trainer_json) == \
        "Trainer(lr=0.001, betas=(0.9, 0.999), layers=[Conv(width=8)], extra={'k': None})"


def test_dashboard_command_serves_the_file_until_interrupted(study_file):
    import signal
    import subprocess
    import sys
    process = subprocess.Popen([sys.executable, "-m", "symnas.cli", "dashboard", study_file, "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "optuna-dashboard on" in line and "http://127.0.0.1:" in line, line
        url = line.split()[3]
        names = {s["study_name"] for s in _get(url.replace("/dashboard", "/api/studies"))["study_summaries"]}
        assert names == {"cnn", "pareto"}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
