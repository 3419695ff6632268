"""symnas: symbolic AutoML over architectures, kernel transformations and hyperparameters.

One symbolic object (PyGlove) describes the experiment; any field may be a search
point (``pg.oneof``, ``pg.manyof``, ``pg.floatv``). ``sn.search`` runs the
sample -> evaluate -> feedback loop with persistence; every algorithm in
``sn.algorithms`` is a ``pg.DNAGenerator`` and also works with plain ``pg.sample``.

Example::

    import pyglove as pg, symnas as sn
    space = pg.Dict(x=pg.floatv(-1.0, 1.0), y=pg.oneof([1, 2, 3]))
    study = sn.search(space, lambda v: -(v.x ** 2) + v.y, sn.algorithms.Random(seed=0),
                      num_trials=20, storage=None)
    print(study.best)
    sn.save(study.best, "best.json"); sn.load("best.json")   # JSON; loading never runs code
"""
import importlib

__version__ = "0.1.0"

from symnas import algorithms
from symnas import schedulers
from symnas import spaces
from symnas.errors import TrialRejected
from symnas.objectives import Objective
from symnas.safe_json import UnsafeJSONError, from_json, load, save
from symnas.search import search
from symnas.study import Study
from symnas import pg_backend  # noqa: F401  (registers the "symnas" backend for pg.sample)

# Heavy subpackages (torch, TVM) load on first use so `import symnas` stays fast.
_LAZY_SUBPACKAGES = ("nn", "train", "data", "program", "proxies", "hw", "pte", "kas", "cli")


def __getattr__(name):
    if name in _LAZY_SUBPACKAGES:
        module = importlib.import_module(f"symnas.{name}")
        globals()[name] = module
        return module
    if name == "symbolize":
        from symnas.nn import symbolize  # pylint: disable=import-outside-toplevel
        return symbolize
    raise AttributeError(f"module 'symnas' has no attribute {name!r}")


__all__ = ["algorithms", "schedulers", "spaces", "search", "Study", "Objective", "TrialRejected",
           "load", "from_json", "save", "UnsafeJSONError",
           "nn", "train", "data", "program", "proxies", "hw", "pte", "kas", "symbolize"]
