"""SQLite studies shared by several processes; study files that are incompatible, corrupted or hostile."""
import ast
import json
import pathlib
import sqlite3
import subprocess
import sys
import textwrap

import pyglove as pg
import pytest

import symnas as sn
from symnas.safe_json import UnsafeJSONError
from symnas.storage import SQLiteStorage, StorageError
from symnas.study import Study

SEARCH_SCRIPT = textwrap.dedent("""
    import sys, time
    import pyglove as pg, symnas as sn

    def evaluate(v):
        time.sleep(0.01)
        return v.x + v.n

    space = pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2, 3]))
    sn.search(space, evaluate, sn.algorithms.Random(seed=int(sys.argv[2])), num_trials=int(sys.argv[3]),
              storage=sys.argv[1], name="shared", progress=False, workers=int(sys.argv[4]))
""")


@pytest.mark.parametrize("workers", [1, 2])
def test_two_processes_on_one_study_neither_lose_nor_duplicate_trials(tmp_path, workers):
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    db = tmp_path / "shared.db"
    num_trials = 40
    processes = [subprocess.Popen([sys.executable, str(script), str(db), str(seed), str(num_trials),
                                   str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in (1, 2)]
    for process in processes:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
    records = Study.load(db, "shared").records
    ids = [r.id for r in records]
    assert ids == list(range(1, len(ids) + 1))  # every id exactly once, none missing
    # Each process stops once the study has num_trials finished; the other may have trials in flight.
    assert num_trials <= len(ids) <= num_trials + 2 * workers
    assert all(r.status == "completed" for r in records)
    assert len({r.worker.rsplit(":", 2)[1] for r in records}) == 2  # both processes contributed
    assert len({r.dna for r in records}) == len(records)  # two seeds: no trial recorded twice


class _Recording(pg.geno.Random):
    """Random search that records the rewards fed to it, by seed."""

    fed = {}

    def _feedback(self, dna, reward):
        _Recording.fed.setdefault(self.seed, []).append(reward)


def test_sync_feeds_other_processes_trials_to_the_algorithm(tmp_path):
    db = tmp_path / "sync.db"
    space = pg.Dict(n=pg.oneof([1, 2, 3]))
    sn.search(space, lambda v: float(v.n), _Recording(seed=0), num_trials=5, storage=db, name="s",
              progress=False)

    from symnas.session import SearchSession
    session = SearchSession(space, _Recording(seed=1), storage=db, name="s")
    assert session.num_finished == 5  # recovered from history
    before = len(_Recording.fed.get(1, []))
    sn.search(space, lambda v: float(v.n), _Recording(seed=2), num_trials=8, storage=db, name="s",
              progress=False)
    assert session.sync() == 3 and len(_Recording.fed[1]) == before + 3 and session.num_finished == 8
    assert session.sync() == 0


def test_incompatible_schema_and_corrupted_files_raise_storage_errors(tmp_path):
    db = tmp_path / "v.db"
    SQLiteStorage(db).close()
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE symnas_meta SET value='0' WHERE key='schema_version'")
    with pytest.raises(StorageError, match="schema version 0"):
        SQLiteStorage(db)
    garbage = tmp_path / "g.db"
    garbage.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(StorageError, match="not a readable symnas study file"):
        sn.search(pg.Dict(n=pg.oneof([1, 2])), lambda v: 1.0, num_trials=1, storage=garbage, progress=False)
    assert garbage.read_bytes() == bytes(range(256)) * 64


def _imports(path: pathlib.Path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
    return names


def test_storage_and_study_loading_never_import_pickle():
    package = pathlib.Path(sn.__file__).parent
    for module in ("storage.py", "study.py", "trial.py", "safe_json.py", "cli.py"):
        assert not {"pickle", "cloudpickle", "marshal", "dill"} & _imports(package / module), module


class _Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_hostile_study_file_cannot_run_code_when_loaded(tmp_path, capsys):
    db = tmp_path / "hostile.db"
    study = sn.search(pg.Dict(n=pg.oneof([1, 2])), lambda v: float(v.n), num_trials=2, storage=db,
                      name="h", progress=False)
    best_id = study.best_trial.id
    hostile = {
        "opaque": pg.to_json_str(pg.Dict(payload=_Boom())),          # pickle inside PyGlove JSON
        "bytecode": pg.to_json_str(pg.Dict(f=lambda: print("ran"))),  # marshalled code
        "import": json.dumps({"_type": "antigravity.Anything"}),        # import by type name
    }
    for kind, text in hostile.items():
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE trials SET object=? WHERE id=?", (text, best_id))
        loaded = Study.load(db, "h")
        with pytest.raises(UnsafeJSONError):
            loaded.best  # pylint: disable=pointless-statement
        assert "antigravity" not in sys.modules
    assert "unpickled!" not in capsys.readouterr().out
