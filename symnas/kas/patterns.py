"""Known convolution designs written in Canvas's primitives, and a classifier that finds them.

``reference_kernels()`` gives depthwise-separable, spatially separable (k x 1 then 1 x k) and
involution kernels; ``classify(kernel)`` says which of these families a kernel belongs to, from
its structure (what each weighted primitive mixes), so a search's samples can be counted:

- ``depthwise_separable``: a per-channel spatial filter (a depthwise conv, or an unfolded
  neighbourhood weighted per channel and folded) and a pointwise channel mix (a 1x1 FC), and no
  primitive that mixes channels and space at once;
- ``spatially_separable``: weighted primitives that see a neighbourhood along H only and others
  along W only, none along both;
- ``involution_like``: an input-dependent kernel: a product (broadcast ``mul``) of an unfolded
  neighbourhood with a tensor a weighted primitive computed from the input, folded over the
  neighbourhood afterwards.

Example::

    import symnas as sn
    for name, kernel in sn.kas.reference_kernels().items():
        assert name in sn.kas.classify(kernel)
"""
from __future__ import annotations

from typing import Dict, List, Set

from symnas.kas import shapes as S
from symnas.kas.kernel import Kernel, analyze
from symnas.kas.primitives import FC, Broadcast, Conv, Fold, Group, Mix, Scale, Unfold

__all__ = ["depthwise_separable", "bottleneck_separable", "spatially_separable", "involution", "reference_kernels", "classify",
           "FAMILIES"]

FAMILIES = ("depthwise_separable", "spatially_separable", "involution_like")


def depthwise_separable(k: int = 3, out: str = "O", dilation: int = 1) -> Kernel:
    """A k x k depthwise conv (unfold, a per-channel weight, fold; taps ``dilation`` apart) then a 1x1
    conv to ``out``."""
    return Kernel([Unfold("HW", k, dilation), Scale("channel"), Fold("K"), FC(out)], out_channels=_channels(out))


def bottleneck_separable(k: int = 3, mid: str = "x0", out: str = "O") -> Kernel:
    """A 1x1 conv to ``mid`` channels, a k x k depthwise conv, a 1x1 conv to ``out`` (MobileNet's
    separable block around a bottleneck whose width the budget solver sets)."""
    return Kernel([FC(mid), Unfold("HW", k), Scale("channel"), Fold("K"), FC(out)], out_channels=_channels(out))


def spatially_separable(k: int = 3, mid: str = "x0", out: str = "O", dilation: int = 1) -> Kernel:
    """A k x 1 conv to ``mid`` channels, then a 1 x k conv to ``out`` (Inception v3); taps ``dilation``
    apart."""
    return Kernel([Unfold("H", k, dilation), FC(mid), Unfold("W", k, dilation), FC(out)],
                  out_channels=_channels(out))


def involution(k: int = 3, groups: int = 4, out: str = "O") -> Kernel:
    """Involution (Li et al. 2021): an FC makes a k x k kernel per pixel and group, which weights the
    pixel's unfolded neighbourhood in every channel of the group; a 1x1 conv maps to ``out``."""
    prims = [FC(f"{k * k}*G", inputs=[0]), Group("G", inputs=[1]), Group("G", inputs=[0]),
             Unfold("HW", k, inputs=[3]), Broadcast("mul", inputs=[2, 4]), Fold("K")]
    if out != "C":
        prims.append(FC(out))
    return Kernel(prims, out_channels=_channels(out), groups=groups)


def _channels(out: str) -> str:
    return "C" if out == "C" else "O"


def reference_kernels(out: str = "O") -> Dict[str, Kernel]:
    return {"depthwise_separable": depthwise_separable(out=out),
            "spatially_separable": spatially_separable(out=out),
            "involution_like": involution(out=out)}


def classify(kernel) -> Set[str]:
    """The families of :data:`FAMILIES` that ``kernel`` (a Kernel, or a list of steps) belongs to."""
    steps = kernel.steps() if isinstance(kernel, Kernel) else list(kernel)
    out_channels = kernel.out_channels if isinstance(kernel, Kernel) else "O"
    a = analyze(steps, out_channels)
    shapes = a.shapes
    depthwise = pointwise = dense_spatial = False
    along: Set[str] = set()
    weighted_nodes: List[int] = []
    for i, (cls, params, inputs) in enumerate(steps, start=1):
        if not cls.weighted:
            continue
        weighted_nodes.append(i)
        s = shapes[inputs[0]]
        k_axes = ("H" if s[S.KH] is not None else "") + ("W" if s[S.KW] is not None else "")
        if cls is Conv:
            kh, kw, _, dw, _ = params
            k_axes = ("H" if kh > 1 else "") + ("W" if kw > 1 else "")
            if k_axes:
                if dw:
                    depthwise = True
                else:
                    dense_spatial = True
            else:
                pointwise = True
        elif cls is FC:
            per_channel = s[S.G] is not None and s[S.C] is not None and s[S.C].is_one()
            if k_axes:
                if per_channel:
                    depthwise = True
                else:
                    dense_spatial = True
            elif not per_channel:
                pointwise = True
        elif cls is Scale and k_axes and _folded_over_k(steps, shapes, i):
            slots = S.DIMSETS.get(params[0], ())
            if params[0] == "channel" or S.C in slots:
                depthwise = True
        elif cls is Mix and k_axes:
            dense_spatial = dense_spatial or "C" in params[0] or params[0] == "channel"
        if k_axes and (cls in (FC, Conv) or (cls is Scale and _folded_over_k(steps, shapes, i))):
            along.add(k_axes)
    found = set()
    if depthwise and pointwise and not dense_spatial:
        found.add("depthwise_separable")
    if "H" in along and "W" in along and "HW" not in along:
        found.add("spatially_separable")
    ancestors = _ancestors(steps)
    for i, (cls, params, inputs) in enumerate(steps, start=1):
        if cls is not Broadcast or params[0] != "mul":
            continue
        lhs, rhs = inputs
        for kernel_side, data_side in ((lhs, rhs), (rhs, lhs)):
            ks, ds = shapes[kernel_side], shapes[data_side]
            generated = any(w in ancestors[kernel_side] | {kernel_side} for w in weighted_nodes)
            if generated and ks[S.KH] is None and ks[S.KW] is None and \
                    (ds[S.KH] is not None or ds[S.KW] is not None) and _folded_over_k(steps, shapes, i):
                found.add("involution_like")
    return found


def _ancestors(steps) -> List[Set[int]]:
    out: List[Set[int]] = [set()]
    for _, _, inputs in steps:
        anc: Set[int] = set()
        for j in inputs:
            anc |= out[j] | {j}
        out.append(anc)
    return out


def _folded_over_k(steps, shapes, node: int) -> bool:
    """Whether some node downstream of ``node`` removes its K axes by a fold, an FC or a mix."""
    frontier = {node}
    for i, (cls, params, inputs) in enumerate(steps, start=1):
        if i <= node or not frontier.intersection(inputs):
            continue
        frontier.add(i)
        before, after = shapes[inputs[0]], shapes[i]
        had_k = before[S.KH] is not None or before[S.KW] is not None
        if had_k and after[S.KH] is None and after[S.KW] is None and cls in (Fold, FC, Mix):
            return True
    return False
