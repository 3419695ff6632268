"""A searched kernel as a layer of a symbolic ``sn.nn`` network, in place of the convs it replaces.

``KernelConv(kernel, out_channels, stride, values)`` builds the kernel's torch module for the
input shape it receives; ``replace_convs(net, kernel, solution, targets)`` puts one at every
target conv of ``net`` (each with its own solved sizes). ``lower_to_layers`` rewrites a kernel
that is a chain of convolution-like primitives (FC, unfold + FC, unfold + per-channel scale +
fold, square Conv, ReLU) as ``sn.nn.Conv``/``ReLU`` layers, which ``sn.nn.compile_network``
compiles to TVM kernels; ``transfer_weights`` copies a trained kernel's weights into them.

Example::

    import symnas as sn
    net = sn.nn.resnet18()
    targets = sn.kas.conv_targets(net)
    kernel = sn.kas.depthwise_separable()
    solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=1.0))
    fast = sn.kas.replace_convs(net, kernel, solution, targets)
    model = fast.build((3, 32, 32))
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import pyglove as pg
import torch
from torch import nn

from symnas.kas import shapes as S
from symnas.kas.kernel import Kernel, KernelRejected, Solution
from symnas.kas.torch_module import KernelModule
from symnas.nn import backbones, layers as L

__all__ = ["KernelConv", "replace_convs", "assign_kernels", "lower_to_layers", "transfer_weights"]


@pg.members([
    ("kernel", pg.typing.Object(Kernel), "The kernel template."),
    ("out_channels", pg.typing.Int(min_value=1), "Output channels (the replaced conv's)."),
    ("stride", pg.typing.Int(min_value=1, default=1), "Stride (the replaced conv's)."),
    ("values", pg.typing.Dict([(pg.typing.StrKey(), pg.typing.Int())], default={}),
     "The solved dynamic sizes for this conv (x0, x1, ...)."),
])
class KernelConv(L.Layer):
    """A conv computed by a searched kernel; ``build`` gives its ``KernelModule``."""

    def env(self, in_shape) -> Dict[str, int]:
        c, h, w = in_shape
        return {"C": c, "O": self.out_channels, "H": h, "W": w, "S": self.stride, "G": self.kernel.groups,
                **dict(self.values)}

    def _output_shape(self, in_shape):
        self._require_image(in_shape)
        c, h, w = in_shape
        if h is None or w is None:
            raise L.ShapeError(f"{self._name()}: a kernel needs a known image size, got {in_shape}")
        if h % self.stride or w % self.stride:
            raise L.ShapeError(f"KernelConv: stride {self.stride} does not divide {h}x{w}")
        try:
            self.kernel.check(self.env(in_shape))
        except KernelRejected as e:
            raise L.ShapeError(f"KernelConv: {e}") from e
        return (self.out_channels, h // self.stride, w // self.stride)

    def _build(self, in_shape) -> nn.Module:
        return KernelModule(self.kernel, self.env(in_shape))

    def _name(self) -> str:
        return f"KernelConv({' -> '.join(self.kernel.names())}, out={self.out_channels}, stride={self.stride})"


def replace_convs(net, kernel: Kernel, solution: Solution, targets: Sequence) -> Any:
    """A copy of ``net`` whose convs at every target's ``paths`` are ``KernelConv``s of ``kernel``."""
    return assign_kernels(net, [(kernel, solution, targets)])


def assign_kernels(net, assignments: Sequence) -> Any:
    """A copy of ``net`` with a kernel per group of targets (per stage or per layer):
    ``assignments`` is ``[(kernel, solution, targets)]``; convs of no listed target stay as they are.
    Raises ValueError when two assignments claim the same conv."""
    replacements = {}
    for kernel, solution, targets in assignments:
        for t in targets:
            if not t.paths:
                raise ValueError(f"target {t.key} names no conv path (use sn.kas.conv_targets(net))")
            values = solution.for_target(t)
            for path in t.paths:
                if path in replacements:
                    raise ValueError(f"the conv at {path} ({t.key}) is assigned two kernels")
                replacements[path] = KernelConv(kernel, out_channels=t.c_out, stride=t.stride, values=values)
    return backbones.replace_convs(net, replacements)


# --------------------------------------------------------------------------- lowering to conv layers


