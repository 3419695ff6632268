"""Layers an accelerator runs, taken from symnas' symbolic networks and tensor-program schedules.

A ``Layer`` is one convolution or dense layer as ZigZag's loop nest: ``B`` (batch), ``K`` (output
channels per group), ``C`` (input channels per group), ``G`` (groups; grouped layers only),
``OY``/``OX`` (output rows, columns), ``FY``/``FX`` (kernel rows, columns), with strides.
``network_layers(net)`` lists the layers of a ``sn.nn`` network (ResNets, ResNeXt, DenseNet,
MobileNetV2, any ``Sequential`` / ``Residual`` / ``Concat`` tree), original or transformed: a conv
replaced by a ``sn.program.Schedule`` contributes the kernel its neural steps produce (a bottleneck
shrinks ``K`` or ``C`` or strides ``OY``/``OX``, a grouping adds ``G``, a partition gives one layer
per part), and the schedule's program steps (``Split``, ``Reorder``, ``Tile``, ...) give the layer a
loop ``order`` that the cost model hands to ZigZag as the temporal ordering. ``torch_layers(module,
in_shape)`` reads any torch module's convolutions and linear layers (NAS-Bench-201 networks).

Example::

    import symnas as sn
    layers = sn.hw.network_layers(sn.nn.resnet18())
    print(len(layers), layers[1])            # 21 layers; Layer(name='3.body.0', K=64, C=64, ...)
    sched = sn.program.Schedule(sn.program.Conv2d(64, 64, 32, 32), [sn.program.Group(2)])
    sn.hw.schedule_layers(sched)[0].G        # 2
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["Layer", "network_layers", "schedule_layers", "kernel_layers", "torch_layers", "schedule_loop_order",
           "ORDERS"]

# sn.program loop names -> ZigZag loop dimensions (``co`` covers the groups too: G outside K)
_PROGRAM_TO_ZIGZAG = {"n": "B", "co": "K", "oh": "OY", "ow": "OX", "ci": "C", "kh": "FY", "kw": "FX"}

# canonical temporal orders, outermost loop first (sn.program names), for layers without their own
ORDERS = {
    "output_stationary": ("n", "co", "oh", "ow", "ci", "kh", "kw"),   # a schedule's default nest
    "weight_stationary": ("n", "co", "ci", "kh", "kw", "oh", "ow"),
    "input_stationary": ("n", "oh", "ow", "ci", "kh", "kw", "co"),
}


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution (``kind="conv"``) or dense layer (``kind="dense"``: only ``B``, ``K``, ``C``).

    ``order`` (optional) is the temporal loop order, outermost first, as (ZigZag dimension, extent)
    pairs whose extents multiply to each dimension's size; it comes from a schedule's program steps.
    """

    name: str
    K: int
    C: int
    OY: int = 1
    OX: int = 1
    FY: int = 1
    FX: int = 1
    G: int = 1
    stride: Tuple[int, int] = (1, 1)
    B: int = 1
    kind: str = "conv"
    order: Optional[Tuple[Tuple[str, int], ...]] = None

    def __post_init__(self):
        for field in ("K", "C", "OY", "OX", "FY", "FX", "G", "B"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"layer {self.name!r}: {field} must be a positive integer, got {value!r}")
        if self.kind not in ("conv", "dense"):
            raise ValueError(f"layer {self.name!r}: kind must be 'conv' or 'dense', got {self.kind!r}")
        if any(not isinstance(s, int) or s < 1 for s in self.stride) or len(self.stride) != 2:
            raise ValueError(f"layer {self.name!r}: stride must be two positive integers, got {self.stride!r}")

    @property
    def loop_sizes(self) -> Dict[str, int]:
        """ZigZag loop dimension -> size (``G`` only for grouped layers; dense layers: ``B K C``)."""
        if self.kind == "dense":
            return {"B": self.B, "K": self.K, "C": self.C}
        sizes = {"B": self.B, "K": self.K, "C": self.C, "OY": self.OY, "OX": self.OX, "FY": self.FY, "FX": self.FX}
        if self.G > 1:
            sizes = {"B": self.B, "G": self.G, **{k: v for k, v in sizes.items() if k != "B"}}
        return sizes

    @property
    def macs(self) -> int:
        return math.prod(self.loop_sizes.values())

    def key(self) -> tuple:
        """What makes two layers the same workload for the cost model (the name does not)."""
        return (self.kind, tuple(self.loop_sizes.items()), self.stride, self.order)

    def with_order(self, order) -> "Layer":
        return dataclasses.replace(self, order=None if order is None else tuple(tuple(o) for o in order))

    def zigzag(self, layer_id: int, precision: int) -> Dict[str, Any]:
        """This layer in ZigZag's workload schema (operand precision: ``precision`` bits in, 2x partial sums)."""
        sizes = self.loop_sizes
        common = {"id": layer_id, "name": self.name,
                  "loop_dims": list(sizes), "loop_sizes": list(sizes.values()),
                  "operand_precision": {"W": precision, "I": precision, "O": 2 * precision, "O_final": precision},
                  "operand_source": {"I": layer_id, "W": layer_id}}
        if self.kind == "dense":
            return {"operator_type": "Gemm", "equation": "O[b][k]+=W[k][c]*I[b][c]", **common}
        sy, sx = self.stride
        relations = [f"ix={sx}*ox+1*fx", f"iy={sy}*oy+1*fy"]
        if self.G > 1:
            equation = "O[b][g][k][oy][ox]+=W[g][k][c][fy][fx]*I[b][g][c][iy][ix]"
        else:
            equation = "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]"
        return {"operator_type": "Conv", "equation": equation, "dimension_relations": relations, **common}

    def describe(self) -> str:
        sizes = " ".join(f"{k}{v}" for k, v in self.loop_sizes.items() if k != "B" or v > 1)
        stride = f" s{self.stride[0]}" if self.stride != (1, 1) else ""
        return f"{self.name}: {sizes}{stride}"


