"""A kernel as a torch module, for one target's sizes (training, proxies, torch.compile timing).

``KernelModule(kernel, env)`` evaluates every size for ``env`` (the target's ``C, O, H, W, S``,
``G`` and the solved ``x<i>``) and runs the primitives on tensors laid out as the present slots
of ``[N, G, C, KH, KW, D, H, W]``. Nodes the stride push-down computes at the output's resolution
are computed there: a strided unfold or conv uses torch's stride, a point-wise primitive reads a
subsampled input. Weighted primitives hold ``nn.Conv2d`` (FC, Conv) or parameters (Mix, Scale);
``reset_parameters()`` re-initialises them all (``sn.nn.init_by_name`` calls it).

Native ops (``native=True``, the default): a chain of primitives that equals a standard torch op runs
as that op, with the same parameters, so training is not slowed by materialised neighbourhoods:
``Unfold + FC`` is a (grouped, dilated, strided) ``F.conv2d``, ``Unfold(HW) + Scale + Fold(K, avg)``
a depthwise ``F.conv2d``, a zero-filled ``Shift`` one ``F.pad`` (negative on one side). Only chains
whose intermediate nodes nobody else reads are rewritten; ``native=False`` runs every primitive as
written (the tests check that both give the same numbers).

Example::

    import torch, symnas as sn
    k = sn.kas.depthwise_separable()
    m = sn.kas.KernelModule(k, {"C": 16, "O": 32, "H": 8, "W": 8, "S": 2})
    assert m(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from symnas.kas import shapes as S
from symnas.kas.kernel import Kernel, KernelRejected
from symnas.kas.primitives import broadcast_match

__all__ = ["KernelModule", "set_native"]

_SPATIAL = (S.H, S.W)


class _Scale(nn.Module):
    """A learned element-wise weight. Read by an averaging fold over ``fan_in`` of its own axes, it is a
    conv's weight: it then multiplies by ``gain`` (= ``fan_in``, so the average is a plain weighted sum
    and the parameter is the conv's weight, trained at the conv's learning rate rather than
    ``fan_in ** 2`` times slower) and starts like a conv's (uniform in +-1/sqrt(fan_in), not ones)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.gain = 1.0
        self.fan_in = 0

    def as_weighted_sum(self, fan_in: int) -> None:
        self.gain, self.fan_in = float(fan_in), fan_in

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.fan_in:
                bound = 1.0 / math.sqrt(self.fan_in)
                self.weight.uniform_(-bound, bound)
            else:
                self.weight.fill_(1.0)

    def forward(self, x):
        return x * self.weight if self.gain == 1.0 else x * (self.weight * self.gain)


class _Mix(nn.Module):
    def __init__(self, p: int, q: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(p, q))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(3.0 / self.weight.shape[0])
        nn.init.uniform_(self.weight, -bound, bound)