def lower_to_layers(kernel: Kernel, env: Dict[str, int]) -> Optional[List[Any]]:
    """``sn.nn`` layers computing the same function, or None when the kernel is not a chain of
    convolution-like primitives with square kernels, dilation 1 (what TVM's templates cover)."""
    plan = _conv_plan(kernel, env)
    if plan is None:
        return None
    out = []
    for item in plan:
        if item[0] == "relu":
            out.append(L.ReLU())
        else:
            _, c_out, k, groups, depthwise, stride, _ = item
            out.append(L.Conv(c_out, k, stride=stride, groups=1 if depthwise else groups, depthwise=depthwise))
    return out


def transfer_weights(module: KernelModule, kernel: Kernel, built: nn.Module) -> None:
    """Copies ``module``'s weights into ``built`` (the module of ``lower_to_layers``' Sequential)."""
    plan = _conv_plan(kernel, module.env)
    if plan is None:
        raise ValueError("the kernel does not lower to conv layers")
    convs = [m for m in built.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for item, conv in zip([p for p in plan if p[0] == "conv"], convs):
            source, how = item[6]
            weight = module.layers[source].weight
            if how == "fc":
                conv.weight.copy_(weight.reshape(conv.weight.shape))
            elif how == "scale":
                k2 = conv.weight.shape[-1] * conv.weight.shape[-2]
                gain = module.layers[source].gain
                conv.weight.copy_(weight.reshape(conv.weight.shape) * (gain / k2))
            else:
                conv.weight.copy_(weight)


def _conv_plan(kernel: Kernel, env: Dict[str, int]):
    """[("conv", c_out, k, groups, depthwise, stride, (layer index, how)) | ("relu",)] or None."""
    a = kernel.analyze()
    steps = kernel.steps()
    for i, (_, _, inputs) in enumerate(steps, start=1):
        if tuple(inputs) != (i - 1,):
            return None
    stride = env.get("S", 1)
    plan, i, layer = [], 0, 0
    while i < len(steps):
        cls, params, _ = steps[i]
        node_in, node_out = a.shapes[i], a.shapes[i + 1]
        step_stride = stride if (a.strided[i + 1] and not a.strided[i]) else 1
        kind = cls.kind
        if kind == "activation" and params[0] == "relu":
            plan.append(("relu",))
        elif kind == "group":
            pass
        elif kind == "fc":
            if node_in[S.KH] is not None or node_in[S.KW] is not None or node_in[S.D] is not None:
                return None
            g = 1 if node_in[S.G] is None else node_in[S.G].int_value(env)
            depthwise = node_in[S.C] is not None and node_in[S.C].is_one() and g > 1
            plan.append(("conv", node_out[S.C].int_value(env), 1, g, depthwise, step_stride, (layer, "fc")))
            layer += 1
        elif kind == "conv":
            kh, kw, d, depthwise, _ = params
            if kh != kw or d != 1:
                return None
            g = 1 if node_in[S.G] is None else node_in[S.G].int_value(env)
            plan.append(("conv", node_out[S.C].int_value(env), kh, g, depthwise, step_stride, (layer, "conv")))
            layer += 1
        elif kind == "unfold" and params[0] == "HW" and params[2] == 1 and i + 1 < len(steps):
            nxt, nparams, _ = steps[i + 1]
            k = params[1]
            out_stride = stride if (a.strided[i + 2] and not a.strided[i]) else 1
            if nxt.kind == "fc":
                g = 1 if node_in[S.G] is None else node_in[S.G].int_value(env)
                depthwise = node_in[S.C] is not None and node_in[S.C].is_one() and g > 1
                plan.append(("conv", a.shapes[i + 2][S.C].int_value(env), k, g, depthwise, out_stride, (layer, "fc")))
                layer += 1
                i += 2
                continue
            if nxt.kind == "scale" and i + 2 < len(steps) and steps[i + 2][0].kind == "fold" and \
                    steps[i + 2][1] == ("K", "avg") and node_in[S.G] is None and nparams[0] in ("channel",) and \
                    node_in[S.KH] is None and node_in[S.KW] is None:
                c = S.channels(node_in).int_value(env)
                plan.append(("conv", c, k, c, True, stride if (a.strided[i + 3] and not a.strided[i]) else 1,
                             (layer, "scale")))
                layer += 1
                i += 3
                continue
            return None
        else:
            return None
        i += 1
    return plan if any(p[0] == "conv" for p in plan) else None
