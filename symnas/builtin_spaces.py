"""Named searches for the ``symnas`` command line: a space, its evaluator and its objectives.

A search source is either a builtin name (``quickstart``, ``nasbench201``, ``toy``) or a Python
file that defines ``space`` and ``evaluate`` (and optionally ``objectives``). The study stores
where its source came from (``source_info``) so ``symnas resume`` finds the evaluator again; a
file is re-imported from its path (the study never carries code), and only while it still has the
hash recorded when the study began (``--trust-space-file`` overrides that).

Example::

    source = load_source("toy")
    study = sn.search(source.space, source.evaluate, num_trials=10, storage=None)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
import sys
import traceback
import types
from typing import Any, Callable, Dict, Optional, Tuple

import pyglove as pg


@dataclasses.dataclass
class SearchSource:
    """What the command line searches: a space, an evaluator, objectives, and where they came from."""

    space: Any
    evaluate: Callable[[Any], Any]
    objectives: Any = None
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)


# -- builtins -------------------------------------------------------------------------------------
def toy_objective(value) -> Dict[str, float]:
    """A smooth function with its maximum 3.0 at x=0.5, lr=1e-2, n=3 (instant; for tests and demos)."""
    score = value.n - (value.x - 0.5) ** 2 - (math.log10(value.lr) + 2.0) ** 2
    return {"reward": score, "distance": abs(value.x - 0.5)}


def _toy() -> SearchSource:
    space = pg.Dict(x=pg.floatv(-1.0, 1.0), lr=pg.floatv(1e-4, 1.0, scale="log"), n=pg.oneof([1, 2, 3]))
    return SearchSource(space, toy_objective)


def train_trainer(trainer) -> Dict[str, float]:
    """Trains a ``sn.train.Trainer`` and returns its metrics (validation accuracy is the reward)."""
    return dict(trainer.train())


def _quickstart() -> SearchSource:
    import symnas as sn  # pylint: disable=import-outside-toplevel
    nn, train = sn.nn, sn.train
    model = nn.Sequential([
        nn.Conv(pg.oneof([8, 16, 32]), (3, 3)), nn.ReLU(),
        pg.oneof([nn.Identity(), nn.MaxPool((2, 2))]),
        nn.Conv(pg.oneof([16, 32]), (3, 3)), nn.ReLU(),
    ])
    space = train.Trainer(
        model=model,
        optimizer=pg.oneof([train.Adam(lr=pg.floatv(1e-3, 1e-1, scale="log")),
                            train.SGD(lr=pg.floatv(1e-2, 5e-1, scale="log"))]),
        data=sn.data.Digits(), epochs=5, batch_size=pg.oneof([32, 64]), validation_size=300)
    return SearchSource(space, train_trainer, objectives="accuracy")


def nasbench201_lookup(arch) -> Dict[str, float]:
    """NAS-Bench-201 table lookup: 12-epoch validation accuracy (the search signal) and 200-epoch test."""
    return {"accuracy": arch.query("valid_12"), "test_accuracy": arch.query("test"),
            "train_time_12": arch.query("train_time_12")}


def _nasbench201() -> SearchSource:
    import symnas as sn  # pylint: disable=import-outside-toplevel
    space = sn.spaces.NASBench201()
    try:
        sn.spaces.nasbench201.load_nasbench201_table(None)
    except (FileNotFoundError, OSError) as error:
        raise FileNotFoundError(f"The nasbench201 builtin needs the NAS-Bench-201 table: {error}") from error
    return SearchSource(space, nasbench201_lookup, objectives="accuracy")


BUILTINS: Dict[str, Callable[[], SearchSource]] = {
    "quickstart": _quickstart,
    "nasbench201": _nasbench201,
    "toy": _toy,
}

DESCRIPTIONS = {
    "quickstart": "a small CNN + optimizer + log-scale learning rate, trained on scikit-learn's digits",
    "nasbench201": "the 15625 NAS-Bench-201 cells, looked up in $SYMNAS_DATA/nasbench201 (no training)",
    "toy": "a 3-parameter numeric function, instant (for tests and demos)",
}


# -- space files ----------------------------------------------------------------------------------
class SpaceFileError(ValueError):
    """A space file cannot be used (missing, not Python, raises on import, changed since the study began)."""


def _module_name(path: pathlib.Path) -> str:
    # The same name in the driver and in worker processes, so classes defined in the file register
    # under one type name and their JSON decodes on both sides.
    return "symnas_space_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]


def _shown(path: Any) -> str:
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]


def _read_space_file(path: Any) -> Tuple[pathlib.Path, bytes]:
    try:
        resolved = pathlib.Path(path).resolve()
        data = resolved.read_bytes()
    except FileNotFoundError as error:
        raise SpaceFileError(f"space file {_shown(path)} does not exist.") from error
    except IsADirectoryError as error:
        raise SpaceFileError(f"space file {_shown(path)} is a folder.") from error
    except OSError as error:
        raise SpaceFileError(f"cannot read space file {_shown(path)}: {error.strerror or error}.") from error
    return resolved, data


def load_space_module(path: os.PathLike, sha256: Optional[str] = None):
    """Imports a space file (once per process) and returns the module.

    With ``sha256`` the file must still have that hash: a changed file is refused before it runs.
    The bytes that were hashed are the bytes that run (the file is read once).
    """
    resolved, data = _read_space_file(path)
    name = _module_name(resolved)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise SpaceFileError(f"space file {_shown(resolved)} changed since the study started (sha256 "
                             f"{sha256[:12]}..., now {digest[:12]}...); nothing was run.")
    if name in sys.modules and getattr(sys.modules[name], "__symnas_sha256__", None) == digest:
        return sys.modules[name]
    try:
        code = compile(data, str(resolved), "exec")
    except (SyntaxError, ValueError) as error:
        where = f" (line {error.lineno})" if getattr(error, "lineno", None) else ""
        raise SpaceFileError(f"space file {_shown(resolved)} is not valid Python{where}: "
                             f"{getattr(error, 'msg', error)}.") from error
    module = types.ModuleType(name)
    module.__file__ = str(resolved)
    module.__symnas_sha256__ = digest
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)  # pylint: disable=exec-used  (the user's own file, named on the command line)
    except BaseException as error:
        del sys.modules[name]
        if not isinstance(error, Exception):
            raise
        line = next((frame.lineno for frame in reversed(traceback.extract_tb(error.__traceback__))
                     if frame.filename == str(resolved)), None)
        raise SpaceFileError(f"space file {_shown(resolved)} raised {type(error).__name__}: {error}"
                             f"{f' (line {line})' if line else ''} while it was imported.") from error
    return module


class FileEvaluator:
    """The ``evaluate`` of a space file, picklable by path and hash: a worker process re-imports the
    file (which also registers the file's symbolic classes) before it decodes any trial, and refuses
    it if it changed meanwhile."""

    def __init__(self, path: str, sha256: Optional[str] = None):
        self.path = path
        self.sha256 = sha256
        self.symnas_fingerprint = sha256[:12] if sha256 else None   # the study's identity
        self._evaluate = load_space_module(path, sha256).evaluate

    def __call__(self, value):
        return self._evaluate(value)

    def __reduce__(self):
        return (FileEvaluator, (self.path, self.sha256))


def _load_file(path: str, sha256: Optional[str] = None) -> SearchSource:
    if not str(path).endswith(".py"):
        raise SpaceFileError(f"space file {_shown(path)} must be a Python file ending in .py.")
    resolved, data = _read_space_file(path)
    digest = hashlib.sha256(data).hexdigest() if sha256 is None else sha256
    module = load_space_module(resolved, digest)
    missing = [n for n in ("space", "evaluate") if not hasattr(module, n)]
    if missing:
        raise SpaceFileError(f"Space file {_shown(path)} must define {' and '.join(missing)} "
                             f"(a symbolic search space named 'space' and a function 'evaluate(value)').")
    if not callable(module.evaluate):
        raise SpaceFileError(f"Space file {_shown(path)}: 'evaluate' must be a function, got "
                             f"{type(module.evaluate).__name__}.")
    if not isinstance(module.space, (pg.Symbolic, pg.DNASpec)):
        raise SpaceFileError(f"Space file {_shown(path)}: 'space' must be a PyGlove symbolic value with search "
                             f"points (pg.oneof, pg.floatv, ...), got {type(module.space).__name__}.")
    return SearchSource(module.space, FileEvaluator(str(resolved), digest), getattr(module, "objectives", None),
                        info={"kind": "file", "path": str(resolved), "sha256": digest})


def load_source(source: str) -> SearchSource:
    """A builtin name or a path to a ``.py`` space file."""
    if source in BUILTINS:
        loaded = BUILTINS[source]()
        loaded.info = {"kind": "builtin", "name": source}
        return loaded
    if source.endswith(".py"):
        return _load_file(source)
    raise ValueError(f"Unknown search {_shown(source)!r}: use a builtin ({', '.join(BUILTINS)}) or a .py file "
                     f"that defines 'space' and 'evaluate'.")


def source_from_info(info: Dict[str, Any], trust_space_file: bool = False) -> SearchSource:
    """The source recorded with a study (``symnas resume``).

    A builtin is looked up by name only (a recorded path is refused). A space file runs only if it
    still has the hash recorded when the study started, unless ``trust_space_file``.
    """
    if not info:
        raise ValueError("This study was not started by the symnas command line, so it does not record "
                         "its evaluator; resume it from Python with sn.search(...) and the same name.")
    if not isinstance(info, dict):
        raise ValueError(f"Unrecognised search source in the study: {str(info)[:120]!r}.")
    if info.get("kind") == "builtin":
        name = info.get("name")
        if name not in BUILTINS:
            raise ValueError(f"The study names an unknown builtin search {_shown(name)!r} (builtins: "
                             f"{', '.join(BUILTINS)}); nothing was run.")
        return load_source(name)
    if info.get("kind") == "file":
        path, sha256 = info.get("path"), info.get("sha256")
        if not isinstance(path, str) or not path.endswith(".py"):
            raise ValueError(f"The study names a space file that is not a .py file: {_shown(path)!r}; nothing "
                             f"was run.")
        if trust_space_file:
            return _load_file(path)
        if not isinstance(sha256, str):
            raise SpaceFileError(f"The study does not record the hash of its space file {_shown(path)}; nothing "
                                 f"was run. Check the file, then pass --trust-space-file to run it.")
        try:
            return _load_file(path, sha256)
        except SpaceFileError as error:
            if "changed since the study started" in str(error):
                raise SpaceFileError(f"{error} Check the file, then pass --trust-space-file to run it "
                                     f"anyway.") from None
            raise
    raise ValueError(f"Unrecognised search source in the study: {str(info)[:120]!r}.")


def describe_source(info: Optional[Dict[str, Any]]) -> str:
    if not info or not isinstance(info, dict):
        return "(not recorded)"
    text = info.get("name") if info.get("kind") == "builtin" else info.get("path", "?")
    return _shown(text)
