"""A kernel: a micro-DAG of primitives from ``[C, H, W]`` to ``[O, H/S, W/S]``.

:class:`Kernel` is the symbolic template (its sizes are expressions over ``C, O, H, W, S, G``
and dynamic variables ``x<i>``); :func:`analyze` replays its primitives and returns every node's
shape, the sizes that must be integers, the receptive field and what each primitive costs.

Stride: a kernel is written at the input resolution and its output is subsampled by the target's
stride ``S``. The analysis pushes that subsampling towards the input as far as it is exact:
a node is computed only at the output's positions when every reader is point-wise (FC,
element-wise, broadcast, ...) and itself computed there; a neighbourhood primitive (unfold,
conv, shift) computes its strided output from its full-resolution input. So a kernel serves
both the stride-1 and the stride-2 convolutions of a network, and ``C != O`` is an ordinary
size. Costs (multiply-adds, other ops, weights) are counted at each node's resolution.

Example::

    import symnas as sn
    P = sn.kas.primitives
    k = sn.kas.Kernel([P.Unfold("HW", 3), P.Group("C"), P.Mix("K", "1"), P.FC("O")])  # depthwise-separable
    a = k.analyze()
    print(k.describe())
    print(k.flops({"C": 64, "O": 64, "H": 32, "W": 32, "S": 1, "G": 1}))
"""
from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pyglove as pg

from symnas.errors import TrialRejected
from symnas.kas import shapes as S
from symnas.kas.primitives import GLOBAL, PRIMITIVES, Primitive, PrimitiveError
from symnas.kas.sizes import Size, SizeError

__all__ = ["Kernel", "Solution", "Analysis", "KernelRejected", "analyze", "Step"]

# A primitive as the sampler and the analysis see it: (class, parameter tuple, input nodes).
Step = Tuple[type, tuple, Tuple[int, ...]]


class KernelRejected(TrialRejected):
    """A kernel that cannot be built or solved; a search records it as ``rejected`` with this reason."""


@dataclasses.dataclass
class Analysis:
    """What a kernel computes and costs, symbolically (see :func:`analyze`)."""
    shapes: List[S.Shape]                 # logical shape of every node (0 = input)
    effective: List[S.Shape]              # the same at the resolution each node is computed at
    strided: List[bool]                   # node computed only at the output's (strided) positions
    sliced: List[Tuple[bool, ...]]        # per step and input: the step subsamples that input
    integral: List[Size]                  # sizes that must be positive integers for every target
    users: List[List[int]]
    receptive: Tuple[int, int]
    macs: List[Optional[Size]]            # per step
    ops: List[Optional[Size]]
    weights: List[Optional[Size]]
    variables: List[int]                  # dynamic variables still free

    def cost_terms(self, what: str) -> List[Size]:
        """The monomials whose sum is the kernel's ``what`` ('flops' = macs + ops, 'macs', 'params')."""
        if what == "params":
            return [w for w in self.weights if w is not None]
        terms = [m for m in self.macs if m is not None]
        if what == "flops":
            terms += [o for o in self.ops if o is not None]
        return terms


def _is_position_wise(step: Step) -> bool:
    cls, params, _ = step
    return cls.locality(params) == "point"


