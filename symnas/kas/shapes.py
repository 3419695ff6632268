"""Kernel tensor shapes: seven named slots, each a :class:`~symnas.kas.sizes.Size` or empty.

A tensor inside a kernel is ``[N, G, C, KH, KW, D, H, W]`` with only some slots present:
``G`` groups, ``C`` channels, ``KH``/``KW`` unfolded neighbourhoods (channel-like), ``D`` the
second matrix axis of a batched matmul result, ``H``/``W`` the image axes. The channel slots
(G, C, KH, KW) are what an ``FC`` mixes; the position slots (D, H, W) are what it keeps.
The kernel input is ``[C, H, W]``; its output must close to ``[O, H, W]`` (then strided).

Example::

    from symnas.kas import shapes
    x = shapes.INPUT
    assert shapes.text(x) == "[C, H, W]" and str(shapes.channels(x)) == "C"
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from symnas.kas.sizes import Size

__all__ = ["G", "C", "KH", "KW", "D", "H", "W", "SLOTS", "CHANNEL_SLOTS", "POSITION_SLOTS", "DIMSETS",
           "Shape", "INPUT", "channels", "positions", "present", "replace", "text", "dynamic_vars", "numel"]

G, C, KH, KW, D, H, W = range(7)
SLOTS = ("G", "C", "KH", "KW", "D", "H", "W")
CHANNEL_SLOTS = (G, C, KH, KW)
POSITION_SLOTS = (D, H, W)
# Names of slot sets that primitives act on.
DIMSETS: Dict[str, Tuple[int, ...]] = {
    "G": (G,), "C": (C,), "KH": (KH,), "KW": (KW,), "K": (KH, KW), "D": (D,), "H": (H,), "W": (W,),
    "HW": (H, W), "channel": CHANNEL_SLOTS,
}
Shape = Tuple[Optional[Size], ...]

INPUT: Shape = (None, Size.symbol("C"), None, None, None, Size.symbol("H"), Size.symbol("W"))
_ONE = Size()


def channels(shape: Shape) -> Size:
    """The product of the present channel slots (what an FC mixes); 1 if none."""
    out = _ONE
    for s in (shape[G], shape[C], shape[KH], shape[KW]):
        if s is not None:
            out = out * s
    return out


def positions(shape: Shape) -> Size:
    out = _ONE
    for s in (shape[D], shape[H], shape[W]):
        if s is not None:
            out = out * s
    return out


def numel(shape: Shape) -> Size:
    """The element count (channels times positions), remembered per shape (shapes and sizes are immutable)."""
    hit = _NUMEL.get(shape)
    if hit is None:
        hit = _NUMEL[shape] = channels(shape) * positions(shape)
    return hit


_NUMEL: Dict[tuple, Size] = {}


def present(shape: Shape) -> List[Size]:
    """The present slots' sizes in layout order (the tensor's dimensions after the batch)."""
    return [s for s in shape if s is not None]


def present_slots(shape: Shape) -> List[int]:
    return [i for i, s in enumerate(shape) if s is not None]


def replace(shape: Shape, changes: Dict[int, Optional[Size]]) -> Shape:
    out = list(shape)
    for slot, size in changes.items():
        out[slot] = size
    return tuple(out)


def dynamic_vars(shape: Shape) -> List[int]:
    found: List[int] = []
    for s in shape:
        if s is not None:
            for v in s.dynamic_vars():
                if v not in found:
                    found.append(v)
    return found


def substitute(shape: Shape, var: int, value: Size) -> Shape:
    return tuple(None if s is None else s.substitute(var, value) for s in shape)


def text(shape: Shape) -> str:
    """``[G, C/G, KH=3, H, W]``: slots whose size is their own name are written bare."""
    parts = []
    for name, size in zip(SLOTS, shape):
        if size is None:
            continue
        s = str(size)
        parts.append(s if (s == name or name in ("G", "C", "D")) else f"{name}={s}")
    return "[" + ", ".join(parts) + "]"


def sizes_of(shapes: Iterable[Shape]) -> List[Size]:
    return [s for shape in shapes for s in shape if s is not None]
