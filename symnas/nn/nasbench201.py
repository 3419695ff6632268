"""The NAS-Bench-201 cell network (Dong & Yang, ICLR 2020) as a torch module.

Macro skeleton (``TinyNetwork`` of the NB201 code): a 3x3 conv stem with C channels, three stages
of N cells (C, 2C, 4C channels) joined by two ResNet reduction blocks (stride 2), then
BN-ReLU, global average pooling and a linear classifier. A cell has 4 nodes; node j sums
``op_{j<-i}(node_i)`` over i < j; the output is node 3. Edge order is the NB201 one:
(1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

Example::

    import torch
    from symnas.nn.nasbench201 import NASBench201Network
    net = NASBench201Network(['nor_conv_3x3', 'none', 'nor_conv_3x3',
                              'skip_connect', 'none', 'skip_connect'])
    logits = net(torch.zeros(2, 3, 32, 32))         # shape (2, 10)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["NB201_OPS", "NB201_EDGES", "NASBench201Network", "NASBench201Cell"]

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


class _ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class _Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def _make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return _Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return _ReLUConvBN(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return _ReLUConvBN(channels, channels, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}; expected one of {NB201_OPS}.")


class NASBench201Cell(nn.Module):
    """One 4-node cell with the 6 given edge ops (stride 1, channels preserved)."""

    def __init__(self, ops: Sequence[str], channels: int):
        super().__init__()
        if len(ops) != len(NB201_EDGES):
            raise ValueError(f"a NAS-Bench-201 cell has {len(NB201_EDGES)} edges, got {len(ops)} ops.")
        self.edges = nn.ModuleList(_make_op(op, channels) for op in ops)

    def forward(self, x):
        nodes = [x]
        for j in (1, 2, 3):
            nodes.append(sum(self.edges[e](nodes[i]) for e, (to, i) in enumerate(NB201_EDGES)
                             if to == j))
        return nodes[3]


class _ResNetReduction(nn.Module):
    """NB201's ResNetBasicblock with stride 2 between stages."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = _ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = _ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2),
                                        nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NASBench201Network(nn.Module):
    """The full NB201 network for a cell given as 6 op names (NB201 edge order)."""

    def __init__(self, ops: Sequence[str], C: int = 16, N: int = 5, num_classes: int = 10):
        super().__init__()
        ops = list(ops)
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        cells = []
        c_prev = C
        for stage, c in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                cells.append(_ResNetReduction(c_prev, c))
            cells.extend(NASBench201Cell(ops, c) for _ in range(N))
            c_prev = c
        self.cells = nn.Sequential(*cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))
