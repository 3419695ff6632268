"""Symbolic layers: hyperparameters live in a PyGlove object, ``build()`` makes the torch module.

Shapes chain: each layer computes its output shape from its input shape, so a user
writes only the *output* channel counts and ``build(in_shape)`` fills in the rest.
A shape is ``(channels, height, width)`` for images (height/width may be ``None``
when unknown) or ``(features,)`` for flat vectors; an ``int`` means ``(channels,
None, None)``. Any hyperparameter may be a search point (``pg.oneof``, ...);
``build()`` needs a concrete (sampled) object.

Example::

    import pyglove as pg, symnas as sn
    net = sn.nn.Sequential([sn.nn.Conv(16, 3), sn.nn.BatchNorm(), sn.nn.ReLU(),
                            sn.nn.Stacked(sn.nn.Conv(32, 3, stride=2), repeats=2),
                            sn.nn.GlobalPool(), sn.nn.Dense(10)])
    print(net.output_shape((3, 32, 32)))        # (10,)
    module = net.build((3, 32, 32))             # a torch.nn.Module
"""
from __future__ import annotations

import copy
import math
from typing import Any, Optional, Sequence, Tuple, Union

import pyglove as pg
import torch
from torch import nn

__all__ = [
    "Shape", "ShapeError", "Layer", "Conv", "ConvBN", "Identity", "MaxPool", "AvgPool", "Dense",
    "BatchNorm", "Activation", "ReLU", "ReLU6", "SiLU", "GELU", "Tanh", "Sigmoid", "Dropout",
    "Flatten", "GlobalPool", "Sequential", "Stacked", "Residual", "Concat", "MBConv",
    "symbolize", "as_shape", "build", "output_shape", "flatten_sequentials",
]

Shape = Tuple[Optional[int], ...]
Size2 = Union[int, Tuple[int, int]]


class ShapeError(ValueError):
    """A layer cannot accept the shape that reaches it."""


def as_shape(shape: Union[int, Sequence[Optional[int]]]) -> Shape:
    """Normalises an input shape: ``3`` -> ``(3, None, None)``; tuples pass through."""
    if isinstance(shape, bool):
        raise TypeError(f"A shape must be an int or a tuple, got {shape!r}.")
    if isinstance(shape, int):
        return (shape, None, None)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) not in (1, 3):
        raise TypeError(
            f"A shape is (channels, height, width) or (features,) (without the batch axis); "
            f"got {shape!r}.")
    for dim in shape:
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"Shape {tuple(shape)!r} has a non-positive or non-integer size.")
    return tuple(shape)


def _pair(value: Size2, what: str, layer: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{layer}: {what} must be an int or a pair of ints, got {value!r}.")
    if min(pair) <= 0:
        raise ValueError(f"{layer}: {what} must be positive, got {value!r}.")
    return pair


def _spatial_out(size: Optional[int], kernel: int, stride: int, padding: int, dilation: int,
                 layer: str) -> Optional[int]:
    if size is None:
        return None
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out <= 0:
        raise ShapeError(
            f"{layer}: input size {size} is too small for kernel {kernel} "
            f"(stride {stride}, padding {padding}).")
    return out


class Layer(pg.Object):
    """Base of symbolic layers: subclasses implement ``output_shape`` and ``_build``."""

    def output_shape(self, in_shape) -> Shape:
        """The output shape (without batch axis) for input shape ``in_shape``."""
        in_shape = as_shape(in_shape)
        return self._output_shape(in_shape)

    def build(self, in_shape) -> nn.Module:
        """Returns a freshly initialised ``torch.nn.Module`` for input shape ``in_shape``."""
        if not pg.is_deterministic(self):
            raise ValueError(
                f"{type(self).__name__} still holds search points (pg.oneof/floatv/...); "
                f"sample a concrete object first (pg.random_sample, pg.sample or sn.search).")
        in_shape = as_shape(in_shape)
        self._output_shape(in_shape)  # Validates before allocating weights.
        return self._build(in_shape)

    def _output_shape(self, in_shape: Shape) -> Shape:
        raise NotImplementedError

    def _build(self, in_shape: Shape) -> nn.Module:
        raise NotImplementedError

    def _name(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.sym_init_args.items())})"

    def _require_image(self, in_shape: Shape) -> None:
        if len(in_shape) != 3:
            raise ShapeError(
                f"{self._name()} expects an image shape (channels, height, width), got "
                f"{in_shape!r}; it cannot follow a Flatten/GlobalPool/Dense layer.")


