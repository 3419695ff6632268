"""Ready-made search spaces.

Each space is a symbolic value with search points, usable with ``sn.search`` and
``pg.sample``. Modules here import torch/TVM lazily so ``import symnas`` stays fast.
"""
from symnas.spaces.nasbench201 import *  # noqa: F401,F403
from symnas.spaces.mobilenetv2 import *  # noqa: F401,F403
from symnas.spaces.hyperparameters import *  # noqa: F401,F403
from symnas.spaces.transformations import *  # noqa: F401,F403