# --------------------------------------------------------------------------- schedules


def schedule_loop_order(schedule, part: int = 0) -> Optional[Tuple[Tuple[str, int], ...]]:
    """The loop order of ``schedule``'s part ``part`` after its program steps, outermost first, as
    (ZigZag dimension, extent) pairs; ``None`` when no program step reorders or splits a loop.

    ``co`` is split into ``G`` (outer) and ``K`` (inner) for grouped kernels. A fused loop stands
    for its parts in order. Example::

        from symnas import program as P
        s = P.Schedule(P.Conv2d(16, 32, 8, 8), [P.Split("co", 8), P.Reorder(["co.0", "ci", "kh", "kw", "co.1"])])
        schedule_loop_order(s)   # (('B',1), ('K',4), ('OY',8), ('OX',8), ('C',16), ('FY',3), ('FX',3), ('K',8))
    """
    from symnas.program import transformations as T  # pylint: disable=import-outside-toplevel
    from symnas.program.loop_nest import LoopNest, StepError  # pylint: disable=import-outside-toplevel
    program = [s for s in schedule.active_steps() if not s.is_neural]
    if not any(isinstance(s, (T.Split, T.Reorder, T.Interchange, T.Tile, T.Fuse)) for s in program):
        return None
    kernel = schedule.kernel()
    part_ = kernel.parts[part]
    extents = dict(kernel.loop_extents(part))
    nest = LoopNest(list(extents))
    for step in program:
        splits = []
        if isinstance(step, T.Split):
            splits = [(step.loop, step.factor)]
        elif isinstance(step, T.Tile):
            splits = list(zip(step.loops, step.factors))
        try:
            for loop, factor in splits:
                if loop in extents and isinstance(factor, int) and factor >= 1:
                    whole = extents.pop(loop)
                    extents[f"{loop}.0"], extents[f"{loop}.1"] = -(-whole // factor), min(factor, whole)
            step.apply(nest)
        except StepError:
            return None          # the schedule itself is illegal; its kernel raises elsewhere
    pieces: List[Tuple[str, int]] = []
    for name in nest.order:
        for component in name.split("*"):
            pieces.append((component.split(".")[0], extents.get(component, 1)))
    groups = part_.groups
    order: List[Tuple[str, int]] = []
    co_pieces = [e for base, e in pieces if base == "co"]
    k_left = part_.c_out // groups
    k_of: List[int] = []
    for extent in reversed(co_pieces):          # K takes the innermost factors of co, G the rest
        take = math.gcd(extent, k_left)
        k_of.append(take)
        k_left //= take
    k_of.reverse()
    if k_left != 1:                              # the split cuts across groups: K innermost, G outermost
        k_of = [1] * (len(co_pieces) - 1) + [part_.c_out // groups]
    co_index = 0
    for base, extent in pieces:
        dim = _PROGRAM_TO_ZIGZAG.get(base)
        if dim is None:
            continue
        if base == "co":
            k = k_of[co_index]
            g = extent // k if k_left == 1 else (groups if co_index == 0 else 1)
            co_index += 1
            if groups > 1 and g > 1:
                order.append(("G", g))
            if k > 1:
                order.append(("K", k))
        else:
            order.append((dim, extent))
    return tuple(order)


def schedule_layers(schedule, name: str = "kernel", batch: Optional[int] = None) -> List[Layer]:
    """The layers a ``sn.program.Schedule`` computes (one per kernel part), with its loop order."""
    kernel = schedule.kernel()
    return kernel_layers(kernel, name, batch, [schedule_loop_order(schedule, i) for i in range(len(kernel.parts))])


def kernel_layers(kernel, name: str, batch: Optional[int] = None, orders=None) -> List[Layer]:
    """The layers of a ``sn.program.Kernel`` (one per part; ``orders``: each part's loop order or None)."""
    layers = []
    for index, part in enumerate(kernel.parts):
        label = name if len(kernel.parts) == 1 else f"{name}[p{index}]"
        order = orders[index] if orders else None
        b = batch or kernel.batch
        if kernel.kind == "dense":
            layers.append(Layer(label, K=part.c_out, C=part.ci_per_group, B=b, kind="dense", order=order))
            continue
        layers.append(Layer(label, K=part.c_out // part.groups, C=part.ci_per_group, OY=kernel.rows(part),
                            OX=kernel.cols, FY=kernel.kh, FX=kernel.kw, G=part.groups,
                            stride=(kernel.stride * kernel.bh, kernel.stride * kernel.bw), B=b, order=order))
    return layers


# --------------------------------------------------------------------------- symbolic networks


def network_layers(net, in_shape: Sequence[int] = (3, 32, 32), batch: int = 1) -> List[Layer]:
    """Every convolution and dense layer of the ``sn.nn`` network ``net``, in execution order.

    Layers without multiply-accumulates (batch norm, activations, pooling, additions) are not listed.
    A layer type this function cannot look into raises ``ValueError`` naming it.
    """
    from symnas.nn.layers import as_shape  # pylint: disable=import-outside-toplevel
    layers: List[Layer] = []
    _walk(net, as_shape(in_shape), "", batch, layers)
    if not layers:
        raise ValueError(f"{type(net).__name__} has no convolution or dense layer")
    return layers


def _child(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _walk(layer, shape, name: str, batch: int, out: List[Layer]):
    from symnas.nn import layers as L  # pylint: disable=import-outside-toplevel
    from symnas.nn.backbones import TransformedConv  # pylint: disable=import-outside-toplevel
    if isinstance(layer, TransformedConv):
        out.extend(schedule_layers(layer.schedule, name or "conv", batch))
        return layer.output_shape(shape)
    if isinstance(layer, L.Conv):
        out_shape = layer.output_shape(shape)
        kernel, stride, _ = layer._geometry()  # pylint: disable=protected-access
        groups = layer._groups(shape[0])  # pylint: disable=protected-access
        out.append(Layer(name or "conv", K=out_shape[0] // groups, C=shape[0] // groups, OY=out_shape[1],
                         OX=out_shape[2], FY=kernel[0], FX=kernel[1], G=groups, stride=tuple(stride), B=batch))
        return out_shape
    if isinstance(layer, L.Dense):
        out_shape = layer.output_shape(shape)
        out.append(Layer(name or "dense", K=out_shape[0], C=shape[0], B=batch, kind="dense"))
        return out_shape
    if isinstance(layer, L.Sequential):
        for i, child in enumerate(layer.layers):
            shape = _walk(child, shape, _child(name, i), batch, out)
        return shape
    if isinstance(layer, L.Stacked):
        for i in range(layer.repeats):
            shape = _walk(layer.op, shape, _child(name, i), batch, out)
        return shape
    if isinstance(layer, L.Residual):
        body_shape = _walk(layer.body, shape, _child(name, "body"), batch, out)
        _walk(layer._shortcut(shape, body_shape), shape, _child(name, "shortcut"), batch, out)  # pylint: disable=protected-access
        return layer.output_shape(shape)
    if isinstance(layer, L.Concat):
        for i, branch in enumerate(layer.branches):
            _walk(branch, shape, _child(name, f"branches.{i}"), batch, out)
        return layer.output_shape(shape)
    if isinstance(layer, L.ConvBN):
        return _walk(L.Sequential(layer._layers()), shape, name, batch, out)  # pylint: disable=protected-access
    if isinstance(layer, L.MBConv):
        return _walk(layer._layer(shape), shape, name, batch, out)  # pylint: disable=protected-access
    for method in ("layers", "blocks"):          # composites: MobileNetV2, its stages
        expand = getattr(layer, method, None)
        if callable(expand):
            return _walk(L.Sequential(expand()), shape, name, batch, out)
    if isinstance(layer, (L.BatchNorm, L.Activation, L._Elementwise, L.Identity, L._Pool,  # pylint: disable=protected-access
                          L.GlobalPool, L.Dropout, L.Flatten)):
        return layer.output_shape(shape)
    raise ValueError(f"network_layers cannot look into a {type(layer).__name__} layer at {name or 'the top'}; "
                     f"use sn.hw.torch_layers on its built torch module instead")


# --------------------------------------------------------------------------- torch modules


def torch_layers(module, in_shape: Sequence[int] = (3, 32, 32), batch: int = 1) -> List[Layer]:
    """The ``Conv2d`` and ``Linear`` layers (and symnas' transformed kernels) a torch ``module`` runs on one
    input of ``in_shape``, in call order (found by running it once with forward hooks)."""
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel
    from symnas.program.torch_module import TransformedConv  # pylint: disable=import-outside-toplevel
    layers: List[Layer] = []
    handles = []

    def hook(name):
        def record(mod, inputs, output):
            x = inputs[0]
            if isinstance(mod, TransformedConv):
                layers.extend(kernel_layers(mod.kernel, name, batch))
            elif isinstance(mod, nn.Conv2d):
                g = mod.groups
                layers.append(Layer(name, K=mod.out_channels // g, C=mod.in_channels // g, OY=output.shape[2],
                                    OX=output.shape[3], FY=mod.kernel_size[0], FX=mod.kernel_size[1], G=g,
                                    stride=tuple(mod.stride), B=batch))
            elif isinstance(mod, nn.Linear):
                layers.append(Layer(name, K=mod.out_features, C=mod.in_features, B=batch, kind="dense"))
            del x
        return record

    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear, TransformedConv)):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(torch.zeros((1,) + tuple(in_shape)))
        module.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return layers