def output_shape(layer: Any, in_shape) -> Shape:
    """Output shape of a symbolic layer or of a (symbolized) torch module, by tracing if needed."""
    in_shape = as_shape(in_shape)
    if isinstance(layer, Layer):
        return layer.output_shape(in_shape)
    if isinstance(layer, nn.Module):
        if any(d is None for d in in_shape):
            raise ShapeError(
                f"{type(layer).__name__} is a torch module: its output shape is found by running it, "
                f"which needs a fully known input shape, got {in_shape!r}.")
        module = build(layer, in_shape)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(torch.zeros((1,) + tuple(in_shape)))
        except RuntimeError as e:
            raise ShapeError(f"{type(layer).__name__} cannot take input shape {in_shape!r}: {e}") from e
        finally:
            module.train(was_training)
        return tuple(out.shape[1:])
    raise TypeError(f"Expected a sn.nn layer or a torch module, got {type(layer).__name__}: {layer!r}.")


def build(layer: Any, in_shape) -> nn.Module:
    """Builds a symbolic layer; a symbolized torch module is re-created (fresh weights)."""
    if isinstance(layer, Layer):
        return layer.build(in_shape)
    if isinstance(layer, pg.Symbolic) and isinstance(layer, nn.Module):
        if not pg.is_deterministic(layer):
            raise ValueError(f"{type(layer).__name__} still holds search points; sample it first.")
        return type(layer)(**layer.sym_init_args.sym_clone(deep=True))
    if isinstance(layer, nn.Module):
        return copy.deepcopy(layer)
    raise TypeError(f"Expected a sn.nn layer or a torch module, got {type(layer).__name__}: {layer!r}.")


def flatten_sequentials(net: Any) -> Any:
    """A copy of ``net`` in which every ``Sequential`` directly in another ``Sequential``'s layers is spliced
    into it: the same function, but a batch norm after a nested conv chain now follows its last conv
    directly, so ``sn.nn.compile_network`` folds it (and the ReLU, residual add) into that conv's kernel.

    Example::

        import symnas as sn
        net = sn.nn.Sequential([sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.Conv(8, 1)]), sn.nn.BatchNorm()])
        assert [type(l).__name__ for l in sn.nn.flatten_sequentials(net).layers] == ["Conv", "Conv", "BatchNorm"]
    """
    out = net.clone(deep=True)
    found = pg.query(out, where=lambda v: isinstance(v, Sequential), enter_selected=True)
    for path in sorted(map(pg.KeyPath.parse, found), key=len, reverse=True):   # deepest first
        seq = path.query(out)
        if not any(isinstance(layer, Sequential) for layer in seq.layers):
            continue
        spliced = []
        for layer in seq.layers:
            spliced.extend(layer.layers if isinstance(layer, Sequential) else [layer])
        seq.rebind({"layers": [layer.clone(deep=True) for layer in spliced]}, skip_notification=True)
    return out


def symbolize(torch_module_class):
    """Makes an existing torch module class symbolic in one line (wraps ``pg.symbolize``).

    Instances keep their torch behaviour and can hold search points::

        Conv2d = sn.symbolize(torch.nn.Conv2d)
        space = sn.nn.Sequential([Conv2d(3, pg.oneof([8, 16]), 3, padding=1), sn.nn.ReLU()])
    """
    return pg.symbolize(torch_module_class)


# --------------------------------------------------------------------------- convolution


