"""Kernel architecture search (Canvas, seed 003): kernels built from fine-grained primitives.

A :class:`Kernel` is a micro-DAG of primitives (``sn.kas.primitives``: Group, Shift, Unfold,
FC, Conv, Fold, Mix, Scale, Softmax, Activation, ElementWise, Broadcast, BMM) from a conv's
input ``[C, H, W]`` to its output ``[O, H/S, W/S]``, with sizes as expressions over the conv's
symbols and free dynamic variables. :class:`KernelSpace` makes a PyGlove search space of such
kernels for a network's convs (``conv_targets``) under a :class:`Budget`; every symnas algorithm
searches it, and ``sn.algorithms.Canvas`` is the paper's own random sampler. A design decodes
to a kernel whose sizes the shape-matching and budget solvers fix (``sn.kas.solver``); the kernel
becomes a torch module (``KernelModule``), a layer of a symbolic network (``KernelConv``,
``replace_convs``) and a compiled kernel for CPU timing (``compile_kernel``).

Example::

    import pyglove as pg, symnas as sn
    space = sn.kas.KernelSpace(targets=sn.kas.conv_targets(sn.nn.resnet18()),
                               budget=sn.kas.Budget(flops=0.25), max_primitives=10)
    design = next(iter(pg.sample(space.search_space(), sn.algorithms.Canvas(seed=0), 1)))[0]
    decoded = design.decode()
    print(decoded.kernel.describe())
"""
import importlib

from symnas.kas import primitives, shapes, sizes
from symnas.kas.kernel import Analysis, Kernel, KernelRejected, Solution, analyze
from symnas.kas.patterns import (bottleneck_separable, classify, depthwise_separable, involution,
                                 reference_kernels, spatially_separable)
from symnas.kas.primitives import (BMM, FC, Activation, Broadcast, Conv, ElementWise, Fold, Group, Mix, Primitive,
                                   PrimitiveError, Scale, Shift, Softmax, Unfold)
from symnas.kas.sizes import Size
from symnas.kas.solver import solve_budget
from symnas.kas.space import Decoded, KernelDesign, KernelSpace
from symnas.kas.targets import Budget, ConvTarget, conv_targets
# KernelConv is a layer of saved networks: loaded here so `sn.load` finds it (this imports torch).
from symnas.kas.layer import KernelConv, assign_kernels, conv_chain, lower_to_layers, replace_convs, transfer_weights

# The rest loads on first use.
_LAZY = {
    "KernelModule": "symnas.kas.torch_module",
    "compile_kernel": "symnas.kas.compile",
    "compile_conv": "symnas.kas.compile",
    "compile_module": "symnas.kas.compile",
    "time_callable": "symnas.kas.compile",
    "rediscover": "symnas.kas.evaluate",
    "ProxyTask": "symnas.kas.evaluate",
    "lower_network": "symnas.kas.evaluate",
    "network_latencies": "symnas.kas.evaluate",
    "network_proxy": "symnas.kas.evaluate",
    "train_step_times": "symnas.kas.evaluate",
    "fastest_per_shape": "symnas.kas.evaluate",
    "layer_latencies": "symnas.kas.evaluate",
    "set_native": "symnas.kas.torch_module",
    "CanvasPruning": "symnas.kas.pruning",
    "ProxyFilter": "symnas.kas.pruning",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'symnas.kas' has no attribute {name!r}")


__all__ = ["primitives", "shapes", "sizes", "Size", "Kernel", "Analysis", "Solution", "KernelRejected", "analyze",
           "Primitive", "PrimitiveError", "Group", "Shift", "Unfold", "FC", "Conv", "Fold", "Mix", "Scale",
           "Softmax", "Activation", "ElementWise", "Broadcast", "BMM", "KernelSpace", "KernelDesign",
           "Decoded", "ConvTarget", "Budget", "conv_targets", "solve_budget", "classify", "reference_kernels",
           "depthwise_separable", "bottleneck_separable", "spatially_separable", "involution", "KernelConv",
           "lower_to_layers", "replace_convs", "assign_kernels", "transfer_weights", "conv_chain"] + list(_LAZY)
