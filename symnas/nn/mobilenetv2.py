"""MobileNetV2 (Sandler et al. 2018), CIFAR-sized, as a symbolic network of inverted bottlenecks.

The network is a list of stages; a stage has one output width and one kernel size and
expansion factor per block, so search spaces only swap values for ``pg.oneof``
(``symnas.spaces.mobilenetv2_s1/s2/s3``).

Example::

    import symnas as sn
    net = sn.nn.mobilenetv2(width_multiplier=0.5)        # the static network
    module = net.build((3, 32, 32))                       # features (640, 4, 4); Trainer adds the head
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from symnas.nn import layers as L

__all__ = ["InvertedBottleneckStage", "MobileNetV2", "mobilenetv2", "MOBILENETV2_STAGES"]

# (expansion t, output channels c, blocks n, first stride s) from the paper's Table 2, with
# the CIFAR change (the second stage keeps stride 1, the stem has stride 1).
MOBILENETV2_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(value: float, divisor: int = 8) -> int:
    """Rounds a width to a multiple of ``divisor``, never below 90% of it (as in the paper's code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedBottleneckStage(L.Layer):
    """Blocks of ``sn.nn.MBConv`` with one output width; block ``i`` has kernel ``kernels[i]``
    and expansion ``expansions[i]``; the first block has ``stride``."""
    out_channels: int
    kernels: List[int]
    expansions: List[int]
    stride: int = 1

    def blocks(self) -> List[L.MBConv]:
        if len(self.kernels) != len(self.expansions) or not self.kernels:
            raise ValueError(
                f"InvertedBottleneckStage: kernels {list(self.kernels)} and expansions "
                f"{list(self.expansions)} need the same, non-zero, length (one per block).")
        return [L.MBConv(self.out_channels, kernel=k, expansion=e, stride=self.stride if i == 0 else 1)
                for i, (k, e) in enumerate(zip(self.kernels, self.expansions))]

    def _output_shape(self, in_shape):
        return L.Sequential(self.blocks()).output_shape(in_shape)

    def _build(self, in_shape):
        return L.Sequential(self.blocks()).build(in_shape)


class MobileNetV2(L.Layer):
    """Stem convolution, inverted-bottleneck stages, 1x1 convolution to ``last_channels``.

    With ``num_classes=None`` it is a feature extractor (``sn.train.Trainer`` adds the
    pool + linear head); otherwise it ends with global pooling, ``dropout`` and a linear layer.
    """
    stages: List[InvertedBottleneckStage]
    stem_channels: int = 32
    stem_stride: int = 1
    last_channels: int = 1280
    num_classes: Optional[int] = None
    dropout: float = 0.0

    def layers(self) -> List[L.Layer]:
        layers: List[L.Layer] = [L.ConvBN(self.stem_channels, 3, stride=self.stem_stride,
                                          activation=L.ReLU6())]
        layers.extend(self.stages)
        layers.append(L.ConvBN(self.last_channels, 1, activation=L.ReLU6()))
        if self.num_classes is not None:
            layers.append(L.GlobalPool())
            if self.dropout:
                layers.append(L.Dropout(self.dropout))
            layers.append(L.Dense(self.num_classes))
        return layers

    def _output_shape(self, in_shape):
        return L.Sequential(self.layers()).output_shape(in_shape)

    def _build(self, in_shape):
        return L.Sequential(self.layers()).build(in_shape)


def mobilenetv2(width_multiplier: float = 1.0, num_classes: Optional[int] = None,
                stages=MOBILENETV2_STAGES, kernel: int = 3) -> MobileNetV2:
    """The static CIFAR MobileNetV2 (3x3 depthwise kernels, the paper's expansions and widths)."""
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}.")
    return MobileNetV2(
        stages=[InvertedBottleneckStage(_divisible(c * width_multiplier), kernels=[kernel] * n,
                                        expansions=[t] * n, stride=s)
                for t, c, n, s in stages],
        stem_channels=_divisible(32 * width_multiplier),
        # Scaled with the width too (the paper keeps 1280 below 1.0), so small nets stay cheap on CPU.
        last_channels=_divisible(1280 * width_multiplier),
        num_classes=num_classes)