class Conv(Layer):
    """2-D convolution with 'same' padding by default; in_channels comes from the input shape.

    Example: ``sn.nn.Conv(16, (3, 3), stride=2).build((3, 32, 32))``.
    """
    out_channels: int
    kernel: Union[int, Tuple[int, int]] = 3
    stride: Union[int, Tuple[int, int]] = 1
    groups: int = 1
    bias: bool = False
    padding: Optional[Union[int, Tuple[int, int]]] = None   # None: kernel // 2 ('same' at stride 1).
    dilation: int = 1
    depthwise: bool = False   # groups = in_channels (and out_channels a multiple of it).

    def _geometry(self):
        name = self._name()
        if self.out_channels <= 0:
            raise ValueError(f"{name}: out_channels must be positive.")
        kernel = _pair(self.kernel, "kernel", name)
        stride = _pair(self.stride, "stride", name)
        if self.padding is None:
            padding = tuple(self.dilation * (k - 1) // 2 for k in kernel)
        else:
            padding = _pair(self.padding, "padding", name) if self.padding != 0 else (0, 0)
        return kernel, stride, padding

    def _groups(self, in_channels: int) -> int:
        groups = in_channels if self.depthwise else self.groups
        if groups <= 0 or in_channels % groups or self.out_channels % groups:
            raise ShapeError(
                f"{self._name()}: groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={self.out_channels}.")
        return groups

    def _output_shape(self, in_shape: Shape) -> Shape:
        self._require_image(in_shape)
        kernel, stride, padding = self._geometry()
        self._groups(in_shape[0])
        name = self._name()
        return (self.out_channels,
                _spatial_out(in_shape[1], kernel[0], stride[0], padding[0], self.dilation, name),
                _spatial_out(in_shape[2], kernel[1], stride[1], padding[1], self.dilation, name))

    def _build(self, in_shape: Shape) -> nn.Module:
        kernel, stride, padding = self._geometry()
        return nn.Conv2d(in_shape[0], self.out_channels, kernel, stride=stride, padding=padding,
                         dilation=self.dilation, groups=self._groups(in_shape[0]), bias=self.bias)


class Identity(Layer):
    """Passes the input through unchanged."""

    def _output_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def _build(self, in_shape: Shape) -> nn.Module:
        return nn.Identity()


class _Pool(Layer):
    kernel: Union[int, Tuple[int, int]] = 3
    stride: Optional[Union[int, Tuple[int, int]]] = 1   # 1 keeps the size (with 'same' padding).
    padding: Optional[Union[int, Tuple[int, int]]] = None   # None: kernel // 2.

    def _geometry(self):
        name = self._name()
        kernel = _pair(self.kernel, "kernel", name)
        stride = kernel if self.stride is None else _pair(self.stride, "stride", name)
        padding = (tuple(k // 2 for k in kernel) if self.padding is None
                   else (_pair(self.padding, "padding", name) if self.padding != 0 else (0, 0)))
        return kernel, stride, padding

    def _output_shape(self, in_shape: Shape) -> Shape:
        self._require_image(in_shape)
        kernel, stride, padding = self._geometry()
        name = self._name()
        return (in_shape[0],
                _spatial_out(in_shape[1], kernel[0], stride[0], padding[0], 1, name),
                _spatial_out(in_shape[2], kernel[1], stride[1], padding[1], 1, name))


class MaxPool(_Pool):
    """Max pooling; defaults keep the spatial size (stride 1, 'same' padding).

    Example: ``sn.nn.MaxPool((3, 3))``; ``sn.nn.MaxPool(2, stride=2)`` halves the size.
    """

    def _build(self, in_shape: Shape) -> nn.Module:
        kernel, stride, padding = self._geometry()
        return nn.MaxPool2d(kernel, stride=stride, padding=padding)


class AvgPool(_Pool):
    """Average pooling (padding excluded from the average); defaults keep the spatial size."""

    def _build(self, in_shape: Shape) -> nn.Module:
        kernel, stride, padding = self._geometry()
        return nn.AvgPool2d(kernel, stride=stride, padding=padding, count_include_pad=False)


# --------------------------------------------------------------------------- dense / norm / act


class Dense(Layer):
    """Fully connected layer on a flat ``(features,)`` input."""
    features: int
    bias: bool = True

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 1:
            raise ShapeError(
                f"{self._name()} expects a flat input (features,), got {in_shape!r}; put "
                f"sn.nn.GlobalPool() or sn.nn.Flatten() before it.")
        if self.features <= 0:
            raise ValueError(f"{self._name()}: features must be positive.")
        return (self.features,)

    def _build(self, in_shape: Shape) -> nn.Module:
        return nn.Linear(in_shape[0], self.features, bias=self.bias)


class BatchNorm(Layer):
    """Batch normalisation over channels (2-D for images, 1-D for flat features)."""
    momentum: float = 0.1
    eps: float = 1e-5

    def _output_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def _build(self, in_shape: Shape) -> nn.Module:
        norm = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
        return norm(in_shape[0], eps=self.eps, momentum=self.momentum)


_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "hardswish": nn.Hardswish, "elu": nn.ELU,
}


class Activation(Layer):
    """Element-wise activation by name: one of relu, relu6, silu/swish, gelu, tanh, sigmoid,
    hardswish, elu. ``sn.nn.Activation(pg.oneof(['relu', 'silu']))`` searches over it."""
    name: str = "relu"

    def _output_shape(self, in_shape: Shape) -> Shape:
        if self.name not in _ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.name!r}; choose one of {sorted(_ACTIVATIONS)}.")
        return in_shape

    def _build(self, in_shape: Shape) -> nn.Module:
        return _ACTIVATIONS[self.name]()


