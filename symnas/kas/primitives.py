"""Canvas's fine-grained primitives as small symbolic objects (seed 003 Table 1).

Each primitive stores only its parameters and ``inputs`` (indices of the kernel's nodes: 0 is
the kernel input, ``i`` the output of the ``i``-th primitive; ``None`` = the node just before).
What it does to shapes and what it costs are class methods on plain parameter tuples, so the
sampler can try thousands of applications without building objects:

- ``infer(params, in_shapes) -> (out_shape, sizes that must be integers)``, raising
  :class:`PrimitiveError` (naming the primitive and the size) when it cannot apply;
- ``variants(shape, options, producer)``: the parameter tuples worth trying on a node;
- ``cost(params, in_shapes, out_shape) -> (multiply-adds, other ops, weights)`` as sizes;
- ``locality(params)``: ``point`` (output position p reads inputs at p only), ``neighbour``
  (reads around p) or ``global`` (reads every position) — what the stride push-down needs.

Rearrangement: :class:`Group`, :class:`Shift`, :class:`Unfold`. Arithmetic: :class:`FC`,
:class:`Conv`, :class:`Fold`, :class:`Mix`, :class:`Scale`, :class:`Softmax`,
:class:`Activation`, :class:`ElementWise`. Blending (two inputs): :class:`Broadcast`,
:class:`BMM`. Weighted: FC, Conv, Mix, Scale.

Example::

    from symnas.kas import primitives as P, shapes
    out, _ = P.Unfold.infer(("HW", 3, 1), (shapes.INPUT,))
    assert shapes.text(out) == "[C, KH=3, KW=3, H, W]"
    print(P.FC("O", inputs=[1]))
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.kas import shapes as S
from symnas.kas.sizes import Size, SizeError

__all__ = ["Primitive", "PrimitiveError", "Group", "Shift", "Unfold", "FC", "Conv", "Fold", "Mix", "Scale",
           "Softmax", "Activation", "ElementWise", "Broadcast", "BMM", "PRIMITIVES", "KINDS", "WEIGHTED_KINDS",
           "GLOBAL"]

GLOBAL = 10 ** 6      # receptive extent of a primitive that reads every position


class PrimitiveError(ValueError):
    """A primitive cannot apply to the shapes it is given; the message names it and the size.

    The message may be given as a function: the sampler tries (and drops) many applications, and
    formats a message only when one is shown.
    """

    def __init__(self, message):
        super().__init__(message)
        self._message = message

    def __str__(self) -> str:
        return self._message() if callable(self._message) else str(self._message)


_ONE = Size()


def _size(text: str, who: str) -> Size:
    try:
        return Size.parse(text)
    except SizeError as e:
        raise PrimitiveError(f"{who}: {e}") from e


def _need(shape: S.Shape, slots: Sequence[int], who: str) -> None:
    for slot in slots:
        if shape[slot] is None:
            raise PrimitiveError(lambda: f"{who}: the input {S.text(shape)} has no {S.SLOTS[slot]} axis")


def _dims(shape: S.Shape, dims: str, who: str) -> Tuple[int, ...]:
    if dims not in S.DIMSETS:
        raise PrimitiveError(lambda: f"{who}: unknown dims {dims!r} (one of {', '.join(S.DIMSETS)})")
    if dims == "channel":
        slots = tuple(s for s in S.CHANNEL_SLOTS if shape[s] is not None)
        if not slots:
            raise PrimitiveError(lambda: f"{who}: the input {S.text(shape)} has no channel axis")
        return slots
    slots = S.DIMSETS[dims]
    _need(shape, slots, who)
    return slots


def _present_dimsets(shape: S.Shape, names: Sequence[str]) -> List[str]:
    out = []
    for name in names:
        slots = S.DIMSETS[name]
        if name == "channel":
            if sum(shape[s] is not None for s in slots) >= 2:   # one slot: the same as that slot's name
                out.append(name)
        elif all(shape[s] is not None for s in slots):
            out.append(name)
    return out


@pg.members([
    ("inputs", pg.typing.List(pg.typing.Int(min_value=0)).noneable(),
     "Node indices read (0 = the kernel input, i = the i-th primitive's output); None = the previous node."),
])
class Primitive(pg.Object):
    """Base of the primitives; see the module docstring for the class-method contract."""

    kind = "primitive"
    arity = 1
    weighted = False
    PARAMS: Tuple[str, ...] = ()

    # ---- the symbolic object's view ----------------------------------------------------------
    def params(self) -> tuple:
        return tuple(getattr(self, name) for name in self.PARAMS)

    def input_nodes(self, index: int) -> List[int]:
        """The nodes this primitive reads when it is the ``index``-th (1-based) of its kernel."""
        if self.inputs is None:
            if self.arity != 1:
                raise PrimitiveError(lambda: f"{self.describe()}: a two-input primitive needs explicit inputs")
            return [index - 1]
        if len(self.inputs) != self.arity:
            raise PrimitiveError(lambda: f"{self.describe()}: takes {self.arity} input(s), got {list(self.inputs)}")
        return list(self.inputs)

    def describe(self) -> str:
        args = ", ".join(f"{v}" for v in self.params())
        return f"{type(self).__name__}({args})"

    # ---- class-level semantics ---------------------------------------------------------------
    @classmethod
    def infer(cls, params: tuple, shapes: Sequence[S.Shape]) -> Tuple[S.Shape, List[Size]]:
        raise NotImplementedError

    @classmethod
    def variants(cls, shape: S.Shape, options, producer) -> List[tuple]:
        return []

    @classmethod
    def cost(cls, params, shapes, out) -> Tuple[Optional[Size], Optional[Size], Optional[Size]]:
        return None, None, None

    @classmethod
    def locality(cls, params) -> str:
        return "point"

    @classmethod
    def receptive(cls, params, fields: Sequence[Tuple[int, int]]) -> Tuple[int, int]:
        return max(f[0] for f in fields), max(f[1] for f in fields)

    @classmethod
    def solutions(cls, params, shapes) -> List[Tuple[int, Size]]:
        """Substitutions ``(var, value)`` that would make this application legal (shape matching)."""
        return []

    @classmethod
    def name_of(cls, params) -> str:
        key = (cls, params)
        name = _NAMES.get(key)
        if name is None:
            name = _NAMES[key] = f"{cls.__name__}({', '.join(str(p) for p in params)})"
        return name


_NAMES: Dict[tuple, str] = {}           # name_of by (class, parameters): the sampler asks for it often


def _members(params):
    """``pg.members`` with the parameters first and ``inputs`` last in the constructor."""
    return pg.members(params, init_arg_list=[p[0] for p in params] + ["inputs"])


# ============================================================================ rearrangement
@_members([("by", pg.typing.Enum("G", ["G", "C"]),
            "'G': split C into G groups of C/G; 'C': every channel its own group ([C] -> [C, 1])")])
class Group(Primitive):
    """Groups the channel axis: ``[C, ...] -> [G, C/G, ...]`` (``by='G'``) or ``[C, 1, ...]`` (``by='C'``)."""

    kind = "group"
    PARAMS = ("by",)

    @classmethod
    def infer(cls, params, shapes):
        (by,), (s,) = params, shapes
        who = cls.name_of(params)
        if s[S.G] is not None:
            raise PrimitiveError(lambda: f"{who}: the input {S.text(s)} is already grouped")
        _need(s, (S.C,), who)
        if by == "G":
            g = Size.symbol("G")
            c = s[S.C] / g
            return S.replace(s, {S.G: g, S.C: c}), [c]
        if by == "C":
            if s[S.C].is_one():
                raise PrimitiveError(lambda: f"{who}: the input {S.text(s)} has one channel")
            return S.replace(s, {S.G: s[S.C], S.C: _ONE}), []
        raise PrimitiveError(lambda: f"{who}: by must be 'G' or 'C'")

    @classmethod
    def variants(cls, shape, options, producer):
        if shape[S.G] is not None or shape[S.C] is None:
            return []
        return [("G",)] + ([] if shape[S.C].is_one() else [("C",)])


@_members([("axis", pg.typing.Enum("H", ["H", "W", "HW"]), "image axis (or both)"),
           ("offset", pg.typing.Int(), "pixels to shift by (non-zero; zeros come in at the edge)")])
class Shift(Primitive):
    """Shifts the image by ``offset`` pixels along ``axis`` (zero-filled): ``out[h] = in[h + offset]``."""

    kind = "shift"
    PARAMS = ("axis", "offset")

    @classmethod
    def infer(cls, params, shapes):
        (axis, offset), (s,) = params, shapes
        who = cls.name_of(params)
        if offset == 0:
            raise PrimitiveError(lambda: f"{who}: a shift by 0 does nothing")
        _need(s, S.DIMSETS[axis], who)
        return s, []

    @classmethod
    def variants(cls, shape, options, producer):
        axes = [a for a in ("H", "W", "HW") if all(shape[x] is not None for x in S.DIMSETS[a])]
        return [(a, sign * k) for a in axes for k in options.shift_sizes for sign in (1, -1)]

    @classmethod
    def locality(cls, params):
        return "neighbour"

    @classmethod
    def receptive(cls, params, fields):
        (axis, offset), ((rh, rw),) = params, fields
        return (rh + abs(offset) if "H" in axis else rh), (rw + abs(offset) if "W" in axis else rw)


@_members([("axis", pg.typing.Enum("HW", ["H", "W", "HW"]), "image axis (or both) to unfold"),
           ("k", pg.typing.Int(min_value=2), "neighbours per axis (odd)"),
           ("dilation", pg.typing.Int(min_value=1, default=1), "spacing between neighbours")])
class Unfold(Primitive):
    """Copies each pixel's ``k`` neighbours into a channel-like axis (im2col, zero-padded):
    ``[C, H, W] -> [C, KH=k, H, W]``; an FC after it is a ``k x 1`` convolution."""

    kind = "unfold"
    PARAMS = ("axis", "k", "dilation")

    @classmethod
    def infer(cls, params, shapes):
        (axis, k, dilation), (s,) = params, shapes
        who = cls.name_of(params)
        if k < 2 or k % 2 == 0 or dilation < 1:
            raise PrimitiveError(lambda: f"{who}: k must be odd and >= 3, dilation >= 1")
        changes = {}
        if "H" in axis:
            _need(s, (S.H,), who)
            if s[S.KH] is not None:
                raise PrimitiveError(lambda: f"{who}: the input {S.text(s)} is already unfolded along H")
            changes[S.KH] = Size(k)
        if "W" in axis:
            _need(s, (S.W,), who)
            if s[S.KW] is not None:
                raise PrimitiveError(lambda: f"{who}: the input {S.text(s)} is already unfolded along W")
            changes[S.KW] = Size(k)
        return S.replace(s, changes), []

    @classmethod
    def variants(cls, shape, options, producer):
        axes = []
        if shape[S.H] is not None and shape[S.KH] is None:
            axes.append("H")
        if shape[S.W] is not None and shape[S.KW] is None:
            axes.append("W")
        if len(axes) == 2:
            axes.append("HW")
        return [(a, k, d) for a in axes for k in options.kernel_sizes for d in options.dilations]

    @classmethod
    def locality(cls, params):
        return "neighbour"

    @classmethod
    def receptive(cls, params, fields):
        (axis, k, d), ((rh, rw),) = params, fields
        grow = d * (k - 1)
        return (rh + grow if "H" in axis else rh), (rw + grow if "W" in axis else rw)


# ============================================================================ arithmetic, weighted
@_members([("out", pg.typing.Str(), "output channels: a size such as 'O', 'C', 'x0', '2*C'")])
class FC(Primitive):
    """Fully connected over every channel axis (grouped by G when the input has one):
    ``[G, C, KH, KW, D, H, W] -> [out, D, H, W]``, a grouped 1x1 convolution."""

    kind = "fc"
    weighted = True
    PARAMS = ("out",)

    @classmethod
    def infer(cls, params, shapes):
        (out,), (s,) = params, shapes
        o = _size(out, cls.name_of(params))
        g = s[S.G] if s[S.G] is not None else _ONE
        return (None, o, None, None, s[S.D], s[S.H], s[S.W]), [o / g]

    @classmethod
    def variants(cls, shape, options, producer):
        return [(o,) for o in options.channel_outs]

    @classmethod
    def cost(cls, params, shapes, out):
        (s,) = shapes
        g = s[S.G] if s[S.G] is not None else _ONE
        weights = S.channels(s) * out[S.C] / g
        return weights * S.positions(out), None, weights


@_members([("kh", pg.typing.Int(min_value=1), "kernel height (odd)"),
           ("kw", pg.typing.Int(min_value=1), "kernel width (odd)"),
           ("dilation", pg.typing.Int(min_value=1, default=1), "dilation"),
           ("depthwise", pg.typing.Bool(default=False), "one group per input channel"),
           ("out", pg.typing.Str(default="O"), "output channels (a size)")])
class Conv(Primitive):
    """A ``kh x kw`` convolution (same padding), grouped by G or depthwise: ``[G, C, H, W] -> [out, H, W]``."""

    kind = "conv"
    weighted = True
    PARAMS = ("kh", "kw", "dilation", "depthwise", "out")

    @classmethod
    def infer(cls, params, shapes):
        (kh, kw, d, depthwise, out), (s,) = params, shapes
        who = cls.name_of(params)
        if kh % 2 == 0 or kw % 2 == 0:
            raise PrimitiveError(lambda: f"{who}: kernel sizes must be odd")
        _need(s, (S.H, S.W), who)
        if s[S.KH] is not None or s[S.KW] is not None or s[S.D] is not None:
            raise PrimitiveError(lambda: f"{who}: the input {S.text(s)} must be [G, C, H, W]")
        o = _size(out, who)
        if depthwise:
            if s[S.G] is not None:
                raise PrimitiveError(lambda: f"{who}: a depthwise conv takes an ungrouped input, got {S.text(s)}")
            groups = S.channels(s)
        else:
            groups = s[S.G] if s[S.G] is not None else _ONE
        return (None, o, None, None, None, s[S.H], s[S.W]), [o / groups]

    @classmethod
    def variants(cls, shape, options, producer):
        if shape[S.H] is None or shape[S.W] is None or shape[S.KH] is not None or shape[S.KW] is not None \
                or shape[S.D] is not None:
            return []
        out = []
        for k in options.kernel_sizes:
            for kh, kw in ((k, 1), (1, k), (k, k)):
                for d in options.dilations:
                    for depthwise in ((False, True) if shape[S.G] is None else (False,)):
                        out.extend((kh, kw, d, depthwise, o) for o in options.channel_outs)
        return out

    @classmethod
    def cost(cls, params, shapes, out):
        (kh, kw, d, depthwise, _), (s,) = params, shapes
        groups = S.channels(s) if depthwise else (s[S.G] if s[S.G] is not None else _ONE)
        weights = S.channels(s) / groups * out[S.C] * Size(kh * kw)
        return weights * S.positions(out), None, weights

    @classmethod
    def locality(cls, params):
        return "neighbour"

    @classmethod
    def receptive(cls, params, fields):
        (kh, kw, d, _, _), ((rh, rw),) = params, fields
        return rh + d * (kh - 1), rw + d * (kw - 1)


@_members([("dims", pg.typing.Str(), "channel axes to mix: 'C', 'K', 'KH', 'KW', 'G' or 'channel'"),
           ("out", pg.typing.Str(default="1"), "size of the mixed axis ('1' contracts it away)")])
class Mix(Primitive):
    """A learned linear map over some channel axes, shared across the others:
    ``Mix('K', '1')`` after ``Unfold`` is one spatial filter shared by all channels."""

    kind = "mix"
    weighted = True
    PARAMS = ("dims", "out")

    @classmethod
    def infer(cls, params, shapes):
        (dims, out), (s,) = params, shapes
        who = cls.name_of(params)
        slots = _dims(s, dims, who)
        if any(slot not in S.CHANNEL_SLOTS for slot in slots):
            raise PrimitiveError(lambda: f"{who}: Mix acts on channel axes only")
        o = _size(out, who)
        changes: Dict[int, Optional[Size]] = {slot: None for slot in slots}
        if not o.is_one():
            changes[slots[0]] = o
        result = S.replace(s, changes)
        if not S.present(result):
            raise PrimitiveError(lambda: f"{who}: mixing every axis of {S.text(s)} away leaves nothing")
        return result, []

    @classmethod
    def variants(cls, shape, options, producer):
        names = _present_dimsets(shape, ("C", "K", "KH", "KW", "G", "channel"))
        return [(n, o) for n in names for o in ("1", "new")]

    @classmethod
    def cost(cls, params, shapes, out):
        (dims, o), (s,) = params, shapes
        slots = _dims(s, dims, "Mix")
        mixed = _ONE
        for slot in slots:
            mixed = mixed * s[slot]
        q = Size.parse(o)
        weights = mixed * q
        return S.numel(s) * q, None, weights


@_members([("dims", pg.typing.Str(), "axes the scale varies along: 'channel', 'C', 'G', 'K', 'KH', 'KW'")])
class Scale(Primitive):
    """Multiplies by a learned tensor over ``dims``, broadcast over the other axes."""

    kind = "scale"
    weighted = True
    PARAMS = ("dims",)

    @classmethod
    def infer(cls, params, shapes):
        (dims,), (s,) = params, shapes
        who = cls.name_of(params)
        slots = _dims(s, dims, who)
        if any(slot not in S.CHANNEL_SLOTS for slot in slots):
            raise PrimitiveError(lambda: f"{who}: a scale over image axes would not be spatially invariant")
        return s, []

    @classmethod
    def variants(cls, shape, options, producer):
        return [(n,) for n in _present_dimsets(shape, ("channel", "C", "G", "K", "KH", "KW"))]

    @classmethod
    def cost(cls, params, shapes, out):
        (dims,), (s,) = params, shapes
        weights = _ONE
        for slot in _dims(s, dims, "Scale"):
            weights = weights * s[slot]
        return None, S.numel(out), weights


# ============================================================================ arithmetic, free
@_members([("dims", pg.typing.Str(), "axes to reduce: a slot name, 'K', 'HW' or 'channel'"),
           ("mode", pg.typing.Enum("avg", ["avg", "max"]), "average or max pooling")])
class Fold(Primitive):
    """Reduces ``dims`` away by averaging (or max): ``Fold('K')`` after an unfold-and-scale is a
    depthwise convolution; ``Fold('HW')`` is global pooling."""

    kind = "fold"
    PARAMS = ("dims", "mode")

    @classmethod
    def infer(cls, params, shapes):
        (dims, mode), (s,) = params, shapes
        who = cls.name_of(params)
        slots = _dims(s, dims, who)
        result = S.replace(s, {slot: None for slot in slots})
        if not S.present(result):
            raise PrimitiveError(lambda: f"{who}: folding every axis of {S.text(s)} leaves a scalar")
        return result, []

    @classmethod
    def variants(cls, shape, options, producer):
        names = _present_dimsets(shape, ("G", "C", "KH", "KW", "K", "D", "H", "W", "HW", "channel"))
        return [(n, m) for n in names for m in ("avg", "max")]

    @classmethod
    def cost(cls, params, shapes, out):
        return None, S.numel(shapes[0]), None

    @classmethod
    def locality(cls, params):
        return "global" if any(slot in (S.H, S.W) for slot in S.DIMSETS[params[0]]) else "point"

    @classmethod
    def receptive(cls, params, fields):
        rh, rw = fields[0]
        slots = S.DIMSETS[params[0]]
        return (GLOBAL if S.H in slots else rh), (GLOBAL if S.W in slots else rw)


@_members([("dims", pg.typing.Str(), "axes normalised together: a slot name, 'K', 'HW' or 'channel'")])
class Softmax(Primitive):
    """Softmax over ``dims`` (jointly)."""

    kind = "softmax"
    PARAMS = ("dims",)

    @classmethod
    def infer(cls, params, shapes):
        (dims,), (s,) = params, shapes
        _dims(s, dims, cls.name_of(params))
        return s, []

    @classmethod
    def variants(cls, shape, options, producer):
        if producer is not None and producer[0] == "softmax":
            return []
        return [(n,) for n in _present_dimsets(shape, ("G", "C", "KH", "KW", "K", "D", "H", "W", "HW", "channel"))]

    @classmethod
    def cost(cls, params, shapes, out):
        return None, S.numel(out), None

    @classmethod
    def locality(cls, params):
        return Fold.locality(params)

    @classmethod
    def receptive(cls, params, fields):
        return Fold.receptive(params, fields)


ACTIVATIONS = ("relu", "gelu", "sigmoid", "tanh")
ELEMENTWISE = ("abs", "exp", "neg", "sin", "sqrt", "sqr")


class _Elementwise(Primitive):
    """A function of each element: the shape is kept, one op per element."""

    PARAMS = ("fn",)

    @classmethod
    def infer(cls, params, shapes):
        return shapes[0], []

    @classmethod
    def cost(cls, params, shapes, out):
        return None, S.numel(out), None


@_members([("fn", pg.typing.Enum("relu", list(ACTIVATIONS)), "activation function")])
class Activation(_Elementwise):
    """ReLU, GELU, Sigmoid or Tanh."""

    kind = "activation"

    @classmethod
    def variants(cls, shape, options, producer):
        out = []
        for fn in ACTIVATIONS:
            # Canvas's pruning: no ReLU right after a ReLU or a Sigmoid (it changes nothing).
            if fn == "relu" and producer is not None and producer[0] == "activation" and \
                    producer[1][0] in ("relu", "sigmoid"):
                continue
            if producer is not None and producer[0] == "activation" and producer[1][0] == fn:
                continue
            out.append((fn,))
        return out


@_members([("fn", pg.typing.Enum("abs", list(ELEMENTWISE)),
            "abs, exp, neg, sin, sqrt (of |x|) or sqr")])
class ElementWise(_Elementwise):
    """An element-wise function: abs, exp, neg, sin, sqrt(|x|), x^2."""

    kind = "elementwise"

    @classmethod
    def variants(cls, shape, options, producer):
        if producer is not None and producer[0] == "unfold":
            return []
        last = producer[1][0] if producer is not None and producer[0] in ("elementwise", "activation") else None
        kind = producer[0] if producer is not None else None
        out = []
        for fn in ELEMENTWISE:
            # Canvas's pruning of pointless pairs.
            if kind == "elementwise" and (fn == last and fn in ("abs", "neg", "exp") or
                                          fn == "abs" and last in ("exp", "neg", "sqr", "sqrt") or
                                          (fn, last) in (("sqrt", "sqr"), ("sqr", "sqrt"))):
                continue
            if kind == "activation" and fn == "abs" and last in ("sigmoid", "relu"):
                continue
            out.append((fn,))
        return out


# ============================================================================ blending
BROADCAST_OPS = ("add", "sub", "mul", "max", "min")


def _spatial(size: Size) -> bool:
    return size.spatial


def _inner_is_channel(block: List[Size], lhs_pi: Size) -> bool:
    """Whether the innermost dims of ``rhs``'s unmatched ``block`` that ``lhs`` maps onto (product
    ``lhs_pi``) are whole channel dims: image axes may only lie in the repeated, outer part."""
    if lhs_pi.is_one():
        return True
    inner = _ONE
    for size in reversed(block):
        if _spatial(size):
            return False
        inner = inner * size
        if inner == lhs_pi:
            return True
    return not any(_spatial(size) for size in block)


def _present(shape: S.Shape) -> Tuple[Size, ...]:
    """``S.present`` as a tuple, remembered per shape (broadcast matching asks for the same shapes often)."""
    hit = _PRESENT.get(shape)
    if hit is None:
        hit = _PRESENT[shape] = tuple(S.present(shape))
    return hit


_PRESENT: Dict[tuple, tuple] = {}


def _present_between(shape: S.Shape, prefix: int, suffix: int) -> Tuple[Size, ...]:
    present = _present(shape)
    return present[prefix:len(present) - suffix]


def broadcast_match(lhs: S.Shape, rhs: S.Shape):
    """Canvas's broadcast matching: (prefix, suffix, lhs_pi, rhs_pi, multiplier) on the present sizes.

    The common prefix and suffix are stripped; the rest of ``lhs`` (``lhs_pi``) is repeated
    ``multiplier = rhs_pi / lhs_pi`` times along the outer part of the rest of ``rhs``.
    """
    last = _LAST_MATCH[0]               # infer and then solutions ask for the same pair
    if last[0] is lhs and last[1] is rhs:
        return last[2]
    a, b = _present(lhs), _present(rhs)
    suffix = 0
    while suffix < min(len(a), len(b)) and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    prefix = 0
    while prefix < min(len(a), len(b)) - suffix and a[prefix] == b[prefix]:
        prefix += 1
    lhs_pi = _ONE
    for s in a[prefix:len(a) - suffix]:
        lhs_pi = lhs_pi * s
    rhs_pi = _ONE
    for s in b[prefix:len(b) - suffix]:
        rhs_pi = rhs_pi * s
    result = prefix, suffix, lhs_pi, rhs_pi, rhs_pi / lhs_pi
    _LAST_MATCH[0] = (lhs, rhs, result)
    return result


_LAST_MATCH = [(None, None, None)]      # the latest (lhs, rhs, match), replaced as one tuple


@_members([("op", pg.typing.Enum("add", list(BROADCAST_OPS)), "add, sub, mul, max or min")])
class Broadcast(Primitive):
    """Blends two nodes: ``lhs`` is broadcast onto ``rhs`` (repeated along the part of ``rhs`` it does
    not match) and combined; the output has ``rhs``'s shape. ``inputs = [lhs, rhs]``."""

    kind = "broadcast"
    arity = 2
    PARAMS = ("op",)

    @classmethod
    def infer(cls, params, shapes):
        lhs, rhs = shapes
        prefix, suffix, lhs_pi, rhs_pi, mult = broadcast_match(lhs, rhs)
        who = lambda: cls.name_of(params)       # noqa: E731 (named only in messages)
        if _spatial(lhs_pi) or not _inner_is_channel(_present_between(rhs, prefix, suffix), lhs_pi):
            raise PrimitiveError(lambda: f"{who()}: {S.text(lhs)} onto {S.text(rhs)} would spread values across image "
                                 f"positions (not spatially invariant): image axes must match or be repeated over")
        if any(mult.power_of(v) < 0 for v in mult.dynamic_vars()):
            raise PrimitiveError(lambda: f"{who()}: {S.text(lhs)} onto {S.text(rhs)} needs the dynamic sizes solved "
                                 f"(multiplier {mult})")
        return rhs, [lhs_pi, mult]

    @classmethod
    def solutions(cls, params, shapes):
        """Values of the dynamic variable in ``lhs`` that make the broadcast legal: the repeat count a
        factor of the multiplier's numerator (Canvas), or ``lhs`` a factor of the matched part of ``rhs``
        (the paper's involution: ``[G, x/G]`` onto ``[G, C/G, K, K]`` gives ``x = G*K*K``)."""
        lhs, rhs = shapes
        _, _, lhs_pi, rhs_pi, mult = broadcast_match(lhs, rhs)
        den = mult.denominator()
        dyn = den.dynamic_vars()
        if len(dyn) != 1 or den.power_of(dyn[0]) != 1:
            return []
        var = dyn[0]
        x = Size.dynamic(var)
        rest = den / x
        values = [f / rest for f in mult.numerator().factors(limit=12)]
        if lhs_pi.power_of(var) == 1:
            coefficient = lhs_pi / x
            values += [f / coefficient for f in rhs_pi.numerator().factors(limit=12)]
        out = []
        for v in values:
            # Image sizes never become channel sizes (spatial invariance, as Canvas's default).
            if v not in out and not _spatial(v) and not v.dynamic_vars():
                out.append(v)
        return [(var, v) for v in out]

    @classmethod
    def cost(cls, params, shapes, out):
        return None, S.numel(out), None


