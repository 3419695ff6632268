"""Initialisation keyed by layer name, so networks that differ in some layers share the rest's weights.

``torch.manual_seed(s); net.build(...)`` draws every layer's weights from one stream, so
changing one layer (a grouped kernel has fewer weights) shifts the initial weights of every
later layer too: comparing an original network with a transformed one then mixes the effect
of the transformation with that of a different initialisation. :func:`init_by_name` draws
each submodule's parameters from its own generator, seeded by ``seed`` and the submodule's
qualified name; layers that two networks share by name start identical.

Example::

    import symnas as sn
    model = sn.nn.resnet34().build((3, 32, 32))
    sn.nn.init_by_name(model, seed=0)
"""
import zlib

import torch
from torch import nn

__all__ = ["init_by_name", "layer_seed"]


def layer_seed(seed: int, name: str) -> int:
    """The seed of the generator that initialises the layer called ``name``."""
    return zlib.crc32(f"{seed}:{name}".encode()) & 0x7FFFFFFF


def init_by_name(module: nn.Module, seed: int) -> nn.Module:
    """Resets each submodule that owns parameters from a generator seeded by (``seed``, its name).

    A submodule with ``reset_parameters()`` (torch's layers, symnas' kernels) resets all its
    parameters, its children's included; any other submodule with parameters of its own raises
    ``TypeError`` naming it, rather than keeping weights that would depend on the build order.
    Returns ``module``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"init_by_name: seed must be an int, got {seed!r}")
    done = set()                       # submodules reset with all their children
    for name, sub in module.named_modules():
        parts = name.split(".") if name else []
        if "" in done or any(".".join(parts[:i]) in done for i in range(1, len(parts))):
            continue
        if callable(getattr(sub, "reset_parameters", None)):
            if any(True for _ in sub.parameters()):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(layer_seed(seed, name))
                    sub.reset_parameters()
                done.add(name)
        elif any(True for _ in sub.parameters(recurse=False)):
            raise TypeError(f"init_by_name: submodule {name or '<root>'!r} ({type(sub).__name__}) "
                            "has parameters but no reset_parameters()")
    return module
