"""Bad input gets one clear line, in Python and on the command line; a search that completed nothing
says why and exits non-zero; a changed evaluator is not silently resumed."""
import math
import subprocess
import sys
import textwrap

import pyglove as pg
import pytest

import symnas as sn
from symnas import cli
from symnas.storage import StudyMismatch

SPACE = pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2, 3]))


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "symnas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


# -- Python ------------------------------------------------------------------------------------------
def test_a_plain_dict_space_is_refused_before_the_study_starts(tmp_path):
    db = tmp_path / "d.db"
    with pytest.raises(TypeError, match=r"must be a PyGlove symbolic value.*got dict \(wrap it: pg.Dict"):
        sn.search({"x": pg.floatv(0.0, 1.0)}, lambda v: v["x"], num_trials=3, storage=db, progress=False)
    assert not db.exists()


@pytest.mark.parametrize("low, high", [(0.0, math.inf), (-math.inf, 1.0), (0.0, math.nan)])
def test_an_infinite_float_range_is_refused_naming_it(low, high):
    with pytest.raises(ValueError, match=r"floatv 'x': bounds must be finite"):
        sn.search(pg.Dict(x=pg.floatv(low, high)), lambda v: v.x, num_trials=3, storage=None, progress=False)


@pytest.mark.parametrize("num_trials", [True, 2.5, "10", -1])
def test_num_trials_must_be_a_non_negative_integer(num_trials):
    with pytest.raises(ValueError, match="num_trials must be a non-negative integer"):
        sn.search(SPACE, lambda v: v.x, num_trials=num_trials, storage=None, progress=False)


@pytest.mark.parametrize("name", [123, "", "   ", ["a"]])
def test_the_study_name_must_be_a_non_empty_string(name):
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        sn.search(SPACE, lambda v: v.x, num_trials=1, storage=None, name=name, progress=False)


@pytest.mark.parametrize("retry_failed", [-1, True, 1.5])
def test_retry_failed_must_be_a_non_negative_integer(retry_failed):
    with pytest.raises(ValueError, match="retry_failed must be a non-negative integer"):
        sn.search(SPACE, lambda v: v.x, num_trials=1, storage=None, progress=False, retry_failed=retry_failed)


def test_a_study_name_reused_with_another_algorithm_is_refused_naming_both(tmp_path):
    db = tmp_path / "a.db"
    sn.search(SPACE, lambda v: v.x, sn.algorithms.Random(seed=0), num_trials=2, storage=db, name="s", progress=False)
    with pytest.raises(StudyMismatch, match=r"started with the algorithm Random\(seed=0\), this call passes "
                                            r"RegularizedEvolution\("):
        sn.search(SPACE, lambda v: v.x, sn.algorithms.RegularizedEvolution(seed=0), num_trials=4, storage=db,
                  name="s", progress=False)
    # another seed is the same algorithm (processes sharing a study use different seeds)
    study = sn.search(SPACE, lambda v: v.x, sn.algorithms.Random(seed=1), num_trials=4, storage=db, name="s",
                      progress=False)
    assert len(study) == 4


def test_an_edited_evaluator_starts_a_new_study_and_the_same_one_resumes(tmp_path):
    db = tmp_path / "e.db"

    def evaluate(v):
        return v.x

    def edited(v):
        return v.x * 2.0
    first = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=3, storage=db, progress=False)
    again = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=5, storage=db, progress=False)
    other = sn.search(SPACE, edited, sn.algorithms.Random(seed=0), num_trials=2, storage=db, progress=False)
    assert first.name == again.name and len(again) == 5
    assert other.name != first.name and len(other) == 2


