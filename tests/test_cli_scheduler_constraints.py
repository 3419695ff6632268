"""``symnas search --scheduler asha|hyperband`` and ``--constraint``: stored with the study, reused by resume."""
import textwrap

from symnas import cli
from symnas.study import Study

TRAINING_FILE = textwrap.dedent("""
    import pyglove as pg
    from symnas.reporting import report
    space = pg.Dict(q=pg.oneof([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]), width=pg.oneof([1, 2, 3, 4]))
    objectives = "accuracy"
    def evaluate(v):
        for epoch in range(1, 10):
            accuracy = v.q * (1 - 0.5 ** epoch)
            if report(epoch, accuracy=accuracy):
                break
        return {"accuracy": accuracy, "epochs": epoch, "latency_ms": float(v.width)}
""")


def _epochs(study):
    return [r.metrics["epochs"] for r in study.completed]


def test_search_with_asha_stops_trials_early_and_resume_keeps_the_scheduler(tmp_path, capsys):
    space_file = tmp_path / "train.py"
    space_file.write_text(TRAINING_FILE)
    db = tmp_path / "asha.db"
    assert cli.main(["search", str(space_file), "--algorithm", "random", "--seed", "0", "--trials", "12",
                     "--scheduler", "asha", "--max-resource", "9", "--storage", str(db), "--no-progress"]) == 0
    study = Study.load(db)
    assert study.info[cli.SCHEDULER_KEY] == {"kind": "asha", "max_resource": 9}
    assert min(_epochs(study)) < 9 and max(_epochs(study)) == 9   # some stopped at a rung, some trained fully
    assert any(m.get("stop") for r in study.records for m in r.measurements)
    stopped_before = sum(e < 9 for e in _epochs(study))
    assert cli.main(["resume", str(db), "--trials", "20", "--no-progress"]) == 0
    resumed = Study.load(db)
    assert len(resumed.completed) == 20
    assert sum(e < 9 for e in _epochs(resumed)) > stopped_before   # resume prunes with the same scheduler


def test_search_without_a_scheduler_trains_every_trial_fully(tmp_path):
    space_file = tmp_path / "train.py"
    space_file.write_text(TRAINING_FILE)
    db = tmp_path / "plain.db"
    assert cli.main(["search", str(space_file), "--seed", "0", "--trials", "12", "--storage", str(db),
                     "--no-progress"]) == 0
    assert set(_epochs(Study.load(db))) == {9}


def test_search_with_hyperband_runs_its_brackets(tmp_path):
    space_file = tmp_path / "train.py"
    space_file.write_text(TRAINING_FILE)
    db = tmp_path / "hb.db"
    assert cli.main(["search", str(space_file), "--seed", "0", "--trials", "12", "--scheduler", "hyperband",
                     "--min-resource", "1", "--max-resource", "9", "--reduction-factor", "3",
                     "--storage", str(db), "--no-progress"]) == 0
    study = Study.load(db)
    assert study.info[cli.SCHEDULER_KEY] == {"kind": "hyperband", "min_resource": 1, "max_resource": 9,
                                             "reduction_factor": 3}
    assert min(_epochs(study)) < 9


def test_bad_scheduler_arguments_are_one_clear_line(tmp_path, capsys):
    space_file = tmp_path / "train.py"
    space_file.write_text(TRAINING_FILE)
    db = tmp_path / "bad.db"
    for argv, words in [
        (["--scheduler", "hyperband"], ["hyperband needs --max-resource"]),
        (["--scheduler", "asha", "--reduction-factor", "1.5"], ["reduction_factor must be a number >= 2"]),
        (["--scheduler", "asha", "--min-resource", "9", "--max-resource", "3"], ["max_resource (3)", "min_resource (9)"]),
        (["--max-resource", "9"], ["--max-resource apply to a --scheduler"]),
        (["--constraint", "latency_ms=<3"], ["--constraint 'latency_ms=<3'", "METRIC OP NUMBER"]),
    ]:
        assert cli.main(["search", str(space_file), "--storage", str(db), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        for word in words:
            assert word in err, err
    assert not db.exists()


def test_search_with_a_constraint_keeps_best_feasible_and_show_marks_the_rest(tmp_path, capsys):
    space_file = tmp_path / "train.py"
    space_file.write_text(TRAINING_FILE)
    db = tmp_path / "c.db"
    assert cli.main(["search", str(space_file), "--algorithm", "evolution", "--seed", "0", "--trials", "25",
                     "--constraint", "latency_ms<=2", "--storage", str(db), "--no-progress"]) == 0
    study = Study.load(db)
    assert study.constraints == {"latency_ms": ["<=", 2.0]}
    assert study.best_trial.metrics["latency_ms"] <= 2 and study.infeasible
    capsys.readouterr()
    assert cli.main(["show", str(db)]) == 0
    assert "completed trials are infeasible" in capsys.readouterr().out
    assert cli.main(["resume", str(db), "--trials", "30", "--no-progress"]) == 0
    assert len(Study.load(db).completed) == 30 and all(
        "feasible" in r.metrics for r in Study.load(db).completed)
