"""Symbolic CIFAR backbones whose convolutions can be swapped for transformed kernels.

Each backbone is a flat ``sn.nn.Sequential`` (stem, blocks, head) of symbolic layers, so
one object gives the torch module for training (``build``) and, per convolution, the
loop-nest operator that ``sn.program`` transforms and compiles. A convolution is replaced
by a transformed kernel through symbolic rebinding:

Example::

    import symnas as sn
    net = sn.nn.resnet34()
    sites = sn.nn.transformable_convs(net)                 # convs inside blocks, with shapes
    site = sites[0]
    sched = sn.program.Schedule(site.operator(), steps=[sn.program.Group(2)])
    fast = sn.nn.replace_convs(net, {site.path: sched})    # = net.clone(deep=True).rebind(...)
    model = fast.build((3, 32, 32))                        # torch module with the grouped conv
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyglove as pg
from torch import nn

from symnas.nn.layers import (Activation, AvgPool, BatchNorm, Concat, Conv, Dense, Dropout, GlobalPool, Identity,
                              Layer, ReLU, Residual, Sequential, Shape, ShapeError, Stacked, _Elementwise, as_shape)

__all__ = ["resnet18", "resnet34", "resnet", "resnext29_2x64d", "densenet161", "densenet", "backbone",
           "BACKBONES", "TransformedConv", "ConvSite", "transformable_convs", "private_input_convs",
           "unread_channel_flops", "replace_convs", "torch_name"]

CIFAR_SHAPE = (3, 32, 32)


# --------------------------------------------------------------------------- transformed kernel as a layer


class TransformedConv(Layer):
    """A convolution computed by a transformed kernel: ``schedule`` is a ``sn.program.Schedule``.

    ``build`` returns the schedule's equivalent torch module (for training and proxies);
    the same schedule lowers to the TVM kernel (``schedule.measure()``) for inference.
    """
    schedule: Any

    def _operator(self):
        op = getattr(self.schedule, "op", None) or getattr(self.schedule, "operator", None)
        if op is None:
            raise TypeError(f"TransformedConv needs a sn.program.Schedule, got {type(self.schedule).__name__}")
        return op

    def _output_shape(self, in_shape: Shape) -> Shape:
        self._require_image(in_shape)
        op = self._operator()
        expected = (op.c_in, op.h, op.w)
        if tuple(d if d is not None else e for d, e in zip(in_shape, expected)) != expected:
            raise ShapeError(f"TransformedConv: the schedule's operator takes {expected}, got {in_shape}")
        shape = tuple(self.schedule.output_shape)
        return shape[-3:]

    def _build(self, in_shape: Shape) -> nn.Module:
        return self.schedule.to_torch()


# --------------------------------------------------------------------------- finding and replacing convs


@dataclasses.dataclass(frozen=True)
class ConvSite:
    """A transformable convolution of a backbone: where it is and the shapes it sees."""
    path: str                 # symbolic key path, for ``net.rebind({path: ...})``
    layer: Any                # the symbolic Conv (or TransformedConv) at ``path``
    in_shape: Tuple[int, int, int]
    out_shape: Tuple[int, int, int]

    @property
    def torch_name(self) -> str:
        """The name of this conv's module in ``net.build(...)``'s ``named_modules()``."""
        return torch_name(self.path)

    def operator(self, batch: int = 1):
        """The loop-nest operator (``sn.program.Conv2d``) of the original convolution."""
        from symnas import program  # pylint: disable=import-outside-toplevel
        conv = self.layer
        if isinstance(conv, TransformedConv):
            op = conv._operator()
            return op if op.batch == batch else op.clone(override={"batch": batch})
        (kh, kw), stride, padding = conv._geometry()     # as sn.nn.Conv builds it
        if stride[0] != stride[1]:
            raise ValueError(f"{self.path}: sn.program convs take one stride for both axes, got {stride}")
        groups = self.in_shape[0] if conv.depthwise else conv.groups
        if conv.padding is None and kh % 2 and kw % 2:
            padding = None        # the operator's default pads the same (and keeps saved kernel tables' keys)
        elif padding[0] == padding[1]:
            padding = padding[0]
        return program.Conv2d(c_in=self.in_shape[0], c_out=self.out_shape[0], h=self.in_shape[1],
                              w=self.in_shape[2], k=kh, kw=None if kw == kh else kw, stride=stride[0],
                              padding=padding, groups=groups, dilation=conv.dilation, batch=batch)

    def kernel(self):
        """The ``sn.program.Kernel`` this conv computes (its neural steps applied), batch 1."""
        if isinstance(self.layer, TransformedConv):
            return self.layer.schedule.kernel()
        return self.operator().kernel()

    @property
    def key(self) -> Tuple:
        """What makes two sites the same kernel: shapes, kernel size, stride, groups."""
        conv = self.layer
        if isinstance(conv, TransformedConv):
            op = conv._operator()
            return ("conv", op.c_in, op.c_out, op.h, op.w, op.k, op.stride, op.groups) + (
                () if op.window[0] == op.window[1] and op.dilation == 1 else (op.window, op.dilation))
        return ("conv",) + self.in_shape + (self.out_shape[0], str(conv.kernel), str(conv.stride),
                                           self.in_shape[0] if conv.depthwise else conv.groups) + (
            () if conv.dilation == 1 else (conv.dilation,))


def torch_name(path: str) -> str:
    """Maps a symbolic key path of a layer tree to the module name in the built torch module.

    ``layers[4].body.layers[3]`` -> ``4.body.3``; ``branches[0]`` -> ``branches.0``.
    """
    name = re.sub(r"(^|\.)layers\[(\d+)\]", r"\1\2", str(path))
    name = re.sub(r"\[(\d+)\]", r".\1", name)
    return name


def transformable_convs(net: Layer, in_shape=CIFAR_SHAPE, include_all: bool = False) -> List[ConvSite]:
    """Convolutions inside residual bodies and dense-layer branches (not stems, shortcuts, transitions).

    ``include_all=True`` lists every convolution (what an inference compiler must run).
    A network with none raises ``ValueError``.
    """
    sites: List[ConvSite] = []
    _walk(net, as_shape(in_shape), pg.KeyPath(), inside_block=include_all, include_all=include_all,
          sites=sites)
    if not sites:
        raise ValueError(f"{type(net).__name__} has no transformable convolution (convs inside residual "
                         f"bodies or concat branches); nothing to transform")
    return sites


def private_input_convs(net: Layer) -> List[str]:
    """Key paths of the convs whose input only they read: the conv before them in the same
    ``Sequential`` feeds them through channel-wise layers only (batch norm, activations).

    Channels such a conv does not read (an input bottleneck, ``Bottleneck(axis="ci")``) are
    computed by that earlier conv for nothing (``unread_channel_flops``); a conv that reads a
    residual stream or a concatenation shares its input and is not listed. Example::

        import symnas as sn
        assert sn.nn.private_input_convs(sn.nn.resnet18())[0] == "layers[3].body.layers[3]"
    """
    return [consumer for _, consumer in _producer_consumer_pairs(net)]


def unread_channel_flops(net: Layer, in_shape=CIFAR_SHAPE) -> Dict[str, Tuple[int, int]]:
    """For each conv whose output only the next conv reads: (FLOPs it spends on output channels that
    the next conv never reads, its FLOPs), by key path; batch 1.

    An input bottleneck on the reading conv leaves channels of the producing conv unread; an
    inference compiler could skip computing them (dead code). Example::

        import symnas as sn
        net = sn.nn.resnet((1, 1, 1, 1), width=8)
        site = {s.path: s for s in sn.nn.transformable_convs(net)}["layers[3].body.layers[3]"]
        half = sn.program.Schedule(site.operator(), [sn.program.Bottleneck(2, axis="ci")])
        unread, total = sn.nn.unread_channel_flops(sn.nn.replace_convs(net, {site.path: half}))["layers[3].body.layers[0]"]
        assert unread * 2 == total
    """
    sites = {s.path: s for s in transformable_convs(net, in_shape, include_all=True)}
    result = {}
    for producer, consumer in _producer_consumer_pairs(net):
        made, used = sites[producer].kernel(), sites[consumer].kernel()
        read = set()
        for part in used.parts:
            read.update(used.input_channels(part))
        per_channel = [0] * made.output_shape()[1]
        for (channel, _), part in zip(made.placements(), made.parts):
            flops = 2 * made.batch * made.rows(part) * made.cols * part.ci_per_group * made.kh * made.kw
            for c in range(channel, channel + part.c_out):
                per_channel[c] += flops
        result[producer] = (sum(f for c, f in enumerate(per_channel) if c not in read), sum(per_channel))
    return result


def _producer_consumer_pairs(net: Layer) -> List[Tuple[str, str]]:
    """(conv, the conv that alone reads its output through channel-wise layers), in network order."""
    pairs: List[Tuple[str, str]] = []
    channelwise = (BatchNorm, Activation, _Elementwise, Identity, Dropout)

    def visit(layer, path: str) -> None:
        prefix = f"{path}." if path else ""
        if isinstance(layer, Sequential):
            producer = None
            for i, child in enumerate(layer.layers):
                child_path = f"{prefix}layers[{i}]"
                if isinstance(child, (Conv, TransformedConv)):
                    if producer is not None:
                        pairs.append((producer, child_path))
                    producer = child_path
                elif not isinstance(child, channelwise):
                    producer = None
                visit(child, child_path)
        elif isinstance(layer, Residual):
            visit(layer.body, f"{prefix}body")
            if layer.shortcut is not None:
                visit(layer.shortcut, f"{prefix}shortcut")
        elif isinstance(layer, Concat):
            for i, branch in enumerate(layer.branches):
                visit(branch, f"{prefix}branches[{i}]")

    visit(net, "")
    return pairs


def _walk(layer, in_shape, path, inside_block, include_all, sites) -> Shape:
    if isinstance(layer, (Conv, TransformedConv)):
        out_shape = layer.output_shape(in_shape)
        if inside_block and not (isinstance(layer, Conv) and layer.depthwise and not include_all):
            sites.append(ConvSite(str(path), layer, tuple(in_shape), tuple(out_shape)))
        return out_shape
    if isinstance(layer, Sequential):
        shape = in_shape
        for i, child in enumerate(layer.layers):
            shape = _walk(child, shape, pg.KeyPath(["layers", i], path), inside_block, include_all, sites)
        return shape
    if isinstance(layer, Residual):
        body_shape = _walk(layer.body, in_shape, pg.KeyPath("body", path), True, include_all, sites)
        if layer.shortcut is not None:
            _walk(layer.shortcut, in_shape, pg.KeyPath("shortcut", path), include_all, include_all, sites)
        return layer.output_shape(in_shape) if layer.post is not None else body_shape
    if isinstance(layer, Concat):
        for i, branch in enumerate(layer.branches):
            _walk(branch, in_shape, pg.KeyPath(["branches", i], path), True, include_all, sites)
        return layer.output_shape(in_shape)
    if isinstance(layer, Stacked):
        return layer.output_shape(in_shape)   # one symbolic op shared by repeats: not rebindable per conv
    return layer.output_shape(in_shape)


def replace_convs(net: Layer, replacements: Dict[str, Any]) -> Layer:
    """A copy of ``net`` with the convs at the given key paths replaced.

    A value may be a ``sn.program.Schedule`` (wrapped in ``TransformedConv``), a
    ``TransformedConv`` or any symbolic layer. The original is left unchanged; no
    replacements give an unchanged copy.
    """
    updates = {}
    for path, value in replacements.items():
        if not isinstance(value, Layer) and hasattr(value, "to_torch"):
            value = TransformedConv(value)
        updates[str(path)] = value
    copy = net.clone(deep=True).seal(False)      # a read-only (sealed) network gives a writable copy
    known = {str(k) for k in pg.query(copy, where=lambda v: isinstance(v, (Conv, TransformedConv)))}
    unknown = [p for p in updates if p not in known]
    if unknown:
        raise KeyError(f"no convolution at {unknown} in the network (known e.g. {sorted(known)[:3]})")
    if updates:
        copy.rebind(updates, skip_notification=True)
    return copy


# --------------------------------------------------------------------------- ResNet


def _basic_block(channels: int, stride: int, in_channels: int) -> Residual:
    body = Sequential([Conv(channels, 3, stride=stride), BatchNorm(), ReLU(),
                       Conv(channels, 3), BatchNorm()])
    if stride != 1 or in_channels != channels:
        shortcut = Sequential([Conv(channels, 1, stride=stride, padding=0), BatchNorm()])
    else:
        shortcut = Identity()
    return Residual(body, shortcut=shortcut, post=ReLU())


def resnet(blocks: Sequence[int] = (3, 4, 6, 3), num_classes: int = 10, width: int = 64) -> Sequential:
    """CIFAR ResNet with basic blocks (3x3 stem, no max-pool; stages of width, 2x, 4x, 8x channels)."""
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"resnet needs four positive block counts, got {blocks!r}")
    layers: List[Any] = [Conv(width, 3), BatchNorm(), ReLU()]
    in_channels = width
    for stage, count in enumerate(blocks):
        channels = width * 2 ** stage
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(_basic_block(channels, stride, in_channels))
            in_channels = channels
    layers += [GlobalPool(), Dense(num_classes)]
    return Sequential(layers)


def resnet18(num_classes: int = 10) -> Sequential:
    """CIFAR ResNet-18 (2, 2, 2, 2 basic blocks); 11.2M parameters for 10 classes."""
    return resnet((2, 2, 2, 2), num_classes)


def resnet34(num_classes: int = 10) -> Sequential:
    """CIFAR ResNet-34 (3, 4, 6, 3 basic blocks); 21.3M parameters for 10 classes."""
    return resnet((3, 4, 6, 3), num_classes)


# --------------------------------------------------------------------------- ResNeXt


def resnext29_2x64d(num_classes: int = 10, cardinality: int = 2, bottleneck_width: int = 64) -> Sequential:
    """CIFAR ResNeXt-29 (Xie et al.): 3 stages x 3 bottleneck blocks, grouped 3x3 convs (cardinality 2,
    64 channels per group in stage 1), outputs 256/512/1024 channels; 9.1M parameters."""
    layers: List[Any] = [Conv(64, 3), BatchNorm(), ReLU()]
    in_channels = 64
    for stage in range(3):
        width = cardinality * bottleneck_width * 2 ** stage
        out = 256 * 2 ** stage
        for i in range(3):
            stride = 2 if stage > 0 and i == 0 else 1
            body = Sequential([Conv(width, 1, padding=0), BatchNorm(), ReLU(),
                               Conv(width, 3, stride=stride, groups=cardinality), BatchNorm(), ReLU(),
                               Conv(out, 1, padding=0), BatchNorm()])
            shortcut = (Sequential([Conv(out, 1, stride=stride, padding=0), BatchNorm()])
                        if stride != 1 or in_channels != out else Identity())
            layers.append(Residual(body, shortcut=shortcut, post=ReLU()))
            in_channels = out
    layers += [GlobalPool(), Dense(num_classes)]
    return Sequential(layers)


# --------------------------------------------------------------------------- DenseNet


def densenet(blocks: Sequence[int] = (6, 12, 36, 24), growth: int = 48, num_classes: int = 10,
             bn_size: int = 4, compression: float = 0.5) -> Sequential:
    """CIFAR DenseNet-BC (pre-activation dense layers BN-ReLU-1x1-BN-ReLU-3x3, transitions BN-ReLU-1x1-avgpool)."""
    channels = 2 * growth
    layers: List[Any] = [Conv(channels, 3)]
    for b, count in enumerate(blocks):
        for _ in range(count):
            body = Sequential([BatchNorm(), ReLU(), Conv(bn_size * growth, 1, padding=0),
                               BatchNorm(), ReLU(), Conv(growth, 3)])
            layers.append(Concat([body], include_input=True))
            channels += growth
        if b != len(blocks) - 1:
            channels = int(channels * compression)
            layers += [BatchNorm(), ReLU(), Conv(channels, 1, padding=0), AvgPool(2, stride=2, padding=0)]
    layers += [BatchNorm(), ReLU(), GlobalPool(), Dense(num_classes)]
    return Sequential(layers)


def densenet161(num_classes: int = 10) -> Sequential:
    """CIFAR DenseNet-161 (blocks 6/12/36/24, growth 48, 96 stem channels); 26.5M parameters."""
    return densenet((6, 12, 36, 24), 48, num_classes)


BACKBONES = {"resnet18": resnet18, "resnet34": resnet34, "resnext29_2x64d": resnext29_2x64d,
             "densenet161": densenet161}


def backbone(name: str, num_classes: int = 10) -> Sequential:
    """A backbone by name: resnet18, resnet34, resnext29_2x64d, densenet161 (mobilenetv2 when available)."""
    if name == "mobilenetv2":
        from symnas.nn import mobilenetv2 as mnv2  # pylint: disable=import-outside-toplevel
        return mnv2.mobilenetv2(num_classes=num_classes)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    return BACKBONES[name](num_classes)