def analyze(steps: Sequence[Step], out_channels: str = "O") -> Analysis:
    """Replays ``steps`` from the input ``[C, H, W]``; raises :class:`PrimitiveError` naming the first
    primitive that cannot apply, or a :class:`KernelRejected` when the DAG does not close to
    ``[out_channels, H, W]`` with every branch used."""
    shapes: List[S.Shape] = [S.INPUT]
    integral: List[Size] = []
    users: List[List[int]] = [[]]
    fields: List[Tuple[int, int]] = [(1, 1)]
    for i, (cls, params, inputs) in enumerate(steps, start=1):
        for j in inputs:
            if not 0 <= j < i:
                raise PrimitiveError(f"primitive {i} ({cls.name_of(params)}) reads node {j}, which is not "
                                     f"before it (nodes 0..{i - 1})")
        ins = tuple(shapes[j] for j in inputs)
        out, extra = cls.infer(params, ins)
        shapes.append(out)
        integral.extend(extra)
        users.append([])
        for j in inputs:
            users[j].append(i)
        fields.append(cls.receptive(params, [fields[j] for j in inputs]))
    n = len(steps)
    if n == 0:
        raise KernelRejected("the kernel has no primitive")
    unused = [j for j in range(n) if not users[j]]
    if unused:
        raise KernelRejected(f"nodes {unused} are never read: the DAG must merge every branch into the output")
    out = shapes[-1]
    want = Size.symbol(out_channels)
    if S.channels(out) != want or out[S.D] is not None or out[S.H] != Size.symbol("H") or \
            out[S.W] != Size.symbol("W"):
        raise KernelRejected(f"the output {S.text(out)} does not close to [{out_channels}, H, W]")

    # Stride push-down (module docstring).
    strided = [False] * (n + 1)
    sliced: List[Tuple[bool, ...]] = []
    strided[n] = True
    has_space = [s[S.H] is not None or s[S.W] is not None for s in shapes]
    for v in range(n - 1, 0, -1):          # the input (node 0) arrives at full resolution
        if has_space[v]:
            strided[v] = all(_is_position_wise(steps[c - 1]) and strided[c] for c in users[v])
    effective = [_subsampled(s) if strided[v] and has_space[v] else s for v, s in enumerate(shapes)]
    macs, ops, weights = [], [], []
    for i, step in enumerate(steps, start=1):
        cls, params, inputs = step
        wants = _is_position_wise(step) and strided[i]
        cut = tuple(wants and not strided[j] and has_space[j] for j in inputs)
        sliced.append(cut)
        ins = tuple(_subsampled(shapes[j]) if c else effective[j] for j, c in zip(inputs, cut))
        m, o, w = cls.cost(params, ins, effective[i])
        macs.append(m)
        ops.append(o)
        weights.append(w)
    for s in effective:
        integral.extend(x for x in s if x is not None)
    for s in shapes:
        integral.extend(x for x in s if x is not None)
    variables = sorted({v for x in integral for v in x.dynamic_vars()})
    return Analysis(shapes, effective, strided, sliced, _unique(integral), users, fields[-1], macs, ops, weights,
                    variables)


_STRIDE = Size.symbol("S")


def _subsampled(shape: S.Shape) -> S.Shape:
    return S.replace(shape, {S.H: None if shape[S.H] is None else shape[S.H] / _STRIDE,
                             S.W: None if shape[S.W] is None else shape[S.W] / _STRIDE})


def _unique(sizes: List[Size]) -> List[Size]:
    seen, out = set(), []
    for s in sizes:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def structural_hash(steps: Sequence[Step]) -> str:
    """A hash equal for kernels that compute the same graph, whatever the order of independent primitives."""
    codes: List[str] = ["in"]
    for cls, params, inputs in steps:
        ins = [codes[j] for j in inputs]
        codes.append(hashlib.blake2b(repr((cls.kind, params, ins)).encode(), digest_size=8).hexdigest())
    return codes[-1]