def test_a_search_whose_every_trial_failed_names_the_most_common_error(capsys):
    def broken(v):
        if v.n == 1:
            raise KeyError("missing column")
        return 1 / 0
    study = sn.search(SPACE, broken, sn.algorithms.Random(seed=0), num_trials=12, storage=None, progress=True)
    err = capsys.readouterr().err
    headline, count = study.most_common_error()
    assert headline == "ZeroDivisionError: division by zero" and count > 6
    assert f"12 trial(s) failed in this run of study {study.name!r}; most common error ({count}x): " \
           f"ZeroDivisionError: division by zero" in err
    assert "failed 12" in err   # the progress bar counts failures
    assert f"most common error ({count}x): ZeroDivisionError" in study.summary()


# -- the command line --------------------------------------------------------------------------------
def test_search_without_arguments_shows_the_usage_and_creates_nothing(tmp_path):
    result = run_cli("search", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: symnas search") and "give a builtin search" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_shows_the_defaults(tmp_path):
    text = run_cli("search", "--help", cwd=tmp_path).stdout
    assert "(default: 20)" in text and "(default: symnas.db)" in text and "(default: random)" in text
    assert "exit codes: 0 done, 1 interrupted" in text


def test_bad_sources_are_one_line_each(tmp_path):
    (tmp_path / "raises.py").write_text("import pyglove as pg\nspace = pg.Dict(x=pg.floatv(0.0, 1.0))\n1 / 0\n")
    (tmp_path / "syntax.py").write_text("def evaluate(v):\n    return (\n")
    cases = {
        "/etc/passwd": "Unknown search '/etc/passwd'",
        "x/" * 2500 + "x.py": "File name too long",
        "raises.py": "raises.py raised ZeroDivisionError: division by zero (line 3) while it was imported",
        "syntax.py": "syntax.py is not valid Python (line 2)",
        "missing.py": "missing.py does not exist",
    }
    for source, expected in cases.items():
        result = run_cli("search", source, "--storage", "x.db", cwd=tmp_path)
        assert result.returncode == 2, source
        line = one_error_line(result.stderr)
        assert line.startswith("symnas search: error:") and expected in line and len(line) < 500, source
    assert not (tmp_path / "x.db").exists()


def test_a_search_that_completed_nothing_exits_3_naming_the_most_common_error(tmp_path):
    (tmp_path / "fails.py").write_text(textwrap.dedent("""
        import pyglove as pg
        space = pg.Dict(x=pg.floatv(0.0, 1.0))
        def evaluate(v):
            raise RuntimeError("the GPU is not there")
    """))
    result = run_cli("search", "fails.py", "--trials", "4", "--storage", "f.db", cwd=tmp_path)
    assert result.returncode == 3
    assert "4 trials 4 failed" in result.stdout
    assert "most common error (4 of 4 failed): RuntimeError: the GPU is not there" in result.stdout
    assert "failed 4" in result.stderr and "no trial of study" in result.stderr


def test_the_command_line_says_whether_it_resumes_or_starts_a_study(tmp_path):
    space_file = tmp_path / "space.py"
    space_file.write_text("import pyglove as pg\nspace = pg.Dict(x=pg.floatv(0.0, 1.0))\n"
                          "def evaluate(v):\n    return v.x\n")
    first = run_cli("search", "space.py", "--trials", "2", "--storage", "s.db", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0 and "new study" in first.stderr
    again = run_cli("search", "space.py", "--trials", "3", "--storage", "s.db", "--no-progress", cwd=tmp_path)
    assert "resuming study" in again.stderr and "2 trials already finished" in again.stderr
    assert "--name NEW starts another study" in again.stderr
    space_file.write_text(space_file.read_text().replace("return v.x", "return 1.0 - v.x"))
    edited = run_cli("search", "space.py", "--trials", "2", "--storage", "s.db", "--no-progress", cwd=tmp_path)
    assert edited.returncode == 0 and "new study" in edited.stderr
    assert len(sn.storage.SQLiteStorage(tmp_path / "s.db").study_names()) == 2


def test_non_positive_retry_failed_is_named(tmp_path, capsys):
    assert cli.main(["search", "toy", "--retry-failed", "-1", "--storage", str(tmp_path / "r.db")]) == 2
    assert "--retry-failed must be >= 0, got -1" in capsys.readouterr().err
