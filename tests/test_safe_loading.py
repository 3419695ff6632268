"""Nothing read from disk runs: crafted study files, networks and JSON texts against ``sn.load``.

Each payload would run code through PyGlove's own loader (unpickling, importing, dlopen). The tests
assert that nothing ran: a canary file was not created and no new module appeared in sys.modules.
"""
import base64
import json
import pickle
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pyglove as pg
import pytest

import symnas as sn
from symnas.safe_json import UnsafeJSONError
from symnas.study import Study

_OPAQUE = "pyglove.core.utils.json_conversion._OpaqueObject"


class _CreatesFile:
    """Unpickling this creates ``path`` (what an attacker's pickle would do, harmlessly)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _opaque(path) -> dict:
    return {"_type": _OPAQUE, "value": base64.encodebytes(pickle.dumps(_CreatesFile(path))).decode()}


@pytest.fixture
def canary_module(tmp_path, monkeypatch):
    """An importable module ``symnas_canary_<n>`` whose import creates a canary file."""
    name = f"symnas_canary_{tmp_path.name.replace('-', '_')}"
    canary = tmp_path / "imported.txt"
    (tmp_path / f"{name}.py").write_text(f"open({str(canary)!r}, 'w').close()\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, canary


def _nothing_ran(canary, modules_before):
    assert not canary.exists()
    assert set(sys.modules) - modules_before == set()


def _payloads(tmp_path, module_name):
    canary = tmp_path / "ran.txt"
    return canary, {
        "pickle": _opaque(canary),
        "import by type name": {"_type": f"{module_name}.Thing"},
        "type entry": {"_type": "type", "name": f"{module_name}.Thing"},
        "function entry": {"_type": "function", "name": "json.tool.main"},
        "method entry": {"_type": "method", "name": f"{module_name}.Thing.mro"},
        "byte code": json.loads(pg.to_json_str(pg.Dict(f=lambda: open(str(canary), "w"))))["f"],
        "class defined in a function": {"_type": "pyglove.core.symbolic.functor.functor_class.<locals>._Functor"},
        "PyGlove class outside a search": {"_type": "pyglove.core.patching.object_factory.ObjectFactory",
                                           "value_type": {"_type": "type", "name": "builtins.dict"},
                                           "base_value": {}},
        "non-symbolic class": {"_type": "pyglove.typing.Object",
                               "t": {"_type": "type", "name": f"{module_name}.Thing"}},
        "non-string type": {"_type": ["os", "system"]},
    }


def test_from_json_refuses_every_payload_and_names_it(tmp_path, canary_module):
    import json.decoder  # noqa: F401  (json is loaded; json.tool is not)
    assert "json.tool" not in sys.modules
    module_name, imported = canary_module
    canary, payloads = _payloads(tmp_path, module_name)
    for kind, payload in payloads.items():
        before = set(sys.modules)
        for text in (json.dumps(payload), json.dumps(pg.to_json(pg.Dict(x=1)) | {"inner": [payload]})):
            with pytest.raises(UnsafeJSONError) as error:
                sn.from_json(text)
            assert "$" in str(error.value), kind          # says where
        _nothing_ran(canary, before)
        assert not imported.exists(), kind
        assert module_name not in sys.modules and "json.tool" not in sys.modules, kind


def test_a_type_entry_cannot_dlopen_a_native_library(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the canary library")
    import ctypes  # noqa: F401  (the attack needs ctypes already imported, as it is in most processes)
    canary = tmp_path / "dlopened.txt"
    source = tmp_path / "canary.c"
    source.write_text(textwrap.dedent(f"""
        #include <stdio.h>
        __attribute__((constructor)) static void ran(void) {{ FILE *f = fopen("{canary}", "w"); if (f) fclose(f); }}
    """))
    library = tmp_path / "libcanary.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    payload = json.dumps(pg.to_json(pg.Dict(x=1)) | {
        "lib": {"_type": "type", "name": "ctypes.cdll", "args": [str(library)]}})
    with pytest.raises(UnsafeJSONError, match="refusing a 'type' entry"):
        sn.from_json(payload)
    assert not canary.exists()


def test_load_reads_saved_networks_and_refuses_a_tampered_one(tmp_path):
    net = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.ReLU(), sn.nn.MaxPool(3)])
    path = tmp_path / "net.json"
    sn.save(net, path)
    assert sn.load(path) == net
    canary = tmp_path / "ran.txt"
    tampered = json.loads(path.read_text())
    tampered["layers"][1] = _opaque(canary)
    path.write_text(json.dumps(tampered))
    with pytest.raises(UnsafeJSONError, match=r"net\.json: \$\.layers\[1\]: refusing a pickled"):
        sn.load(path)
    assert not canary.exists()


def test_unknown_classes_are_named_and_symnas_subpackages_load_on_demand(tmp_path):
    with pytest.raises(UnsafeJSONError, match="unknown type 'mypackage.MyLayer'.*Import the module"):
        sn.from_json('{"_type": "mypackage.MyLayer", "width": 3}')
    code = ("import symnas as sn, sys; assert 'symnas.nn' not in sys.modules; "
            "net = sn.load('benchmarks/networks/resnet18_original.json'); "
            "print(type(net).__module__, 'symnas.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["symnas.nn.layers", "False"]


def test_plain_json_and_bad_json_give_values_or_one_clear_error(tmp_path):
    assert sn.from_json('{"latency_ms": {"a": 1.5}, "repeat": 5}') == {"latency_ms": {"a": 1.5}, "repeat": 5}
    with pytest.raises(ValueError, match="not valid JSON"):
        sn.from_json("{'python': 'literal'}")
    with pytest.raises(UnsafeJSONError, match="nested"):
        sn.from_json("[" * 100000 + "]" * 100000)
    with pytest.raises(FileNotFoundError, match="Cannot read"):
        sn.load(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="JSON text"):
        sn.from_json(pg.Dict(x=1))


def test_dna_is_rebuilt_from_plain_numbers():
    from symnas.safe_json import dna_from_json
    for value in ([0, (1, [2, 0.5]), [1, 2]], (2, 1, 0.25), 3, [(0, 1), 3]):
        dna = pg.DNA(value)
        assert dna_from_json(json.dumps(dna.to_json(compact=True))) == dna
        assert dna_from_json(pg.to_json_str(dna)) == dna          # the symbolic (non-compact) form too
    with pytest.raises(UnsafeJSONError, match="only numbers"):
        dna_from_json({"format": "compact", "value": [1, {"_type": "x.Y"}]})
    with pytest.raises(UnsafeJSONError):
        dna_from_json('{"format": "compact", "value": NaN}')


def _study_with_two_trials(db):
    return sn.search(pg.Dict(n=pg.oneof([1, 2, 3])), lambda v: float(v.n), sn.algorithms.Random(seed=0),
                     num_trials=2, storage=db, name="h", progress=False, record_objects=False)


def _tamper_dna(db, payload, where):
    dna = {"_type": pg.DNA.__serialization_key__, "format": "compact", "value": 0}
    if where == "value":
        dna["value"] = [payload]
    else:
        dna["metadata"] = {"x": payload}
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE trials SET dna=?", (json.dumps(dna),))


def test_a_payload_in_a_stored_dna_is_refused_by_best_and_by_resume(tmp_path, canary_module):
    module_name, imported = canary_module
    canary = tmp_path / "ran.txt"
    for i, payload in enumerate((_opaque(canary), {"_type": f"{module_name}.Thing"})):
        db = tmp_path / f"hostile{i}.db"
        _study_with_two_trials(db)
        _tamper_dna(db, payload, "value")
        before = set(sys.modules)
        with pytest.raises(UnsafeJSONError, match="DNA holds only numbers"):
            Study.load(db, "h").best  # pylint: disable=pointless-statement
        assert len(_study_with_two_trials(db)) == 2   # resumed from the algorithm's checkpoint: not read
        with sqlite3.connect(db) as connection:       # without one, the history is replayed: refused
            connection.execute("DELETE FROM checkpoints")
        with pytest.raises(UnsafeJSONError, match="DNA holds only numbers"):
            _study_with_two_trials(db)
        _nothing_ran(canary, before)
        assert not imported.exists() and module_name not in sys.modules


def test_a_payload_in_a_stored_dna_metadata_is_dropped_unread(tmp_path, canary_module):
    module_name, imported = canary_module
    db = tmp_path / "meta.db"
    _study_with_two_trials(db)
    canary = tmp_path / "ran.txt"
    for payload in (_opaque(canary), {"_type": f"{module_name}.Thing"}):
        _tamper_dna(db, payload, "metadata")
        before = set(sys.modules)
        assert Study.load(db, "h").best == pg.DNA(0)
        assert len(_study_with_two_trials(db)) == 2       # resumed: the history was replayed
        _nothing_ran(canary, before)
        assert not imported.exists() and module_name not in sys.modules


# -- the command line's recorded source --------------------------------------------------------------
_CANARY_SPACE = """
import pathlib, pyglove as pg
pathlib.Path({canary!r}).write_text("ran")
space = pg.Dict(x=pg.floatv(0.0, 1.0))
def evaluate(v):
    return v.x