@pg.members([
    ("primitives", pg.typing.List(pg.typing.Object(Primitive), min_size=1), "The micro-DAG, in order."),
    ("out_channels", pg.typing.Enum("O", ["O", "C"]),
     "The output's channel symbol: 'O' (C_out) or 'C' when every target keeps its channel count."),
    ("groups", pg.typing.Int(min_value=1, default=1), "The value of the global group symbol G."),
])
class Kernel(pg.Object):
    """A kernel template: primitives in topological order; node 0 is the input ``[C, H, W]``,
    node ``i`` the output of ``primitives[i-1]``, the last node the output ``[O, H, W]``
    (subsampled by the target's stride). Sizes are expressions over ``C, O, H, W, S, G, x<i>``."""

    def steps(self) -> List[Step]:
        return [(type(p), p.params(), tuple(p.input_nodes(i))) for i, p in enumerate(self.primitives, start=1)]

    def analyze(self) -> Analysis:
        return analyze(self.steps(), self.out_channels)

    def structural_hash(self) -> str:
        return structural_hash(self.steps())

    # ---- sizes and costs for one target -------------------------------------------------------
    def env(self, target, values: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
        """The symbols' values for ``target`` (a ConvTarget or a dict of C, O, H, W, S) and ``values``."""
        if isinstance(target, Mapping):
            env = dict(target)
        else:
            env = {"C": target.c_in, "O": target.c_out, "H": target.h, "W": target.w, "S": target.stride}
        env.setdefault("S", 1)
        env.setdefault("G", self.groups)
        if self.out_channels == "C" and env.get("O", env["C"]) != env["C"]:
            raise ValueError(f"this kernel keeps the channel count (out_channels='C') but the target maps "
                             f"{env['C']} to {env['O']} channels")
        env.setdefault("O", env["C"])
        env.update(values or {})
        return env

    def flops(self, target, values: Optional[Mapping[str, int]] = None, what: str = "flops") -> int:
        """Multiply-adds plus other arithmetic ops ('flops'), multiply-adds only ('macs') or weights
        ('params') of one application at batch 1."""
        env = self.env(target, values)
        total = Fraction(0)
        for term in self.analyze().cost_terms(what):
            total += term.value(env)
        return int(total)

    def params_count(self, target, values: Optional[Mapping[str, int]] = None) -> int:
        return self.flops(target, values, "params")

    def check(self, target, values: Optional[Mapping[str, int]] = None) -> None:
        """Raises KernelRejected naming the first size that is not a positive integer for ``target``."""
        env = self.env(target, values)
        a = self.analyze()
        missing = [f"x{v}" for v in a.variables if f"x{v}" not in env]
        if missing:
            raise KernelRejected(f"no value for {', '.join(missing)}")
        for size in a.integral:
            v = size.value(env)
            if v.denominator != 1 or v <= 0:
                raise KernelRejected(f"size {size} is {v} for {_env_text(env)}")

    # ---- text -------------------------------------------------------------------------------------
    def describe(self, target=None, values: Optional[Mapping[str, int]] = None) -> str:
        """One line per primitive: index, inputs, the primitive and its output shape (numbers for a target)."""
        a = self.analyze()
        env = self.env(target, values) if target is not None else None
        lines = [f"  0  input                 {_shape_text(a.shapes[0], env)}"]
        for i, (p, (cls, params, inputs)) in enumerate(zip(self.primitives, self.steps()), start=1):
            lines.append(f"{i:3d}  {cls.name_of(params):22s} <- {','.join(map(str, inputs)):6s} "
                         f"{_shape_text(a.shapes[i], env)}")
        return "\n".join(lines)

    def names(self) -> List[str]:
        return [type(p).name_of(p.params()) for p in self.primitives]


def _env_text(env: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items())


def _shape_text(shape: S.Shape, env) -> str:
    if env is None:
        return S.text(shape)
    try:
        return "[" + ", ".join(str(s.int_value(env)) if all(f"x{v}" in env for v in s.dynamic_vars()) else str(s)
                               for s in S.present(shape)) + "]"
    except SizeError:
        return S.text(shape)


@pg.members([
    ("values", pg.typing.Dict([(pg.typing.StrKey(), pg.typing.Dict([(pg.typing.StrKey(), pg.typing.Int())]))]),
     "Per target key (ConvTarget.key): the value of every dynamic variable."),
    ("flops", pg.typing.Int(default=0), "The kernel's FLOPs summed over every replaced conv (count included)."),
    ("params", pg.typing.Int(default=0), "The kernel's weights summed over every replaced conv."),
    ("baseline_flops", pg.typing.Int(default=0), "The replaced convs' multiply-adds."),
    ("baseline_params", pg.typing.Int(default=0), "The replaced convs' weights."),
])
class Solution(pg.Object):
    """The budget solver's answer: every dynamic variable's value for each target conv."""

    def for_target(self, target) -> Dict[str, int]:
        key = target if isinstance(target, str) else target.key
        if key not in self.values:
            raise KeyError(f"no sizes solved for target {key} (solved: {sorted(self.values)})")
        return dict(self.values[key])