class KernelModule(nn.Module):
    """The torch module of ``kernel`` for the sizes in ``env``; maps [N, C, H, W] to [N, O, H/S, W/S]."""

    def __init__(self, kernel: Kernel, env: Mapping[str, int], native: bool = True):
        super().__init__()
        env = dict(env)
        env.setdefault("S", 1)
        env.setdefault("G", kernel.groups)
        env.setdefault("O", env["C"])
        kernel.check(env)
        a = kernel.analyze()
        self.env = env
        self.kernel = kernel
        self.names = kernel.names()
        dims = [_dims(s, env) for s in a.effective]          # per node: [(slot, size)] as computed
        self.in_shape = (env["C"], env["H"], env["W"])
        self.out_shape = (env["O"], env["H"] // env["S"], env["W"] // env["S"])
        self.layers = nn.ModuleList()
        self._plan: List[tuple] = []
        stride = env["S"]
        for i, (step, cut) in enumerate(zip(kernel.steps(), a.sliced), start=1):
            cls, params, inputs = step
            ins = [_sliced(dims[j], stride) if c else dims[j] for j, c in zip(inputs, cut)]
            strided_out = a.strided[i] and cls.locality(params) != "point" and stride > 1
            layer, fn = _build(cls.kind, params, ins, dims[i], strided_out, stride,
                               [a.shapes[j] for j in inputs], native)
            index = -1
            if layer is not None:
                self.layers.append(layer)
                index = len(self.layers) - 1
            cut_index = tuple(_trailing(dims[j], stride) if c else None for j, c in zip(inputs, cut))
            self._plan.append((fn, tuple(inputs), cut_index, index))
        self._stride = stride
        self._out_dims = dims[-1]
        for scale, fan_in in _averaged_scales(kernel.steps(), a, dims):
            self.layers[self._plan[scale - 1][3]].as_weighted_sum(fan_in)
        self.native_chains: List[Tuple[int, ...]] = []
        if native:
            for chain, fn, source in _native_chains(kernel.steps(), a, dims, stride):
                weights = self._plan[chain[1] - 1][3]          # the FC's or the Scale's parameters
                for node in chain[:-1]:
                    self._plan[node - 1] = (_skipped, (), (), -1)
                self._plan[chain[-1] - 1] = (fn, (source,), (None,), weights)
                self.native_chains.append(tuple(chain))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        values = [x]
        for fn, inputs, cut, index in self._plan:
            args = [values[j] if c is None else values[j][c] for j, c in zip(inputs, cut)]
            layer = self.layers[index] if index >= 0 else None
            values.append(fn(layer, n, *args))
        return values[-1].reshape(n, *self.out_shape)

    def extra_repr(self) -> str:
        return f"{' -> '.join(self.names)}; {self.in_shape} -> {self.out_shape}"


def set_native(model: nn.Module, native: bool) -> nn.Module:
    """``model`` with every ``KernelModule`` rebuilt with ``native`` (same parameters, same numbers);
    e.g. to time the generic primitive chains against the native ops. Returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, KernelModule):
                device = next(child.parameters(), torch.empty(0)).device
                fresh = KernelModule(child.kernel, child.env, native=native).to(device)
                fresh.load_state_dict(child.state_dict())
                fresh.train(child.training)
                setattr(parent, name, fresh)
    return model


def _skipped(layer, n):
    return None


def _averaged_scales(steps, a, dims):
    """[(Scale node, fan_in)] for each Scale whose only reader averages over axes along which the Scale's
    weight varies (Unfold + Scale + Fold(K, avg) is a depthwise conv): fan_in = the averaged elements."""
    out = []
    for v, (cls, params, _) in enumerate(steps, start=1):
        if cls.kind != "scale" or len(a.users[v]) != 1:
            continue
        f = a.users[v][0]
        fold, fold_params, _ = steps[f - 1]
        if fold.kind != "fold" or fold_params[1] != "avg":
            continue
        present = dict(dims[v])
        averaged = [s for s in _slot_set(dims[v], fold_params[0]) if s in present]
        if averaged and set(averaged) <= set(_slot_set(dims[v], params[0])):
            out.append((v, _prod(present[s] for s in averaged)))
    return out


def _native_chains(steps, a, dims, stride):
    """[(chain of nodes, fn(layer, n, x), the chain's input node)] for chains equal to one torch conv:
    ``Unfold + FC`` and ``Unfold(HW) + Scale + Fold(K, avg)`` whose inner nodes only the chain reads."""
    out = []
    for u, (cls, params, inputs) in enumerate(steps, start=1):
        if cls.kind != "unfold" or len(a.users[u]) != 1 or any(a.sliced[u - 1]):
            continue
        axis, k, d = params
        src = inputs[0]
        have = dict(dims[src])
        if S.D in have or (axis == "H" and S.KW in have):
            continue                        # F.unfold's layout would need a permutation: keep it generic
        v = a.users[u][0]
        reader = steps[v - 1][0].kind
        chain = [u, v]
        if reader == "scale":
            if len(a.users[v]) != 1 or S.KH in have or S.KW in have or axis != "HW" or \
                    not set(_slot_set(dims[u], steps[v - 1][1][0])) <= set(S.CHANNEL_SLOTS):
                continue
            f = a.users[v][0]
            if steps[f - 1][0].kind != "fold" or tuple(steps[f - 1][1]) != ("K", "avg"):
                continue
            chain.append(f)
        elif reader != "fc":
            continue
        kh, kw = (k if "H" in axis else 1), (k if "W" in axis else 1)
        # Subsamplings along the chain: a strided unfold, a point-wise step reading a cut input.
        subs = int(a.strided[u] and stride > 1) + sum(int(any(a.sliced[c - 1])) for c in chain[1:])
        out.append((chain, _conv_fn(reader, dims, src, chain, kh, kw, d, stride ** subs), src))
    return out


def _conv_fn(reader, dims, src, chain, kh, kw, d, stride):
    ch, _ = _split(dims[src])
    c = _prod(ch)
    have = dict(dims[src])
    h, w = have.get(S.H, 1), have.get(S.W, 1)
    st = (stride if S.H in have else 1, stride if S.W in have else 1)
    pad = (d * (kh - 1) // 2, d * (kw - 1) // 2)
    out_sizes = _sizes(dims[chain[-1]])
    if reader == "fc":
        g = have.get(S.G, 1)

        def conv(layer, n, x):
            weight = layer.weight.reshape(layer.weight.shape[0], c // g, kh, kw)
            y = F.conv2d(x.reshape(n, c, h, w), weight, None, st, pad, d, g)
            return y.reshape(n, *out_sizes)
        return conv
    unfolded = _split(dims[chain[0]])[0]    # the unfold's channel sizes: [..., KH, KW]

    def depthwise(layer, n, x):
        weight = layer.weight.reshape(layer.weight.shape[:1 + len(unfolded)]).expand(1, *unfolded)
        weight = weight.reshape(c, 1, kh, kw) * (layer.gain / (kh * kw))
        y = F.conv2d(x.reshape(n, c, h, w), weight, None, st, pad, d, c)
        return y.reshape(n, *out_sizes)
    return depthwise


def _trailing(dims, stride: int) -> tuple:
    """The index that subsamples a node's image axes (always its last dims) by ``stride``."""
    count = sum(1 for slot, _ in dims if slot in _SPATIAL)
    return (Ellipsis,) + (slice(None, None, stride),) * count


def _dims(shape: S.Shape, env) -> List[Tuple[int, int]]:
    out = []
    for slot, size in enumerate(shape):
        if size is not None:
            v = size.value(env)
            if v.denominator != 1 or v <= 0:
                raise KernelRejected(f"size {size} is {v} for {env}")
            out.append((slot, int(v)))
    return out


def _sliced(dims, stride):
    return [(slot, size // stride if slot in _SPATIAL else size) for slot, size in dims]


def _sizes(dims) -> List[int]:
    return [size for _, size in dims]


def _slots(dims) -> List[int]:
    return [slot for slot, _ in dims]


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _split(dims):
    """(channel sizes, position sizes) of a node's dims."""
    ch = [size for slot, size in dims if slot in S.CHANNEL_SLOTS]
    pos = [size for slot, size in dims if slot in S.POSITION_SLOTS]
    return ch, pos


def _axes(dims, slots) -> List[int]:
    """Tensor axes (batch = 0) of these slots."""
    order = _slots(dims)
    return [order.index(s) + 1 for s in slots]


def _build(kind, params, ins, out, strided_out, stride, logical_ins, native=True):
    """(module or None, fn(layer, n, *inputs)) for one primitive."""
    out_sizes = _sizes(out)
    if kind == "group":
        return None, lambda layer, n, x: x.reshape(n, *out_sizes)
    if kind == "shift":
        return None, _shift_fn(params, ins, stride, strided_out, native)
    if kind == "unfold":
        axis, k, d = params
        return None, _unfold_fn(axis, k, d, ins[0], out, stride if strided_out else 1)
    if kind in ("fc", "conv"):
        return _weighted_fn(kind, params, ins, out_sizes, stride, strided_out)
    if kind == "mix":
        return _mix_fn(params, ins, out, out_sizes)
    if kind == "scale":
        (dims,) = params
        slots = set(_slot_set(ins[0], dims))
        shape = [1] + [size if slot in slots else 1 for slot, size in ins[0]]
        return _Scale(shape), lambda layer, n, x: layer(x)
    if kind == "fold":
        dims, mode = params
        axes = _axes(ins[0], _slot_set(ins[0], dims))

        cut = _trailing(out, stride) if strided_out else None

        def fold(layer, n, x):
            y = x.mean(dim=axes) if mode == "avg" else x.amax(dim=axes)
            return (y if cut is None else y[cut]).reshape(n, *out_sizes)
        return None, fold
    if kind == "softmax":
        (dims,) = params
        axes = _axes(ins[0], _slot_set(ins[0], dims))

        cut = _trailing(ins[0], stride) if strided_out else None

        def softmax(layer, n, x):
            last = list(range(x.dim() - len(axes), x.dim()))
            moved = x.movedim(axes, last)
            flat = moved.reshape(*moved.shape[:moved.dim() - len(axes)], -1).softmax(-1).reshape(moved.shape)
            y = flat.movedim(last, axes)
            return y if cut is None else y[cut]
        return None, softmax
    if kind == "activation":
        fn = {"relu": torch.relu, "gelu": F.gelu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[params[0]]
        return None, lambda layer, n, x: fn(x)
    if kind == "elementwise":
        fn = _ELEMENTWISE[params[0]]
        return None, lambda layer, n, x: fn(x)
    if kind == "broadcast":
        return None, _broadcast_fn(params[0], logical_ins, ins, out)
    if kind == "bmm":
        return None, _bmm_fn(params, ins, out_sizes)
    raise KernelRejected(f"no torch code for primitive kind {kind!r}")


def _shift_fn(params, ins, stride, strided_out, native):
    """fn of a shift: zeros where the window leaves the tensor (one F.pad when native)."""
    axis, offset = params
    axes = _axes(ins[0], S.DIMSETS[axis])

    cut = _trailing(ins[0], stride) if strided_out else None

    if native:
        def shift(layer, n, x):
            if any(abs(offset) >= x.shape[ax] for ax in axes):
                return torch.zeros_like(x) if cut is None else torch.zeros_like(x[cut])
            pad = [0] * (2 * (x.dim() - min(axes)))
            for ax in axes:                  # out[h] = in[h + offset]: crop one side, zeros on the other
                pad[2 * (x.dim() - 1 - ax)] = -offset
                pad[2 * (x.dim() - 1 - ax) + 1] = offset
            y = F.pad(x, pad)
            return y if cut is None else y[cut]
        return shift

    def shift(layer, n, x):
        for ax in axes:
            x = _shift(x, ax, offset)
        return x if cut is None else x[cut]
    return shift


def _weighted_fn(kind, params, ins, out_sizes, stride, strided_out):
    """FC (a grouped 1x1 conv over the flattened positions) or Conv: (module, fn)."""
    ch, pos = _split(ins[0])
    c_in = _prod(ch)
    c_out = out_sizes[0]
    g = dict(ins[0]).get(S.G, 1)
    if kind == "fc":
        conv = nn.Conv2d(c_in, c_out, 1, groups=g, bias=False)
        p = _prod(pos)

        def fc(layer, n, x):
            y = layer(x.reshape(n, c_in, p, 1))
            return y.reshape(n, *out_sizes)
        return conv, fc
    kh, kw, d, depthwise, _ = params
    groups = c_in if depthwise else g
    h, w = dict(ins[0])[S.H], dict(ins[0])[S.W]
    conv = nn.Conv2d(c_in, c_out, (kh, kw), dilation=d, padding=(d * (kh - 1) // 2, d * (kw - 1) // 2),
                     stride=stride if strided_out else 1, groups=groups, bias=False)

    def conv_fn(layer, n, x):
        return layer(x.reshape(n, c_in, h, w)).reshape(n, *out_sizes)
    return conv, conv_fn


def _mix_fn(params, ins, out, out_sizes):
    """Mix: the chosen axes flattened and multiplied by a learned matrix: (module, fn)."""
    dims, q = params
    slots = [s for s in _slot_set(ins[0], dims)]
    axes = _axes(ins[0], slots)
    p = _prod(dict(ins[0])[s] for s in slots)
    qv = out_sizes[_slots(out).index(slots[0])] if q != "1" else 1
    mix = _Mix(p, qv)

    def mix_fn(layer, n, x):
        moved = x.movedim(axes, list(range(x.dim() - len(axes), x.dim())))
        y = moved.reshape(*moved.shape[:moved.dim() - len(axes)], p) @ layer.weight
        return (y.squeeze(-1) if q == "1" else y.movedim(-1, axes[0])).reshape(n, *out_sizes)
    return mix, mix_fn


def _bmm_fn(params, ins, out_sizes):
    """fn of a BMM: a gram matrix over the image (optionally softmaxed), or applying one."""
    mode, softmax = params
    if mode == "gram":
        a = _prod(_split(ins[0])[0])
        b = _prod(_split(ins[1])[0])
        p = _prod(_split(ins[0])[1])
        scale = 1.0 / math.sqrt(p)

        def gram(layer, n, x, y):
            m = torch.bmm(x.reshape(n, a, p), y.reshape(n, b, p).transpose(1, 2)) * scale
            return (m.softmax(-1) if softmax else m).reshape(n, *out_sizes)
        return gram
    a = _prod(_split(ins[0])[0])
    dsize = dict(ins[0])[S.D]
    p = _prod(_split(ins[1])[1])

    def apply(layer, n, x, y):
        return torch.bmm(x.reshape(n, a, dsize), y.reshape(n, dsize, p)).reshape(n, *out_sizes)
    return apply


_ELEMENTWISE = {"abs": torch.abs, "exp": torch.exp, "neg": torch.neg,
                "sin": lambda x: torch.sin(x * (math.pi / 2)), "sqrt": lambda x: torch.sqrt(torch.abs(x)),
                "sqr": lambda x: x * x}


def _slot_set(dims, name: str) -> List[int]:
    if name == "channel":
        return [s for s in _slots(dims) if s in S.CHANNEL_SLOTS]
    return list(S.DIMSETS[name])


def _shift(x: torch.Tensor, axis: int, offset: int) -> torch.Tensor:
    size = x.shape[axis]
    if abs(offset) >= size:
        return torch.zeros_like(x)
    zeros = x.new_zeros(*x.shape[:axis], abs(offset), *x.shape[axis + 1:])
    if offset > 0:
        return torch.cat([x.narrow(axis, offset, size - offset), zeros], dim=axis)
    return torch.cat([zeros, x.narrow(axis, 0, size + offset)], dim=axis)


def _unfold_fn(axis, k, d, dims, out, stride):
    ch, pos = _split(dims)
    c = _prod(ch)
    slots = _slots(dims)
    h = dict(dims).get(S.H, 1)
    w = dict(dims).get(S.W, 1)
    kh, kw = (k if "H" in axis else 1), (k if "W" in axis else 1)
    pad = (d * (kh - 1) // 2, d * (kw - 1) // 2)
    sh = stride if S.H in slots else 1
    sw = stride if S.W in slots else 1
    ho, wo = (h - 1) // sh + 1, (w - 1) // sw + 1
    # F.unfold puts the new neighbourhood axes after the existing channel axes; move them to their slots.
    ch_slots = [s for s in slots if s in S.CHANNEL_SLOTS]
    new = ([S.KH] if "H" in axis else []) + ([S.KW] if "W" in axis else [])
    produced = ch_slots + new
    target = sorted(produced)
    perm = [produced.index(s) for s in target]
    pre = [dict(dims)[s] for s in ch_slots] + [k] * len(new)
    out_sizes = _sizes(out)
    identity = perm == list(range(len(perm)))

    def unfold(layer, n, x):
        y = F.unfold(x.reshape(n, c, h, w), (kh, kw), dilation=d, padding=pad, stride=(sh, sw))
        y = y.reshape(n, *pre, ho, wo)
        if not identity:
            y = y.permute(0, *[p + 1 for p in perm], len(pre) + 1, len(pre) + 2)
        return y.reshape(n, *out_sizes)
    return unfold


def _broadcast_fn(op, logical_ins, ins, out):
    lhs_logical, rhs_logical = logical_ins
    prefix, suffix, _, _, _ = broadcast_match(lhs_logical, rhs_logical)
    lhs, rhs = _sizes(ins[0]), _sizes(ins[1])
    lhs_pi = _prod(lhs[prefix:len(lhs) - suffix])
    rhs_pi = _prod(rhs[prefix:len(rhs) - suffix])
    if rhs_pi % lhs_pi:
        raise KernelRejected(f"broadcast of {lhs} onto {rhs}: {lhs_pi} does not divide {rhs_pi}")
    lhs_view = lhs[:prefix] + [1, lhs_pi] + lhs[len(lhs) - suffix:]
    rhs_view = rhs[:prefix] + [rhs_pi // lhs_pi, lhs_pi] + rhs[len(rhs) - suffix:]
    combine = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "max": torch.maximum,
               "min": torch.minimum}[op]
    out_sizes = _sizes(out)

    def broadcast(layer, n, x, y):
        return combine(x.reshape(n, *lhs_view), y.reshape(n, *rhs_view)).reshape(n, *out_sizes)
    return broadcast
