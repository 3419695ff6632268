"""Symbolic torch building blocks and backbones; each object's ``build()`` returns an ``nn.Module``."""
from symnas.nn.layers import *  # noqa: F401,F403
from symnas.nn.backbones import *  # noqa: F401,F403
from symnas.nn.nasbench201 import *  # noqa: F401,F403
from symnas.nn.profile import *  # noqa: F401,F403
from symnas.nn.mobilenetv2 import *  # noqa: F401,F403
from symnas.nn.compile import *  # noqa: F401,F403
from symnas.nn.init import *  # noqa: F401,F403
from symnas.nn.runtimes import *  # noqa: F401,F403
