"""A searched kernel as a layer of a symbolic ``sn.nn`` network, in place of the convs it replaces.

``KernelConv(kernel, out_channels, stride, values)`` builds the kernel's torch module for the
input shape it receives; ``replace_convs(net, kernel, solution, targets)`` puts one at every
target conv of ``net`` (each with its own solved sizes). ``lower_to_layers`` rewrites a kernel
that is a chain of convolution-like primitives (FC, unfold + FC, unfold + per-channel scale +
fold, Conv; k x k, k x 1 or 1 x k windows, dilated or not; ReLU) as ``sn.nn.Conv``/``ReLU`` layers,
which ``sn.nn.compile_network`` compiles to TVM kernels; ``transfer_weights`` copies a trained kernel's weights into them.

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

__all__ = ["KernelConv", "replace_convs", "assign_kernels", "lower_to_layers", "transfer_weights", "conv_chain"]


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
    convolution-like primitives (FC; unfold along H, W or both + FC; unfold + per-channel scale +
    fold; Conv; ReLU). Windows may be k x k, k x 1 or 1 x k and dilated: ``sn.program`` has TVM
    operators for all of them (``sn.nn.compile_network``)."""
    plan = _conv_plan(kernel, env)
    if plan is None:
        return None
    out = []
    for item in plan:
        if item[0] == "relu":
            out.append(L.ReLU())
        else:
            _, c_out, (kh, kw), groups, depthwise, stride, dilation, _ = item
            out.append(L.Conv(c_out, kh if kh == kw else (kh, kw), stride=stride,
                              groups=1 if depthwise else groups, depthwise=depthwise, dilation=dilation))
    return out


def conv_chain(kernel: Kernel, env: Dict[str, int]):
    """The kernel as one ``sn.program.ConvChain`` (two convs, a ReLU between or not) at the sizes of
    ``env`` (``C``, ``H``, ``W``, ``S`` and the solved variables), or None when it lowers to another
    number of convs or not at all. Example::

        import symnas as sn
        chain = sn.kas.conv_chain(sn.kas.spatially_separable(), {"C": 16, "O": 16, "H": 8, "W": 8, "S": 1, "x0": 8})
        assert (chain.first.window, chain.second.window) == ((3, 1), (1, 3))
    """
    from symnas import program  # pylint: disable=import-outside-toplevel
    plan = _conv_plan(kernel, env)
    if plan is None:
        return None
    kinds = [p[0] for p in plan]
    if kinds not in (["conv", "conv"], ["conv", "relu", "conv"]):
        return None
    ops, c, h, w = [], env["C"], env["H"], env["W"]
    for _, c_out, (kh, kw), groups, depthwise, stride, dilation, _ in (p for p in plan if p[0] == "conv"):
        pads = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)   # sn.nn.Conv's 'same' padding
        op = program.Conv2d(c_in=c, c_out=c_out, h=h, w=w, k=kh, kw=None if kw == kh else kw, stride=stride,
                            padding=pads[0] if pads[0] == pads[1] else pads, groups=c if depthwise else groups,
                            dilation=dilation)
        ops.append(op)
        _, c, h, w = op.kernel().output_shape()
    return program.ConvChain(ops[0], ops[1], relu="relu" in kinds)


def transfer_weights(module: KernelModule, kernel: Kernel, built: nn.Module) -> None:
    """Copies ``module``'s weights into ``built`` (the module of ``lower_to_layers``' Sequential)."""
    plan = _conv_plan(kernel, module.env)
    if plan is None:
        raise ValueError("the kernel does not lower to conv layers")
    convs = [m for m in built.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for item, conv in zip([p for p in plan if p[0] == "conv"], convs):
            source, how = item[-1]
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
    """[("conv", c_out, (kh, kw), groups, depthwise, stride, dilation, (layer index, how)) | ("relu",)]
    or None."""
    a = kernel.analyze()
    steps = kernel.steps()
    for i, (_, _, inputs) in enumerate(steps, start=1):
        if tuple(inputs) != (i - 1,):
            return None
    stride = env.get("S", 1)
    plan, i, layer = [], 0, 0

    def unfolded(shape) -> bool:
        return shape[S.KH] is not None or shape[S.KW] is not None or shape[S.D] is not None

    def groups_of(shape):
        g = 1 if shape[S.G] is None else shape[S.G].int_value(env)
        return g, shape[S.C] is not None and shape[S.C].is_one() and g > 1

    def strided(first: int, last: int) -> int:
        """The stride of steps ``first..last`` (node numbers of their input and output)."""
        return stride if (a.strided[last] and not a.strided[first]) else 1

    while i < len(steps):
        cls, params, _ = steps[i]
        node_in, node_out = a.shapes[i], a.shapes[i + 1]
        kind = cls.kind
        if kind == "activation" and params[0] == "relu":
            plan.append(("relu",))
        elif kind == "group":
            pass
        elif kind == "fc":
            if unfolded(node_in):
                return None
            g, depthwise = groups_of(node_in)
            plan.append(("conv", node_out[S.C].int_value(env), (1, 1), g, depthwise, strided(i, i + 1), 1,
                         (layer, "fc")))
            layer += 1
        elif kind == "conv":
            kh, kw, d, depthwise, _ = params
            g = 1 if node_in[S.G] is None else node_in[S.G].int_value(env)
            plan.append(("conv", node_out[S.C].int_value(env), (kh, kw), g, depthwise, strided(i, i + 1), d,
                         (layer, "conv")))
            layer += 1
        elif kind == "unfold" and i + 1 < len(steps) and not unfolded(node_in):
            axis, k, d = params
            window = (k if "H" in axis else 1, k if "W" in axis else 1)
            nxt, nparams, _ = steps[i + 1]
            if nxt.kind == "fc":
                g, depthwise = groups_of(node_in)
                plan.append(("conv", a.shapes[i + 2][S.C].int_value(env), window, g, depthwise, strided(i, i + 2),
                             d, (layer, "fc")))
                layer += 1
                i += 2
                continue
            if axis == "HW" and nxt.kind == "scale" and i + 2 < len(steps) and steps[i + 2][0].kind == "fold" and \
                    steps[i + 2][1] == ("K", "avg") and node_in[S.G] is None and nparams[0] in ("channel",):
                c = S.channels(node_in).int_value(env)
                plan.append(("conv", c, window, c, True, strided(i, i + 3), d, (layer, "scale")))
                layer += 1
                i += 3
                continue
            return None
        else:
            return None
        i += 1
    return plan if any(p[0] == "conv" for p in plan) else None
