"""The ``symnas`` command line: search, show, resume, space files, and clear errors on bad input."""
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from symnas import cli
from symnas.storage import SQLiteStorage
from symnas.study import Study


def run_cli(*args, cwd=None):
    """Runs the console script as a user would (a fresh process), returning the completed process."""
    return subprocess.run([sys.executable, "-m", "symnas.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=240, cwd=cwd)


def test_search_show_and_resume_a_builtin_study(tmp_path, capsys):
    db = tmp_path / "runs.db"
    assert cli.main(["search", "toy", "--algorithm", "evolution", "--trials", "12", "--seed", "1",
                     "--storage", str(db), "--name", "demo", "--no-progress"]) == 0
    study = Study.load(db, "demo")
    assert len(study.completed) == 12
    assert study.info["cli_source"] == {"kind": "builtin", "name": "toy"}

    assert cli.main(["show", str(db), "--plot", str(tmp_path / "curve.png")]) == 0
    shown = capsys.readouterr().out
    assert "best trial" in shown and "lr =" in shown and "12 completed" in shown
    assert (tmp_path / "curve.png").stat().st_size > 1000

    assert cli.main(["resume", str(db), "--trials", "20", "--no-progress"]) == 0
    resumed = Study.load(db, "demo")
    assert [r.id for r in resumed.records] == list(range(1, 21))
    assert all(r.status == "completed" for r in resumed.records)


def test_search_with_two_workers_from_the_console_script(tmp_path):
    result = run_cli("search", "toy", "--trials", "6", "--workers", "2", "--storage", tmp_path / "w.db",
                     "--algorithm", "reinforce")
    assert result.returncode == 0, result.stderr
    assert "6 trials 6 completed" in result.stdout
    assert "6/6" in result.stderr  # the progress bar


SPACE_FILE = """
import pyglove as pg

space = pg.Dict(a=pg.oneof([1, 2, 3]), b=pg.floatv(0.0, 1.0))
objectives = {"score": "max", "cost": "min"}


def evaluate(value):
    return {"score": value.a + value.b, "cost": value.a * 2.0}
"""


def test_a_space_file_with_two_objectives_shows_a_pareto_front_and_resumes(tmp_path, capsys):
    space_file = tmp_path / "myspace.py"
    space_file.write_text(SPACE_FILE)
    db = tmp_path / "mo.db"
    algorithm = "nsga2" if hasattr(__import__("symnas").algorithms, "NSGA2") else None
    if algorithm is None:
        pytest.skip("sn.algorithms.NSGA2 is not available yet")
    assert cli.main(["search", str(space_file), "--algorithm", algorithm, "--trials", "8",
                     "--storage", str(db), "--no-progress"]) == 0
    assert cli.main(["show", str(db)]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert cli.main(["resume", str(db), "--trials", "10", "--no-progress", "--workers", "2"]) == 0
    assert len(Study.load(db).completed) == 10


def test_a_space_file_evaluated_in_worker_processes(tmp_path):
    space_file = tmp_path / "single.py"
    space_file.write_text("import pyglove as pg\nspace = pg.Dict(a=pg.oneof([1, 2, 3]))\n"
                          "def evaluate(v):\n    return float(v.a)\n")
    assert cli.main(["search", str(space_file), "--trials", "4", "--workers", "2",
                     "--storage", str(tmp_path / "f.db"), "--no-progress"]) == 0
    study = Study.load(tmp_path / "f.db")
    assert len(study.completed) == 4
    assert study.info["cli_source"]["path"] == str(space_file.resolve())


def expect_error(capsys, argv, *words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    return err


def test_unknown_algorithm_and_non_positive_workers_are_named(tmp_path, capsys):
    db = tmp_path / "x.db"
    expect_error(capsys, ["search", "toy", "--algorithm", "simulated-annealing", "--storage", str(db)],
                 "unknown algorithm 'simulated-annealing'", "reinforce")
    expect_error(capsys, ["search", "toy", "--workers", "0", "--storage", str(db)], "--workers", "got 0")
    assert not db.exists()


def test_a_space_file_without_a_space_is_named(tmp_path, capsys):
    bad = tmp_path / "nospace.py"
    bad.write_text("def evaluate(v):\n    return 1.0\n")
    expect_error(capsys, ["search", str(bad), "--storage", str(tmp_path / "x.db")], "must define space")
    expect_error(capsys, ["search", "no-such-builtin", "--storage", str(tmp_path / "x.db")],
                 "Unknown search 'no-such-builtin'")


def test_storage_in_a_missing_or_read_only_directory_is_named(tmp_path, capsys):
    expect_error(capsys, ["search", "toy", "--storage", str(tmp_path / "missing" / "x.db")], "does not exist")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    # root may write anywhere, so also use a folder no one may create files in
    target = "/proc/x.db" if os.geteuid() == 0 else str(read_only / "x.db")
    expect_error(capsys, ["search", "toy", "--storage", target], target)


def test_unreachable_ray_address_is_named(tmp_path, capsys):
    expect_error(capsys, ["search", "toy", "--backend", "ray", "--address", "127.0.0.1:9",
                          "--storage", str(tmp_path / "x.db")], "Cannot reach a Ray cluster at '127.0.0.1:9'")


def test_corrupted_and_incompatible_study_files_are_named_and_left_untouched(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    expect_error(capsys, ["show", str(corrupt)], "not a readable symnas study file")
    expect_error(capsys, ["search", "toy", "--storage", str(corrupt)], "not a readable symnas study file")
    assert corrupt.read_bytes() == b"this is not sqlite" * 100

    future = tmp_path / "future.db"
    assert cli.main(["search", "toy", "--trials", "3", "--storage", str(future), "--no-progress"]) == 0
    with sqlite3.connect(future) as connection:
        connection.execute("UPDATE symnas_meta SET value='99' WHERE key='schema_version'")
    expect_error(capsys, ["show", str(future)], "schema version 99")
    expect_error(capsys, ["resume", str(future)], "schema version 99")
    with sqlite3.connect(future) as connection:
        assert connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 3


def test_resume_of_a_study_not_started_from_the_command_line_explains_why(tmp_path, capsys):
    import pyglove as pg
    import symnas as sn
    db = tmp_path / "py.db"
    sn.search(pg.Dict(x=pg.oneof([1, 2])), lambda v: v.x, num_trials=2, storage=db, progress=False)
    expect_error(capsys, ["resume", str(db)], "not started by the symnas command line")
    expect_error(capsys, ["show", str(db), "--name", "nope"], "no study named 'nope'")


def test_nasbench201_builtin_looks_architectures_up_in_the_table(nasbench201_table, tmp_path, capsys):
    db = tmp_path / "nb.db"
    assert cli.main(["search", "nasbench201", "--algorithm", "evolution", "--trials", "20", "--seed", "0",
                     "--storage", str(db), "--no-progress"]) == 0
    study = Study.load(db)
    assert len(study.completed) == 20
    assert 0.0 < study.best_trial.metrics["accuracy"] <= 100.0 and "test_accuracy" in study.best_trial.metrics
    assert cli.main(["show", str(db)]) == 0
    assert "NASBench201(" in capsys.readouterr().out


def test_nasbench201_builtin_without_data_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SYMNAS_DATA", raising=False)
    expect_error(capsys, ["search", "nasbench201", "--storage", str(tmp_path / "nb.db")], "SYMNAS_DATA")
    assert not (tmp_path / "nb.db").exists()


WIDE_SPACE_FILE = """
import pyglove as pg

space = pg.Dict(architecture=pg.oneof(["a_rather_long_candidate_name_" + str(i) * 30 for i in range(4)]),
                learning_rate=pg.floatv(1e-5, 1e-1, scale="log"), depth=pg.oneof([1, 2, 3]))


def evaluate(value):
    if value.depth == 3:
        raise RuntimeError("this evaluator refuses depth three with a message long enough to wrap a terminal")
    return {"validation_accuracy": 0.5 + value.learning_rate, "latency_in_milliseconds": 3.14159,
            "parameter_count_in_millions": 1.5, "floating_point_operations": 123456789.0,
            "reward": value.learning_rate}
"""


def test_show_fits_80_columns_and_wide_shows_everything(tmp_path, capsys):
    space = tmp_path / "wide.py"
    space.write_text(WIDE_SPACE_FILE)
    db = tmp_path / "wide.db"
    cli.main(["search", str(space), "--trials", "12", "--seed", "0", "--storage", str(db), "--no-progress"])
    capsys.readouterr()
    assert cli.main(["show", str(db)]) == 0
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "status" in narrow and "reward" in narrow and "--wide" in narrow and "best trial" in narrow
    assert '"_type"' not in narrow      # the DNA column only with --wide
    assert cli.main(["show", str(db), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert max(len(line) for line in wide.splitlines()) > 80
    assert "dna" in wide and "parameter_count_in_millions" in wide
    assert any(f"a_rather_long_candidate_name_{str(i) * 30}'" in wide for i in range(4))


@pytest.mark.parametrize("name", sorted(set(cli.ALGORITHMS) - {"canvas"}))
def test_every_algorithm_name_of_the_cli_runs_a_builtin_search(tmp_path, name):
    db = tmp_path / "runs.db"
    assert cli.main(["search", "toy", "--algorithm", name, "--trials", "6", "--seed", "0",
                     "--storage", str(db), "--no-progress"]) == 0
    assert len(Study.load(db).completed) == 6