@_members([("mode", pg.typing.Enum("gram", ["gram", "apply"]),
            "'gram': [A, H, W] x [B, H, W] -> [A, D=B]; 'apply': [A, D=B] x [B, H, W] -> [A, H, W]"),
           ("softmax", pg.typing.Bool(default=False), "softmax over D of a gram matrix")])
class BMM(Primitive):
    """Batched matrix multiplication between the channel and position axes of two nodes
    (channel attention: a gram matrix over the image, then applied to another node)."""

    kind = "bmm"
    arity = 2
    PARAMS = ("mode", "softmax")

    @classmethod
    def infer(cls, params, shapes):
        (mode, softmax), (lhs, rhs) = params, shapes
        who = cls.name_of(params)
        if mode == "gram":
            for t in (lhs, rhs):
                _need(t, (S.H, S.W), who)
                if t[S.D] is not None:
                    raise PrimitiveError(lambda: f"{who}: {S.text(t)} is already a matrix")
            if lhs[S.H] != rhs[S.H] or lhs[S.W] != rhs[S.W]:
                raise PrimitiveError(lambda: f"{who}: image sizes differ: {S.text(lhs)} vs {S.text(rhs)}")
            a, b = S.channels(lhs), S.channels(rhs)
            return (None, a, None, None, b, None, None), []
        if softmax:
            raise PrimitiveError(lambda: f"{who}: softmax belongs to the gram mode")
        if lhs[S.D] is None or lhs[S.H] is not None or lhs[S.W] is not None:
            raise PrimitiveError(lambda: f"{who}: the left input must be a gram matrix [A, D], got {S.text(lhs)}")
        _need(rhs, (S.H, S.W), who)
        if rhs[S.D] is not None:
            raise PrimitiveError(lambda: f"{who}: the right input must be [B, H, W], got {S.text(rhs)}")
        b = S.channels(rhs)
        if lhs[S.D] != b:
            raise PrimitiveError(lambda: f"{who}: D = {lhs[S.D]} does not match the right input's channels {b}")
        return (None, S.channels(lhs), None, None, None, rhs[S.H], rhs[S.W]), []

    @classmethod
    def solutions(cls, params, shapes):
        (mode, _), (lhs, rhs) = params, shapes
        if mode != "apply" or lhs[S.D] is None:
            return []
        d, b = lhs[S.D], S.channels(rhs)
        for have, want in ((d, b), (b, d)):
            dyn = have.dynamic_vars()
            if len(dyn) == 1 and have.power_of(dyn[0]) == 1 and dyn[0] not in want.dynamic_vars():
                value = want / (have / Size.dynamic(dyn[0]))
                if not value.spatial:
                    return [(dyn[0], value)]
        return []

    @classmethod
    def cost(cls, params, shapes, out):
        (mode, _), (lhs, rhs) = params, shapes
        if mode == "gram":
            return S.channels(lhs) * S.channels(rhs) * S.positions(lhs), None, None
        return S.channels(lhs) * lhs[S.D] * S.positions(out), None, None

    @classmethod
    def locality(cls, params):
        return "global" if params[0] == "gram" else "point"

    @classmethod
    def receptive(cls, params, fields):
        if params[0] == "gram":
            return GLOBAL, GLOBAL
        return fields[1]


PRIMITIVES = {cls.kind: cls for cls in (Group, Shift, Unfold, FC, Conv, Mix, Scale, Fold, Softmax, Activation,
                                        ElementWise, Broadcast, BMM)}
KINDS = tuple(PRIMITIVES)
WEIGHTED_KINDS = tuple(k for k, c in PRIMITIVES.items() if c.weighted)