"""


def _set_source(db, source):
    with sqlite3.connect(db) as connection:
        (info,) = connection.execute("SELECT info FROM studies").fetchone()
        info = json.loads(info) | {"cli_source": source}
        connection.execute("UPDATE studies SET info=?", (json.dumps(info),))


def test_a_builtin_source_that_names_a_file_runs_nothing(tmp_path, capsys):
    from symnas import cli
    db = tmp_path / "b.db"
    assert cli.main(["search", "toy", "--trials", "2", "--storage", str(db), "--no-progress"]) == 0
    canary = tmp_path / "ran.txt"
    evil = tmp_path / "evil.py"
    evil.write_text(_CANARY_SPACE.format(canary=str(canary)))
    for name in (str(evil), "../" + evil.name, "evil.py"):
        _set_source(db, {"kind": "builtin", "name": name})
        assert cli.main(["show", str(db)]) == 0
        assert cli.main(["resume", str(db), "--trials", "3", "--no-progress"]) == 2
        assert "unknown builtin search" in capsys.readouterr().err
        assert not canary.exists()


def test_a_changed_space_file_is_refused_before_it_runs_unless_trusted(tmp_path, capsys):
    from symnas import cli
    canary = tmp_path / "ran.txt"
    space_file = tmp_path / "space.py"
    space_file.write_text(_CANARY_SPACE.format(canary=str(canary)))
    db = tmp_path / "f.db"
    assert cli.main(["search", str(space_file), "--trials", "2", "--storage", str(db), "--no-progress"]) == 0
    canary.unlink()
    space_file.write_text(space_file.read_text() + "\n# edited\n")
    assert cli.main(["show", str(db)]) == 0                      # show never runs a space file
    assert cli.main(["resume", str(db), "--trials", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "changed since the study started" in err and "nothing was run" in err and "--trust-space-file" in err
    assert not canary.exists()
    _set_source(db, {"kind": "file", "path": str(space_file)})   # a tampered source without its hash
    assert cli.main(["resume", str(db), "--trials", "3", "--no-progress"]) == 2
    assert "--trust-space-file" in capsys.readouterr().err and not canary.exists()
    assert cli.main(["resume", str(db), "--trials", "3", "--no-progress", "--trust-space-file"]) == 0
    assert canary.exists()