class _Elementwise(Layer):
    """An activation without hyperparameters; subclasses name the torch class."""
    _torch_class = nn.Identity

    def _output_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def _build(self, in_shape: Shape) -> nn.Module:
        return type(self)._torch_class()


class ReLU(_Elementwise):
    """ReLU activation."""
    _torch_class = nn.ReLU


class ReLU6(_Elementwise):
    """ReLU6 activation (min(max(x, 0), 6)), as in MobileNetV2."""
    _torch_class = nn.ReLU6


class SiLU(_Elementwise):
    """SiLU / swish activation."""
    _torch_class = nn.SiLU


class GELU(_Elementwise):
    """GELU activation."""
    _torch_class = nn.GELU


class Tanh(_Elementwise):
    """Tanh activation."""
    _torch_class = nn.Tanh


class Sigmoid(_Elementwise):
    """Sigmoid activation."""
    _torch_class = nn.Sigmoid


class Dropout(Layer):
    """Dropout with probability ``rate`` (active only in training mode)."""
    rate: float = 0.5

    def _output_shape(self, in_shape: Shape) -> Shape:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"{self._name()}: rate must be in [0, 1).")
        return in_shape

    def _build(self, in_shape: Shape) -> nn.Module:
        return nn.Dropout(self.rate)


class Flatten(Layer):
    """Flattens an image ``(C, H, W)`` into ``(C * H * W,)``; needs known height and width."""

    def _output_shape(self, in_shape: Shape) -> Shape:
        if any(d is None for d in in_shape):
            raise ShapeError(
                f"Flatten needs a fully known input shape, got {in_shape!r}; build the model "
                f"with (channels, height, width) or use sn.nn.GlobalPool().")
        return (math.prod(in_shape),)

    def _build(self, in_shape: Shape) -> nn.Module:
        return nn.Flatten()


