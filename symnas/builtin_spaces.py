"""Named searches for the ``symnas`` command line: a space, its evaluator and its objectives.

A search source is either a builtin name (``quickstart``, ``nasbench201``, ``toy``) or a Python
file that defines ``space`` and ``evaluate`` (and optionally ``objectives``). The study stores
where its source came from (``source_info``) so ``symnas resume`` finds the evaluator again; a
file is re-imported from its path (the study never carries code).

Example::

    source = load_source("toy")
    study = sn.search(source.space, source.evaluate, num_trials=10, storage=None)
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import pathlib
import sys
from typing import Any, Callable, Dict, Optional

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
def _module_name(path: pathlib.Path) -> str:
    # The same name in the driver and in worker processes, so classes defined in the file register
    # under one type name and their JSON decodes on both sides.
    return "symnas_space_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]


def load_space_module(path: os.PathLike):
    """Imports a space file (once per process) and returns the module."""
    path = pathlib.Path(path).resolve()
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"Space file {str(path)!r} does not exist.")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class FileEvaluator:
    """The ``evaluate`` of a space file, picklable by path: a worker process re-imports the file
    (which also registers the file's symbolic classes) before it decodes any trial."""

    def __init__(self, path: str):
        self.path = path
        self._evaluate = load_space_module(path).evaluate

    def __call__(self, value):
        return self._evaluate(value)

    def __reduce__(self):
        return (FileEvaluator, (self.path,))


def _load_file(path: str) -> SearchSource:
    resolved = pathlib.Path(path).resolve()
    module = load_space_module(resolved)
    missing = [n for n in ("space", "evaluate") if not hasattr(module, n)]
    if missing:
        raise ValueError(f"Space file {path!r} must define {' and '.join(missing)} "
                         f"(a symbolic search space named 'space' and a function 'evaluate(value)').")
    if not callable(module.evaluate):
        raise ValueError(f"Space file {path!r}: 'evaluate' must be a function, got "
                         f"{type(module.evaluate).__name__}.")
    if not isinstance(module.space, (pg.Symbolic, pg.DNASpec)):
        raise ValueError(f"Space file {path!r}: 'space' must be a PyGlove symbolic value with search "
                         f"points (pg.oneof, pg.floatv, ...), got {type(module.space).__name__}.")
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
    return SearchSource(module.space, FileEvaluator(str(resolved)), getattr(module, "objectives", None),
                        info={"kind": "file", "path": str(resolved), "sha256": digest})


def load_source(source: str) -> SearchSource:
    """A builtin name or a path to a ``.py`` space file."""
    if source in BUILTINS:
        loaded = BUILTINS[source]()
        loaded.info = {"kind": "builtin", "name": source}
        return loaded
    if source.endswith(".py") or os.path.sep in source:
        return _load_file(source)
    raise ValueError(f"Unknown search {source!r}: use a builtin ({', '.join(BUILTINS)}) or a .py file "
                     f"that defines 'space' and 'evaluate'.")


def source_from_info(info: Dict[str, Any]) -> SearchSource:
    """The source recorded with a study (``symnas resume``); warns when a space file changed."""
    if not info:
        raise ValueError("This study was not started by the symnas command line, so it does not record "
                         "its evaluator; resume it from Python with sn.search(...) and the same name.")
    if info.get("kind") == "builtin":
        return load_source(info["name"])
    if info.get("kind") == "file":
        source = _load_file(info["path"])
        if source.info["sha256"] != info.get("sha256"):
            print(f"symnas: warning: space file {info['path']} changed since the study started.",
                  file=sys.stderr)
        return source
    raise ValueError(f"Unrecognised search source in the study: {info!r}.")


def describe_source(info: Optional[Dict[str, Any]]) -> str:
    if not info:
        return "(not recorded)"
    return info.get("name") if info.get("kind") == "builtin" else info.get("path", "?")
