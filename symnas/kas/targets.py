"""The convolutions a kernel replaces, and the budget it must fit.

A :class:`ConvTarget` is one distinct conv shape of a network (with how many convs share it);
``conv_targets(net)`` lists them for a symbolic backbone. A :class:`Budget` bounds the kernel's
FLOPs and/or weights summed over every replaced conv, as a fraction of the original convs'.

Example::

    import symnas as sn
    targets = sn.kas.conv_targets(sn.nn.resnet34())
    print([t.key for t in targets])          # 7 distinct 3x3 convs of ResNet-34's 32
    budget = sn.kas.Budget(flops=0.125)      # at most 1/8 of their multiply-adds
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence

import pyglove as pg

__all__ = ["ConvTarget", "TargetData", "Budget", "conv_targets"]


class TargetData(NamedTuple):
    """A ConvTarget's numbers as a plain tuple (the solvers' inner loops read these)."""
    c_in: int
    c_out: int
    h: int
    w: int
    stride: int
    count: int
    key: str
    macs: int
    weights: int


@pg.members([
    ("c_in", pg.typing.Int(min_value=1), "Input channels."),
    ("c_out", pg.typing.Int(min_value=1), "Output channels."),
    ("h", pg.typing.Int(min_value=1), "Input height."),
    ("w", pg.typing.Int(min_value=1), "Input width."),
    ("stride", pg.typing.Int(min_value=1, default=1), "Stride (the output is h/stride x w/stride)."),
    ("k", pg.typing.Int(min_value=1, default=3), "The original conv's kernel size."),
    ("groups", pg.typing.Int(min_value=1, default=1), "The original conv's groups."),
    ("count", pg.typing.Int(min_value=1, default=1), "How many convs of the network have this shape."),
    ("paths", pg.typing.List(pg.typing.Str(), default=[]), "Their key paths in the symbolic network."),
])
class ConvTarget(pg.Object):
    """One conv shape a kernel replaces: ``[c_in, h, w] -> [c_out, h/stride, w/stride]``."""

    def _on_bound(self):
        super()._on_bound()
        if self.h % self.stride or self.w % self.stride:
            raise ValueError(f"ConvTarget: stride {self.stride} does not divide {self.h}x{self.w}")

    @property
    def key(self) -> str:
        kind = "" if self.k == 3 and self.groups == 1 else f"k{self.k}" + (f"g{self.groups}" if self.groups > 1 else "")
        return f"{self.c_in}-{self.c_out}@{self.h}x{self.w}/s{self.stride}{kind}"

    @property
    def out_h(self) -> int:
        return self.h // self.stride

    @property
    def out_w(self) -> int:
        return self.w // self.stride

    def macs(self) -> int:
        """Multiply-adds of one original conv at batch 1."""
        return self.c_in // self.groups * self.c_out * self.k * self.k * self.out_h * self.out_w

    def weights(self) -> int:
        return self.c_in // self.groups * self.c_out * self.k * self.k

    def data(self) -> TargetData:
        return TargetData(self.c_in, self.c_out, self.h, self.w, self.stride, self.count, self.key, self.macs(),
                          self.weights())


@pg.members([
    ("flops", pg.typing.Float(min_value=0.0).noneable(),
     "Kernel FLOPs (multiply-adds + other arithmetic ops) over the replaced convs' multiply-adds."),
    ("params", pg.typing.Float(min_value=0.0).noneable(),
     "Kernel weights over the replaced convs' weights."),
])
class Budget(pg.Object):
    """Analytical constraints (seed 003 §6.3), as fractions of the replaced convolutions' cost,
    summed over every replaced conv (``ConvTarget.count`` included)."""

    def _on_bound(self):
        super()._on_bound()
        if self.flops is None and self.params is None:
            raise ValueError("Budget: give flops and/or params (fractions of the original convs' cost)")

    def limits(self, targets: Sequence[ConvTarget]) -> Dict[str, float]:
        """The absolute limits (FLOPs, weights) for these targets."""
        data = [t.data() if isinstance(t, ConvTarget) else t for t in targets]
        out = {}
        if self.flops is not None:
            out["flops"] = self.flops * sum(t.macs * t.count for t in data)
        if self.params is not None:
            out["params"] = self.params * sum(t.weights * t.count for t in data)
        return out


def conv_targets(net, in_shape=(3, 32, 32), kernel_size=3, paths: Optional[Sequence[str]] = None,
                 same_channels: Optional[bool] = None) -> List[ConvTarget]:
    """The distinct convs inside the blocks of a symbolic ``sn.nn`` network whose kernel size is
    ``kernel_size`` (an int or a tuple of them: ``(1, 3)`` also replaces the 1x1 convs); square,
    undilated windows only.

    ``paths`` keeps only those convs; ``same_channels=True`` keeps only convs with
    ``c_in == c_out`` (False: only the others). Raises ValueError when none is left.
    """
    sizes = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    from symnas.nn import backbones  # pylint: disable=import-outside-toplevel
    found: Dict[tuple, dict] = {}
    for site in backbones.transformable_convs(net, in_shape):
        try:
            op = site.operator()
        except ValueError:                  # unequal strides: not a conv a target describes
            continue
        if op.k not in sizes or op.window != (op.k, op.k) or op.dilation != 1 or \
                (paths is not None and site.path not in paths):
            continue
        if same_channels is not None and (op.c_in == op.c_out) != same_channels:
            continue
        key = (op.c_in, op.c_out, op.h, op.w, op.stride, op.groups, op.k)
        entry = found.setdefault(key, {"count": 0, "paths": []})
        entry["count"] += 1
        entry["paths"].append(site.path)
    if not found:
        raise ValueError(f"no convolution of kernel size {kernel_size} in the network matches "
                         f"(paths={paths}, same_channels={same_channels})")
    return [ConvTarget(c_in=k[0], c_out=k[1], h=k[2], w=k[3], stride=k[4], k=k[6], groups=k[5],
                       count=v["count"], paths=v["paths"]) for k, v in found.items()]


def group_choices(targets: Sequence[ConvTarget], largest: int = 16) -> List[int]:
    """Powers of two (2..largest) that divide every target's channel counts: the values of G."""
    g = 0
    for t in targets:
        g = math.gcd(g, math.gcd(t.c_in, t.c_out))
    out = [v for v in (2, 4, 8, 16, 32, 64) if v <= largest and g % v == 0]
    return out or [1]