class _GlobalPoolModule(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        if self.kind == "max":
            return torch.amax(x, dim=(2, 3))
        return torch.mean(x, dim=(2, 3))


class GlobalPool(Layer):
    """Global average ('avg') or max ('max') pooling: ``(C, H, W)`` -> ``(C,)``."""
    kind: str = "avg"

    def _output_shape(self, in_shape: Shape) -> Shape:
        if self.kind not in ("avg", "max"):
            raise ValueError(f"GlobalPool kind must be 'avg' or 'max', got {self.kind!r}.")
        if len(in_shape) == 1:
            return in_shape
        return (in_shape[0],)

    def _build(self, in_shape: Shape) -> nn.Module:
        if len(in_shape) == 1:
            return nn.Identity()
        return _GlobalPoolModule(self.kind)


# --------------------------------------------------------------------------- composition


def _chain(layers: Sequence[Any], in_shape: Shape, owner: str) -> Shape:
    shape = in_shape
    for i, layer in enumerate(layers):
        try:
            shape = output_shape(layer, shape)
        except ShapeError as e:
            raise ShapeError(f"{owner}: layer {i} cannot take shape {shape!r}: {e}") from e
    return shape


def _build_chain(layers: Sequence[Any], in_shape: Shape) -> nn.Sequential:
    modules, shape = [], in_shape
    for layer in layers:
        modules.append(build(layer, shape))
        shape = output_shape(layer, shape)
    return nn.Sequential(*modules)


class Sequential(Layer):
    """Layers applied one after another; each one's input shape is the previous one's output."""
    layers: list

    def _output_shape(self, in_shape: Shape) -> Shape:
        return _chain(self.layers, in_shape, "Sequential")

    def _build(self, in_shape: Shape) -> nn.Module:
        return _build_chain(self.layers, in_shape)


class Stacked(Layer):
    """``op`` repeated ``repeats`` times in sequence (each repetition has its own weights).

    Example (seed 004): ``sn.nn.Stacked(op=pg.oneof([sn.nn.Identity(), sn.nn.MaxPool((3, 3)),
    sn.nn.Conv(pg.oneof([4, 8]), (3, 3))]), repeats=3)``.
    """
    op: Any
    repeats: int = 1

    def _output_shape(self, in_shape: Shape) -> Shape:
        if self.repeats < 0:
            raise ValueError(f"Stacked: repeats must be >= 0, got {self.repeats}.")
        return _chain([self.op] * self.repeats, in_shape, f"Stacked(op={type(self.op).__name__})")

    def _build(self, in_shape: Shape) -> nn.Module:
        return _build_chain([self.op] * self.repeats, in_shape)


class _ResidualModule(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module, post: nn.Module):
        super().__init__()
        self.body, self.shortcut, self.post = body, shortcut, post

    def forward(self, x):
        return self.post(self.body(x) + self.shortcut(x))


class Residual(Layer):
    """``post(body(x) + shortcut(x))``.

    With ``shortcut=None`` the shortcut is the identity when shapes match, otherwise (when
    ``project`` is true) a 1x1 convolution with the right stride followed by batch norm.
    """
    body: Any
    shortcut: Any = None
    project: bool = True
    post: Any = None   # e.g. sn.nn.ReLU() as in ResNet.

    def _shortcut(self, in_shape: Shape, body_shape: Shape):
        if self.shortcut is not None:
            return self.shortcut
        if body_shape == in_shape:
            return Identity()
        if not self.project:
            raise ShapeError(
                f"Residual: body maps {in_shape!r} to {body_shape!r}; shapes differ and "
                f"project=False, so they cannot be added.")
        if len(in_shape) != 3 or len(body_shape) != 3:
            raise ShapeError(f"Residual: cannot project {in_shape!r} to {body_shape!r}.")
        stride = 1
        if in_shape[1] is not None and body_shape[1] is not None and body_shape[1] != in_shape[1]:
            stride = max(1, round(in_shape[1] / body_shape[1]))
        return Sequential([Conv(body_shape[0], 1, stride=stride, padding=0), BatchNorm()])

    def _output_shape(self, in_shape: Shape) -> Shape:
        body_shape = output_shape(self.body, in_shape)
        short_shape = output_shape(self._shortcut(in_shape, body_shape), in_shape)
        if short_shape != body_shape:
            raise ShapeError(
                f"Residual: body output {body_shape!r} and shortcut output {short_shape!r} differ.")
        if self.post is not None:
            return output_shape(self.post, body_shape)
        return body_shape

    def _build(self, in_shape: Shape) -> nn.Module:
        body_shape = output_shape(self.body, in_shape)
        post = nn.Identity() if self.post is None else build(self.post, body_shape)
        return _ResidualModule(build(self.body, in_shape),
                               build(self._shortcut(in_shape, body_shape), in_shape), post)


class _ConcatModule(nn.Module):
    def __init__(self, branches: Sequence[nn.Module], include_input: bool):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.include_input = include_input

    def forward(self, x):
        outs = [x] if self.include_input else []
        outs.extend(branch(x) for branch in self.branches)
        return torch.cat(outs, dim=1)


class Concat(Layer):
    """Concatenates branch outputs along channels; ``include_input=True`` prepends the input
    (a DenseNet layer: ``Concat([body], include_input=True)``)."""
    branches: list
    include_input: bool = False

    def _output_shape(self, in_shape: Shape) -> Shape:
        shapes = ([in_shape] if self.include_input else []) + [
            output_shape(b, in_shape) for b in self.branches]
        if not shapes:
            raise ValueError("Concat needs at least one branch.")
        rest = {s[1:] for s in shapes}
        if len(rest) != 1:
            raise ShapeError(f"Concat: branch shapes {shapes!r} differ beyond the channel axis.")
        return (sum(s[0] for s in shapes),) + shapes[0][1:]

    def _build(self, in_shape: Shape) -> nn.Module:
        return _ConcatModule([build(b, in_shape) for b in self.branches], self.include_input)


class ConvBN(Layer):
    """Convolution, batch norm, then an activation (``None`` for none): the usual conv unit."""
    out_channels: int
    kernel: Union[int, Tuple[int, int]] = 3
    stride: Union[int, Tuple[int, int]] = 1
    groups: int = 1
    activation: Any = ReLU()

    def _layers(self):
        layers = [Conv(self.out_channels, self.kernel, stride=self.stride, groups=self.groups),
                  BatchNorm()]
        if self.activation is not None:
            layers.append(self.activation)
        return layers

    def _output_shape(self, in_shape: Shape) -> Shape:
        return _chain(self._layers(), in_shape, self._name())

    def _build(self, in_shape: Shape) -> nn.Module:
        return _build_chain(self._layers(), in_shape)


class MBConv(Layer):
    """Inverted bottleneck (MobileNetV2): 1x1 expand (x ``expansion``), k x k depthwise with
    ``stride``, 1x1 linear projection to ``out_channels``; residual when stride is 1 and the
    channel count is kept. ``expansion=1`` skips the expand convolution.

    Example: ``sn.nn.MBConv(24, kernel=pg.oneof([3, 5, 7]), expansion=pg.oneof([3, 6]))``.
    """
    out_channels: int
    kernel: int = 3
    expansion: int = 6
    stride: int = 1
    activation: Any = ReLU6()

    def _body(self, in_channels: int) -> Sequential:
        if self.expansion < 1:
            raise ValueError(f"{self._name()}: expansion must be >= 1.")
        hidden = in_channels * self.expansion
        layers = []
        if self.expansion != 1:
            layers.append(ConvBN(hidden, 1, activation=self.activation))
        layers.append(ConvBN(hidden, self.kernel, stride=self.stride, groups=hidden,
                             activation=self.activation))
        layers.append(ConvBN(self.out_channels, 1, activation=None))
        return Sequential(layers)

    def _layer(self, in_shape: Shape) -> Layer:
        self._require_image(in_shape)
        body = self._body(in_shape[0])
        if self.stride == 1 and in_shape[0] == self.out_channels:
            return Residual(body)
        return body

    def _output_shape(self, in_shape: Shape) -> Shape:
        try:
            return self._layer(in_shape).output_shape(in_shape)
        except ShapeError as e:
            raise ShapeError(f"{self._name()}: {e}") from e

    def _build(self, in_shape: Shape) -> nn.Module:
        return self._layer(in_shape).build(in_shape)
