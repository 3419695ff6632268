"""Kernel architecture search as a PyGlove space that every symnas algorithm can search.

:class:`KernelSpace` holds what the search may use (the target convs, the budget, the
primitive kinds and their sizes, how many primitives, how wide the DAG may grow).
``space.search_space()`` is a :class:`KernelDesign` whose fields are decision points:

- ``num_primitives``, ``max_width`` and ``groups`` (the global G);
- per step, ``kind`` (which primitive type) and ``pick`` (a float in [0, 1]: which of that
  kind's legal applications, on which nodes, with which parameters).

A design decodes (``design.decode()``) by growing the DAG step by step as Canvas's sampler
does (seed 003 §6.1): at each step only applications that keep the DAG closable are legal
(width limits, the last step must produce ``[O, H, W]``, no duplicate node, every size an
integer for every target); the chosen kind's legal applications are listed in a fixed order
and ``pick`` selects one (a kind with none falls back to the next kind). Broadcasts and matmuls
that need a dynamic variable solved take one of the shape-matching solver's substitutions
(the fraction of ``pick`` within its slot chooses which). The output is closed, the remaining
variables are solved for the budget (§6.3), and the result is a :class:`Decoded`. A design
that cannot be completed raises :class:`KernelRejected` with the reason (``sn.search``
records it as rejected and goes on).

Example::

    import pyglove as pg, symnas as sn
    space = sn.kas.KernelSpace(targets=sn.kas.conv_targets(sn.nn.resnet18()),
                               budget=sn.kas.Budget(flops=0.25), max_primitives=8)
    for design, feedback in pg.sample(space.search_space(), sn.algorithms.Canvas(seed=0), num_examples=3):
        decoded = design.decode()
        print(decoded.kernel.describe(), decoded.flops_ratio)
        feedback(0.0)
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import math
from itertools import chain
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.kas import shapes as S
from symnas.kas.kernel import Kernel, KernelRejected, Solution, Step, analyze, structural_hash
from symnas.kas.primitives import GLOBAL, KINDS, PRIMITIVES, WEIGHTED_KINDS, Primitive, PrimitiveError
from symnas.kas.sizes import NUM_DYNAMIC, Size, SizeError
from symnas.kas.solver import check_static, closing, solve_sizes, target_env
from symnas.kas.targets import Budget, ConvTarget, group_choices

__all__ = ["KernelSpace", "KernelDesign", "Decoded", "KAS_HINT"]

KAS_HINT = "symnas.kas"


@dataclasses.dataclass
class Decoded:
    """A decoded, solved kernel: the template, every target's sizes and the costs."""
    steps: List[Step]
    groups: int
    out_channels: str
    solution: dict           # Solution's fields
    hash: str

    @property
    def kernel(self) -> Kernel:
        if not hasattr(self, "_kernel"):
            self._kernel = _kernel_of(self.steps, self.out_channels, self.groups)
        return self._kernel

    @property
    def sizes(self) -> Solution:
        return Solution(**self.solution)

    @property
    def flops_ratio(self) -> float:
        return self.solution["flops"] / max(self.solution["baseline_flops"], 1)

    @property
    def params_ratio(self) -> float:
        return self.solution["params"] / max(self.solution["baseline_params"], 1)

    def names(self) -> List[str]:
        return [cls.name_of(params) for cls, params, _ in self.steps]


def _kernel_of(steps: Sequence[Step], out_channels: str, groups: int) -> Kernel:
    prims = []
    for i, (cls, params, inputs) in enumerate(steps, start=1):
        chain = cls.arity == 1 and tuple(inputs) == (i - 1,)
        prims.append(cls(*params, inputs=None if chain else list(inputs)))
    return Kernel(prims, out_channels=out_channels, groups=groups)


@pg.members([
    ("targets", pg.typing.List(pg.typing.Object(ConvTarget), min_size=1), "The convolutions to replace."),
    ("budget", pg.typing.Object(Budget), "FLOPs and/or weights allowed, as fractions of the targets'."),
    ("min_primitives", pg.typing.Int(min_value=1, default=5), "Fewest primitives in a kernel."),
    ("max_primitives", pg.typing.Int(min_value=1, default=25), "Most primitives in a kernel."),
    ("min_width", pg.typing.Int(min_value=1, default=2), "Smallest width limit drawn (open branches)."),
    ("max_width", pg.typing.Int(min_value=1, default=8), "Largest width limit drawn."),
    ("min_weighted", pg.typing.Int(min_value=0, default=1), "Fewest weighted primitives (FC, Conv, Mix, Scale)."),
    ("max_weighted", pg.typing.Int(min_value=0, default=8), "Most weighted primitives."),
    ("max_weighted_ratio", pg.typing.Float(min_value=0.0, max_value=1.0, default=0.6),
     "Most weighted primitives as a fraction of all."),
    ("kinds", pg.typing.List(pg.typing.Enum(KINDS[0], list(KINDS))).noneable(),
     "Primitive kinds allowed (None: all)."),
    ("kernel_sizes", pg.typing.List(pg.typing.Int(min_value=3), default=[3, 5, 7]), "Unfold/conv neighbourhoods."),
    ("dilations", pg.typing.List(pg.typing.Int(min_value=1), default=[1, 2, 3]), "Unfold/conv dilations."),
    ("shift_sizes", pg.typing.List(pg.typing.Int(min_value=1), default=[1, 2, 3]), "Shift distances."),
    ("group_values", pg.typing.List(pg.typing.Int(min_value=1)).noneable(),
     "Values of the global group count G (None: powers of two dividing every target's channels, up to 16)."),
    ("min_receptive", pg.typing.Int(min_value=1, default=1),
     "Smallest receptive field (pixels, height x width) of the output."),
    ("max_tensor_ratio", pg.typing.Float(min_value=1.0, default=64.0),
     "Largest intermediate tensor, in multiples of the input's elements."),
])
class KernelSpace(pg.Object):
    """What a kernel architecture search may build; ``search_space()`` makes its decision points."""

    def _on_bound(self):
        super()._on_bound()
        if self.min_primitives > self.max_primitives:
            raise ValueError(f"KernelSpace: min_primitives {self.min_primitives} > max_primitives "
                             f"{self.max_primitives}")
        if self.min_width > self.max_width:
            raise ValueError(f"KernelSpace: min_width {self.min_width} > max_width {self.max_width}")
        if self.min_weighted > self.max_weighted:
            raise ValueError(f"KernelSpace: min_weighted {self.min_weighted} > max_weighted {self.max_weighted}")
        kinds = self.kind_list()
        if not kinds:
            raise ValueError("KernelSpace: no primitive kind allowed")
        if self.min_weighted > 0 and not any(k in WEIGHTED_KINDS for k in kinds):
            raise ValueError(f"KernelSpace: min_weighted={self.min_weighted} but no weighted kind "
                             f"({', '.join(WEIGHTED_KINDS)}) is allowed")
        for g in self.group_list():
            for t in self.targets:
                if t.c_in % g or t.c_out % g:
                    raise ValueError(f"KernelSpace: G={g} does not divide the channels of the conv {t.key}")
        self._options = None

    # ---- the space -------------------------------------------------------------------------------
    def kind_list(self) -> List[str]:
        return list(self.kinds) if self.kinds is not None else list(KINDS)

    def group_list(self) -> List[int]:
        return list(self.group_values) if self.group_values is not None else group_choices(self.targets)

    @property
    def out_channels(self) -> str:
        """'C' when every target keeps its channel count (then the output may be the input's C)."""
        return "C" if all(t.c_in == t.c_out for t in self.targets) else "O"

    def search_space(self) -> "KernelDesign":
        """The hyper value: a KernelDesign whose decisions are the sampler's (module docstring)."""
        kinds = self.kind_list()
        return KernelDesign(
            space=self,
            num_primitives=pg.oneof(list(range(self.min_primitives, self.max_primitives + 1)),
                                    hints=(KAS_HINT, "num_primitives", self)),
            max_width=pg.oneof(list(range(self.min_width, self.max_width + 1)), hints=(KAS_HINT, "max_width")),
            groups=pg.oneof(self.group_list(), hints=(KAS_HINT, "groups")),
            kinds=[pg.oneof(kinds, hints=(KAS_HINT, "kind", t)) for t in range(self.max_primitives)],
            picks=[pg.floatv(0.0, 1.0, hints=(KAS_HINT, "pick", t)) for t in range(self.max_primitives)])

    def options(self) -> "_Options":
        if self._options is None:
            self._options = _Options(self)
        return self._options

    # ---- decoding and encoding -------------------------------------------------------------------
    def builder(self, num_primitives: int, max_width: int, groups: int) -> "Builder":
        return Builder(self.options(), num_primitives, max_width, groups)

    def decode(self, num_primitives: int, max_width: int, groups: int, choices: Sequence[Tuple[str, float]]
               ) -> Decoded:
        """Grows, closes and solves the kernel the choices ``[(kind, pick), ...]`` describe."""
        b = self.builder(num_primitives, max_width, groups)
        kinds = self.options().kinds

        def order(t: int) -> List[str]:
            kind = choices[t][0]
            if kind not in kinds:
                raise KernelRejected(f"step {t + 1}: kind {kind!r} is not allowed (allowed: {', '.join(kinds)})")
            i = kinds.index(kind)
            return kinds[i:] + kinds[:i]

        return b.run(order, lambda t, kind: choices[t][1])

    def encode(self, kernel: Kernel, max_width: Optional[int] = None) -> "KernelDesign":
        """A concrete design that decodes to ``kernel`` (same structure), or ValueError saying why not."""
        steps = kernel.steps()
        n = len(steps)
        if not self.min_primitives <= n <= self.max_primitives:
            raise ValueError(f"the kernel has {n} primitives; the space allows {self.min_primitives}.."
                             f"{self.max_primitives}")
        groups = kernel.groups
        if groups not in self.group_list():
            uses_g = any(size.uses("G") for shape in kernel.analyze().shapes for size in shape if size is not None)
            if uses_g:
                raise ValueError(f"the kernel's G={groups} is not one of {self.group_list()}")
            groups = self.group_list()[0]      # G unused: any value decodes to the same kernel
        kinds = self.options().kinds
        widths = [max_width] if max_width else list(range(self.min_width, self.max_width + 1))
        reason = "no width limit fits"
        for width in widths:
            b = self.builder(n, width, groups)
            try:
                picks = b.follow(steps)
            except KernelRejected as e:
                reason = str(e)
                continue
            pad = self.max_primitives - n
            return KernelDesign(space=self, num_primitives=n, max_width=width, groups=groups,
                                kinds=[k for k, _ in picks] + [kinds[0]] * pad,
                                picks=[p for _, p in picks] + [0.0] * pad)
        raise ValueError(f"the kernel is not in this space: {reason}")


@pg.members([
    ("space", pg.typing.Object(KernelSpace), "The space this design belongs to."),
    ("num_primitives", pg.typing.Int(min_value=1), "Primitives to sample."),
    ("max_width", pg.typing.Int(min_value=1), "Most open branches at any step."),
    ("groups", pg.typing.Int(min_value=1), "The value of the global group symbol G."),
    ("kinds", pg.typing.List(pg.typing.Str()), "Per step, the primitive kind to apply (the first num_primitives count)."),
    ("picks", pg.typing.List(pg.typing.Float(min_value=0.0, max_value=1.0)),
     "Per step, which legal application of that kind (a fraction of the list of them)."),
])
class KernelDesign(pg.Object):
    """A point of a :class:`KernelSpace`; ``decode()`` builds and solves the kernel it describes."""

    def _on_bound(self):
        super()._on_bound()
        self._decoded = None

    def decode(self) -> Decoded:
        """The kernel, its sizes for every target and its costs; KernelRejected when it cannot be built."""
        if self._decoded is None:
            if self.num_primitives > min(len(self.kinds), len(self.picks)):
                raise KernelRejected(f"num_primitives={self.num_primitives} but only {len(self.kinds)} steps")
            self._decoded = self.space.decode(self.num_primitives, self.max_width, self.groups,
                                              list(zip(self.kinds, self.picks)))
        return self._decoded

    def kernel(self) -> Kernel:
        return self.decode().kernel

    def evaluate(self):
        raise TypeError("a KernelDesign is not evaluated by itself: decode() it and train or time the kernel")


class _Options:
    """A KernelSpace flattened for the builder's inner loop (plain attributes, caches)."""

    def __init__(self, space: KernelSpace):
        self.kinds = space.kind_list()
        self.kernel_sizes = tuple(space.kernel_sizes)
        self.dilations = tuple(space.dilations)
        self.shift_sizes = tuple(space.shift_sizes)
        self.out_channels = space.out_channels
        self.channel_outs = ("C", "new") if self.out_channels == "C" else ("C", "O", "new")
        self.targets = [t.data() for t in space.targets]
        self.keys = [t.key for t in self.targets]
        self.budget = space.budget
        self.min_weighted, self.max_weighted = space.min_weighted, space.max_weighted
        self.max_weighted_ratio = space.max_weighted_ratio
        self.min_receptive = space.min_receptive
        self.max_tensor_ratio = space.max_tensor_ratio
        self.caps = [space.max_tensor_ratio * t.c_in * t.h * t.w for t in self.targets]
        self.variant_cache: Dict[tuple, List[tuple]] = {}
        self.shape_ids: Dict[tuple, int] = {}
        self.closing_cache: Dict[tuple, object] = {}
        self.shape_list: List[tuple] = []
        self.check_caches: Dict[int, dict] = {}
        self.infer_caches: Dict[int, dict] = {}
        self.pair_caches: Dict[int, Dict[int, int]] = {}
        self.closing_ids: Dict[int, object] = {}
        self.structures: Dict[tuple, tuple] = {}       # (kind, params, shape ids) -> what it gives for any G
        self.node_infos: Dict[int, tuple] = {}
        self.cap_caches: Dict[int, Dict[Size, bool]] = {}
        self.envs: Dict[int, list] = {}
        self.low_envs: Dict[int, list] = {}
        self.bound_caches: Dict[int, dict] = {}
        self.static_caches: Dict[int, dict] = {}      # per G: sizes' per-target values for the budget solver
        self.limits = space.budget.limits(self.targets)
        self.counts = [t.count for t in self.targets]
        self.group_values = space.group_list()
        self.sizes = (space.min_primitives, space.max_primitives, space.min_width, space.max_width)

    def envs_for(self, groups: int) -> list:
        if groups not in self.envs:
            self.envs[groups] = [target_env(t, groups) for t in self.targets]
            # Free sizes are at least C_i / C_1 at their base values (seed 003 §6.3's scaling).
            smallest = min(t.c_in for t in self.targets)
            self.low_envs[groups] = [dict(env, H=env["H"] / env["S"], W=env["W"] / env["S"],
                                          **{f"x{i}": env["C"] / smallest for i in range(NUM_DYNAMIC)})
                                     for env in self.envs[groups]]
            self.check_caches[groups] = {}
            self.pair_caches[groups] = {}
            self.cap_caches[groups] = {}
            self.infer_caches[groups] = {}
            self.bound_caches[groups] = {}
            self.static_caches[groups] = {}
        return self.envs[groups]

    def legal(self, sizes, groups: int) -> bool:
        return check_static(sizes, self.envs[groups], self.keys, self.check_caches[groups]) is None

    def infer(self, kind: str, params: tuple, ids: tuple, groups: int):
        """Cached application of a primitive to input shapes (ids), for one value of G: None (illegal),
        ("ok", out, extra, cost) or ("solve", [(var, value, out, extra, cost), ...])."""
        cache = self.infer_caches[groups]
        # A broadcast's shapes and costs do not depend on its op, nor a gram matrix's on its softmax.
        key = (kind, _SAME_INFER.get(params, params), ids)
        hit = cache.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        result = self._infer_uncached(kind, params, ids, groups, False)
        cache[key] = result
        return result

    def applies(self, kind: str, params: tuple, ids: tuple, groups: int) -> bool:
        """Whether ``infer(kind, params, ids, groups) is not None``, stopping at the first substitution
        that works when the shapes need solving (the full list is left to ``infer`` when it is applied)."""
        hit = self.infer_caches[groups].get((kind, _SAME_INFER.get(params, params), ids), _MISSING)
        if hit is not _MISSING:
            return hit is not None
        return self._infer_uncached(kind, params, ids, groups, True) is not None

    def _infer_uncached(self, kind: str, params: tuple, ids: tuple, groups: int, first: bool):
        kind_structure = self.structure(kind, params, ids, groups)
        if kind_structure[0] == "ok":
            _, out, extra, n, macs, ops = kind_structure
            return ("ok", out, extra, self.bound_of((macs, ops), groups)) if self._fits(out, extra, n, groups) \
                else None
        options = []
        for var, value, out, extra, n, macs, ops in kind_structure[1]:
            if not self.legal([value], groups):
                continue
            if self._fits(out, extra, n, groups):
                options.append((var, value, out, extra, self.bound_of((macs, ops), groups)))
                if first:
                    break
        return ("solve", options) if options else None

    def structure(self, kind: str, params: tuple, ids: tuple, groups: int) -> tuple:
        """What applying a primitive to input shapes (ids) gives whatever the value of G, cached:
        ("ok", out, extra, n, macs, ops) when it applies as is, else ("solve", ((var, value, out, extra, n,
        macs, ops), ...)) for the shape-matching solver's substitutions under which it applies (maybe
        none). ``n`` is the output's element count when static (checked against the tensor cap), None
        when not, False when the output can never be used (more than one free variable, or weights that
        depend on the image size); ``macs`` and ``ops`` are the FLOPs terms. :meth:`infer` adds the checks
        that depend on G (integral sizes, tensor caps, the FLOPs bound). ``groups`` (any value whose envs
        are set) only drops substitutions that no G makes integral. Entries are tuples, empty ones
        shared, so the collector tracks few objects per entry."""
        key = (kind, _SAME_INFER.get(params, params), ids)
        hit = self.structures.get(key)
        if hit is not None:
            return hit
        cls = PRIMITIVES[kind]
        flops = "flops" in self.limits
        ins = tuple(self.shape_list[i] for i in ids)
        try:
            out, extra = cls.infer(params, ins)
            macs, ops = cls.cost(params, ins, out)[:2] if flops else (None, None)
            hit = ("ok", out, tuple(extra), _count(cls, params, ins, out), macs, ops)
        except PrimitiveError:
            options = []
            for var, value in cls.solutions(params, ins):
                if not value.uses("G") and not self.legal([value], groups):
                    continue                 # not an integer for some target, whatever G is
                trial = tuple(S.substitute(x, var, value) for x in ins)
                try:
                    out, extra = cls.infer(params, trial)
                except PrimitiveError:
                    continue
                macs, ops = cls.cost(params, trial, out)[:2] if flops else (None, None)
                options.append((var, value, out, tuple(extra), _count(cls, params, trial, out), macs, ops))
            hit = ("solve", tuple(options))
        self.structures[key] = hit
        return hit

    def _fits(self, out, extra, n, groups: int) -> bool:
        """The size checks that depend on G, on what :meth:`structure` prepared: every size an integer
        for every target, the output within the tensor cap."""
        if n is False:
            return False
        if not self.legal(chain(filter(None, out), extra), groups):
            return False
        if n is not None:
            fits = self.cap_caches[groups].get(n)
            if fits is None:
                fits = self.cap_caches[groups][n] = all(n.float_value(env) <= cap
                                                        for env, cap in zip(self.envs[groups], self.caps))
            return fits
        return True

    def _flops_bound(self, cls, params, ins, out, groups: int) -> float:
        """A lower bound of a step's FLOPs over all targets: every node at the output's resolution and
        every free size at its smallest base value (sizes only grow from there)."""
        if "flops" not in self.limits:
            return 0.0
        return self.bound_of(cls.cost(params, ins, out)[:2], groups)

    def bound_of(self, terms, groups: int) -> float:
        cache = self.bound_caches[groups]
        total = 0.0
        for term in terms:
            if term is None:
                continue
            value = cache.get(term)
            if value is None:
                value = cache[term] = sum(count * term.float_value(env)
                                          for env, count in zip(self.low_envs[groups], self.counts))
            total += value
        return total

    def closing(self, shape):
        """Cached :func:`~symnas.kas.solver.closing` for this space's output channels."""
        hit = self.closing_cache.get(shape, _MISSING)
        if hit is _MISSING:
            hit = self.closing_cache[shape] = closing(shape, self.out_channels)
        return hit

    def node_info(self, sid: int) -> tuple:
        """(the free variable of shape ``sid`` or None, the ids of the shape with it named x0 and x1)."""
        info = self.node_infos.get(sid)
        if info is None:
            shape = self.shape_list[sid]
            dyn = S.dynamic_vars(shape)
            if not dyn:
                info = (None, (sid, sid))
            else:
                v = dyn[0]
                info = (v, (self.shape_id(_renamed(shape, {v: 0})), self.shape_id(_renamed(shape, {v: 1}))))
            self.node_infos[sid] = info
        return info

    def pair_mask(self, key: int, groups: int) -> int:
        """Which two-input applications the shapes ``key = a * _PAIR + b`` (shape ids) allow, as bits
        (``_BROADCAST_BIT``, ``_BMM_BITS``); cached per G. The same test as :meth:`infer` is not None."""
        ids = divmod(key, _PAIR)
        mask = _BROADCAST_BIT if self.applies("broadcast", ("add",), ids, groups) else 0
        lhs, rhs = self.shape_list[ids[0]], self.shape_list[ids[1]]
        # BMM.infer's structural requirements first (when they fail, so does every substitution).
        if rhs[S.H] is not None and rhs[S.W] is not None and rhs[S.D] is None:
            if lhs[S.D] is None and lhs[S.H] is rhs[S.H] and lhs[S.W] is rhs[S.W]:
                if self.applies("bmm", _BMM_PARAMS[0], ids, groups):
                    mask |= _BMM_BITS[0] | _BMM_BITS[1]      # the softmax does not change shapes or costs
            elif lhs[S.D] is not None and lhs[S.H] is None and lhs[S.W] is None:
                if self.applies("bmm", _BMM_PARAMS[2], ids, groups):
                    mask |= _BMM_BITS[2]
        self.pair_caches[groups][key] = mask
        return mask

    def closing_of(self, sid: int):
        """:meth:`closing` of the shape with id ``sid``."""
        hit = self.closing_ids.get(sid, _MISSING)
        if hit is _MISSING:
            hit = self.closing_ids[sid] = self.closing(self.shape_list[sid])
        return hit

    def shape_id(self, shape) -> int:
        """A small int per distinct shape (cheap cache keys)."""
        i = self.shape_ids.get(shape)
        if i is None:
            i = self.shape_ids[shape] = len(self.shape_list)
            self.shape_list.append(shape)
        return i

    def variants(self, kind: str, sid: int, producer) -> List[tuple]:
        """The kind's parameter lists on the shape ``sid``; the producer (kind, params) only matters to
        the kinds that prune after certain producers, and then only its kind and first parameter."""
        if producer is not None:
            if kind in _PRODUCER_KINDS:
                pk = producer[0]
                producer = (pk, producer[1][:1] if pk in ("activation", "elementwise") else ())
            else:
                producer = None
        key = (kind, sid, producer)
        out = self.variant_cache.get(key)
        if out is None:
            out = PRIMITIVES[kind].variants(self.shape_list[sid], self, producer)
            self.variant_cache[key] = out
        return out


_OUT_PARAM = {"fc": 0, "conv": 4, "mix": 1}
# The kinds whose variants depend on the node's producer (Canvas's pruning of pointless pairs).
_PRODUCER_KINDS = frozenset(("softmax", "activation", "elementwise"))       # the parameter holding a size expression
_MISSING = object()


class Builder:
    """Grows one kernel step by step (seed 003 §6.1); shared by decoding, encoding and Canvas's sampler.

    ``run(order, pick)``: at step t, ``order(t)`` lists the kinds to try in turn and
    ``pick(t, kind)`` gives the float that selects among that kind's legal applications.
    ``self.record`` keeps the (kind, pick) that succeeded at each step, so a design with those
    choices decodes to the same kernel.
    """

    def __init__(self, options: _Options, num_primitives: int, max_width: int, groups: int):
        self.o = options
        self.n = num_primitives
        self.max_width = max_width
        self.groups = groups
        self.envs = options.envs_for(groups)
        self.cache = options.check_caches[groups]
        self.pairs = options.pair_caches[groups]
        self.shapes: List[S.Shape] = [S.INPUT]
        self.ids: List[int] = [options.shape_id(S.INPUT)]
        self.vars: List[Optional[int]] = [None]          # the free variable in each node's shape
        self.canon: List[Tuple[int, int]] = [(self.ids[0], self.ids[0])]   # ids with it named x0 / x1
        self.users: List[int] = [0]
        self.open = 1                               # nodes nobody reads yet (open branches)
        self.codes: List[int] = [0]
        self.code_set = {0}
        self.flops_bound = 0.0
        self.terms: List[Size] = []             # the placed steps' FLOPs terms (for the bound)
        self.flops_limit = options.limits.get("flops", float("inf"))
        self.producers: List[Optional[tuple]] = [None]
        self.steps: List[Step] = []
        self.dynamic_sizes: List[Size] = []      # constraint sizes holding a free variable
        self.next_var = 0
        self.weighted = 0
        self.t = 0
        self.record: List[Tuple[str, float]] = []

    def clone(self) -> "Builder":
        other = object.__new__(Builder)
        d = other.__dict__
        d.update(self.__dict__)
        d["shapes"], d["ids"], d["vars"], d["canon"] = self.shapes[:], self.ids[:], self.vars[:], self.canon[:]
        d["users"], d["codes"], d["producers"], d["steps"] = self.users[:], self.codes[:], self.producers[:], \
            self.steps[:]
        d["dynamic_sizes"], d["record"], d["terms"] = self.dynamic_sizes[:], self.record[:], self.terms[:]
        d["code_set"] = set(self.code_set)
        return other

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, order: Callable[[int], List[str]], pick: Callable[[int, str], float]) -> Decoded:
        for t in range(self.n):
            self.step(t, order(t), pick)
        return self.finish()

    def _limits(self, t: int) -> Tuple[int, bool]:
        """(the largest change of the number of open branches allowed at step t, whether t is the last).

        Branches must have merged into one before the last step, which then closes the output: a
        merge as the last step would need both branches' shapes to close, and mostly fails.
        """
        width = self.open
        if t == self.n - 1:
            if width != 1:
                raise KernelRejected(f"step {t + 1}: {width} open branches at the last step")
            return 0, True
        remaining = self.n - t - 1          # steps left for merging
        to_single = width - 1
        if to_single > remaining:
            raise KernelRejected(f"step {t + 1}: {width} open branches cannot merge in {remaining} steps")
        if to_single == remaining:
            return -1, False
        if width >= self.max_width or width > remaining - 1:
            return 0, False
        return 1, False

    def step(self, t: int, kinds: List[str], pick: Callable[[int, str], float]) -> None:
        """Places primitive ``t``: the first of ``kinds`` with a legal application, chosen by
        ``pick(t, kind)``; raises KernelRejected when none has one."""
        delta_max, last = self._limits(t)
        self.t = t
        tried = []
        no_unary = delta_max < 0                # a merge step: one-input kinds have no application
        for kind in kinds:
            if (no_unary or last and kind == "unfold") and kind not in _TWO_INPUT_KINDS:
                continue                        # (what _candidates would say, without listing)
            cands = self._candidates(kind, delta_max, last)
            if not cands:
                continue
            u = min(max(float(pick(t, kind)), 0.0), 1.0)
            n = len(cands)
            start = min(int(u * n), n - 1)
            frac = min(max(u * n - start, 0.0), 1.0)
            cls = PRIMITIVES[kind]
            if cls.weighted and self.weighted >= self.o.max_weighted:
                tried.append(kind)              # no application of a weighted kind is legal any more
                continue
            memo = {} if cls.arity == 2 else None
            for k in range(n):
                idx = (start + k) % n
                if self._apply(kind, cands[idx], frac, last, memo):
                    self.record.append((kind, u if not k else (idx + frac) / n))
                    return
            tried.append(kind)
        raise KernelRejected(f"step {t + 1} of {self.n}: no legal application of "
                             f"{', '.join(tried) if tried else 'any allowed kind'} (open branches "
                             f"{sum(1 for u in self.users if u == 0)}, width limit {self.max_width}"
                             f"{', the output must close to [' + self.o.out_channels + ', H, W]' if last else ''})")

    # ---- encoding ------------------------------------------------------------------------------------
    def follow(self, steps: Sequence[Step]) -> List[Tuple[str, float]]:
        """The (kind, pick) of each step that rebuilds ``steps`` (a depth-first search over the
        shape-matching choices); KernelRejected naming the first step that is not reachable."""
        target = canonical_hash(steps)
        failure = [0]
        found = self._follow(0, list(steps), target, failure)
        if found is None:
            t = failure[0]
            cls, params, inputs = steps[min(t, len(steps) - 1)]
            raise KernelRejected(f"step {t + 1} ({cls.name_of(params)} <- {list(inputs)}) cannot be rebuilt "
                                 f"here (no legal application with these sizes at that point: shapes, the budget or the "
                                 f"branch limits)")
        return found

    def _follow(self, t, steps, target, failure) -> Optional[List[Tuple[str, float]]]:
        if t == len(steps):
            try:
                decoded = self.finish()
            except KernelRejected:
                return None
            return self.record if canonical_hash(decoded.steps) == target else None
        failure[0] = max(failure[0], t)
        cls, params, inputs = steps[t]
        try:
            delta_max, last = self._limits(t)
        except KernelRejected:
            return None
        cands = self._candidates(cls.kind, delta_max, last)
        n = len(cands)
        matches = [i for i in range(n) if cands[i][1] == tuple(inputs) and _compatible(cls.kind, cands[i][0], params)]
        matches.sort(key=lambda i: cands[i][0] != tuple(params))   # the exact parameters first
        for idx in matches:
            p = cands[idx][0]
            r = self._infer(cls.kind, p, tuple(inputs), cls.kind in _OUT_PARAM and p[_OUT_PARAM[cls.kind]] == "new")
            m = len(r[1]) if r is not None and r[0] == "solve" else 1
            for k in range(m):
                frac = (k + 0.5) / m
                other = self.clone()
                other.t = t
                if other._apply(cls.kind, cands[idx], frac, last):
                    other.record.append((cls.kind, (idx + frac) / n))
                    result = other._follow(t + 1, steps, target, failure)
                    if result is not None:
                        return result
        return None

    # ---- candidates --------------------------------------------------------------------------------
    def _candidates(self, kind: str, delta_max: int, last: bool = False) -> "_Candidates":
        """This kind's applications in a fixed order, (params, input nodes), listed lazily: those the
        branch limits allow and, at the last step, whose output can close; the rest (sizes, shape
        matching) is checked when one is applied."""
        cls = PRIMITIVES[kind]
        users, ids, o = self.users, self.ids, self.o
        nodes = len(self.shapes)
        segments = []
        if cls.arity == 1:
            if delta_max < 0 or (last and kind == "unfold"):
                return _Candidates(segments)
            keeps_channels = last and kind in _KEEPS_CHANNELS
            for v in range(nodes):
                if users[v] and delta_max < 1:
                    continue
                if keeps_channels and o.closing(self.shapes[v]) is False:
                    continue
                params = o.variants(kind, ids[v], self.producers[v])
                if params:
                    segments.append((params, (v,)))
            return _Candidates(segments)
        vs, canon, ids, pairs = self.vars, self.canon, self.ids, self.pairs
        broadcast = kind == "broadcast"
        table = _BMM_APPLY_BY_MASK if last else _BMM_BY_MASK
        closable = [o.closing_of(i) is not False for i in ids] if last and broadcast else None
        # The branch limit: a step may open one branch more (delta_max 1), keep their number (0: a or b
        # is an open branch, b != a when only b is) or must merge two open branches (-1).
        leaves = [v for v in range(nodes) if users[v] == 0]
        everything = range(nodes)
        if closable is not None:
            all_b, leaf_b = [b for b in everything if closable[b]], [b for b in leaves if closable[b]]
        else:
            all_b, leaf_b = everything, leaves
        skip_self = broadcast or delta_max < 0   # x op x: sqr, 0 or x itself (Canvas prunes these);
        c0 = [c[0] for c in canon]               # a merge needs two branches
        c1 = [c[1] for c in canon]
        get, groups, append = pairs.get, self.groups, segments.append
        for a in (leaves if delta_max < 0 else everything):
            bs = all_b if delta_max > 0 or (delta_max == 0 and users[a] == 0) else leaf_b
            base = c0[a] * _PAIR
            va = vs[a]
            # The shapes must fit (checked on names x0/x1: legality does not depend on them).
            if va is None:
                keys = [base + c0[b] for b in bs]
            else:
                keys = [base + (c1[b] if vs[b] is not None and vs[b] != va else c0[b]) for b in bs]
            for b, key in zip(bs, keys):
                if b == a and skip_self:
                    continue
                mask = get(key)
                if mask is None:
                    mask = o.pair_mask(key, groups)
                if broadcast:
                    if mask & _BROADCAST_BIT:
                        append((_BROADCAST_PARAMS, (a, b)))
                    continue
                params = table[mask]
                if params:
                    append((params, (a, b)))
        return _Candidates(segments)

    # ---- applying one candidate ------------------------------------------------------------------------
    def _apply(self, kind: str, cand: tuple, frac: float, last: bool, memo: Optional[dict] = None) -> bool:
        """Applies ``cand`` if it is legal (solving a dynamic variable when the shapes need it; ``frac``
        chooses among the solver's substitutions); returns whether it did.

        ``memo`` (one step's tries of one two-input kind): a broadcast's legality does not depend on its
        op, nor a gram matrix's on its softmax, except for the duplicate-node check; the rest is
        remembered per inputs (and bmm mode) so the other ops of a failed pair fail at once."""
        params, inputs = cand
        if memo is not None:
            key = (inputs, params[0]) if kind == "bmm" else inputs
            checked = memo.get(key)
            if checked is None:
                checked = memo[key] = self._check(kind, params, inputs, frac, last)
        else:
            checked = self._check(kind, params, inputs, frac, last)
        if checked is False:
            return False
        new_var, pending, out, extra, bound = checked
        if new_var:
            params = _fresh(kind, params, self.next_var)
        code = hash((kind, params, tuple(self.codes[j] for j in inputs)))
        if code in self.code_set:
            return False
        cls = PRIMITIVES[kind]
        # Commit.
        for var, value in pending:
            self._substitute(var, value)
            params = _subst_params(kind, params, var, value)
        self.shapes.append(out)
        self._index_node(out)
        self.users.append(0)
        for j in set(inputs):
            if not self.users[j]:
                self.open -= 1
            self.users[j] += 1
        self.open += 1
        self.codes.append(code)
        self.code_set.add(code)
        self.producers.append((kind, params))
        self.steps.append((cls, params, tuple(inputs)))
        dynamic = self.dynamic_sizes           # (order does not matter: every one must stay legal)
        for x in (*out, *extra):
            if x is not None and x._dyn and x not in dynamic:
                dynamic.append(x)
        self.flops_bound += bound
        if not last:
            self.terms.extend(t for t in cls.cost(params, [self.shapes[j] for j in inputs], out)[:2] if t is not None)
        if new_var:
            self.next_var += 1
        if cls.weighted:
            self.weighted += 1
        return True

    def _check(self, kind: str, params: tuple, inputs: tuple, frac: float, last: bool):
        """Every test of :meth:`_apply` but the duplicate-node one: False, or (new_var, pending
        substitutions, out, extra sizes, FLOPs bound) for the commit."""
        cls = PRIMITIVES[kind]
        listed = params
        new_var = kind in _OUT_PARAM and params[_OUT_PARAM[kind]] == "new"
        if new_var:
            if self.next_var >= NUM_DYNAMIC:
                return False
            params = _fresh(kind, params, self.next_var)
        if cls.weighted and self.weighted >= self.o.max_weighted:
            return False
        ahead = self.n - self.t - 1              # steps after this one
        if kind == "bmm" and params[0] == "gram" and ahead < 2:
            return False                          # a gram matrix needs an apply and a closing step after it
        r = self._infer(kind, listed, inputs, new_var)
        if r is None:
            return False
        pending: List[Tuple[int, Size]] = []
        if r[0] == "ok":
            _, out, extra, bound = r
        else:
            options = r[1]
            var, value, out, extra, bound = options[min(int(frac * len(options)), len(options) - 1)]
            pending.append((var, value))
        if self.flops_bound + bound > self.flops_limit:
            return False
        if ahead == 1 and self.o.closing(out) is False and (
                out[S.D] is not None or out[S.H] is None or out[S.W] is None or
                self.weighted + cls.weighted >= self.o.max_weighted):
            return False                          # the last step could not close this node
        if last:
            close = self.o.closing(out)
            if close is False:
                return False
            if close is not None:
                pending.append(close)
                ins = tuple(S.substitute(self.shapes[j], *close) for j in inputs)
                out = S.substitute(out, *close)
                extra = [x.substitute(*close) for x in extra]
                if not self._legal_sizes([x for x in out if x is not None] + extra):
                    return False
                bound = self.o._flops_bound(cls, _subst_params(kind, params, *close), ins, out, self.groups)
                if self.flops_bound + bound > self.flops_limit:
                    return False
        if pending and self.dynamic_sizes and \
                not self._legal_sizes([_subst_all(x, pending) for x in self.dynamic_sizes if x.dynamic_vars()[0] in
                                       {v for v, _ in pending}]):
            return False
        if pending:
            # A substitution resizes earlier steps too: their FLOPs must still fit.
            terms = [_subst_all(x, pending) for x in self.terms]
            if self.o.bound_of(terms, self.groups) + bound > self.flops_limit:
                return False
        elif not last and not self._can_merge_after(inputs, out):
            return False
        return new_var, pending, out, extra, bound

    def _can_merge_after(self, inputs, out) -> bool:
        """One step of look-ahead: when every later step must merge two branches, some pair of the open
        branches left by this step has to merge (a broadcast or a matmul applies)."""
        users = self.users
        # The open branches this step leaves, counted first (most steps need no look-ahead).
        count = self.open - (users[inputs[0]] == 0) - (len(inputs) > 1 and inputs[1] != inputs[0] and
                                                       users[inputs[1]] == 0)
        merges_left = self.n - self.t - 2          # steps after this one, before the closing step
        if not count or count < merges_left:
            return True
        leaves = [v for v, u in enumerate(users) if u == 0 and v not in inputs]
        nodes = [(self.vars[v], self.canon[v]) for v in leaves] + [self.o.node_info(self.o.shape_id(out))]
        pairs, o, groups = self.pairs, self.o, self.groups
        for i, (va, ca) in enumerate(nodes):
            a = ca[0] * _PAIR
            for j, (vb, cb) in enumerate(nodes):
                if i == j:
                    continue
                key = a + cb[0 if vb is None or vb == va or va is None else 1]
                mask = pairs.get(key)
                if mask is None:
                    mask = o.pair_mask(key, groups)
                if mask & _MERGE_BITS:
                    return True
        return False

    def _index_node(self, shape) -> None:
        sid = self.o.shape_id(shape)
        self.ids.append(sid)
        var, canon = self.o.node_info(sid)
        self.vars.append(var)
        self.canon.append(canon)

    def _infer(self, kind: str, params: tuple, inputs: tuple, new_var: bool):
        """``_Options.infer`` with the free variables renamed x0, x1, ... in order (so one cached
        result serves every kernel whose shapes differ only in variable names), renamed back."""
        vars_ = self.vars
        if not new_var:
            if len(inputs) == 1:
                if vars_[inputs[0]] is None:
                    return self.o.infer(kind, params, (self.ids[inputs[0]],), self.groups)
            elif vars_[inputs[0]] is None and vars_[inputs[1]] is None:
                return self.o.infer(kind, params, (self.ids[inputs[0]], self.ids[inputs[1]]), self.groups)
        assigned: Dict[int, int] = {}
        ids = []
        identity = True                          # the canonical names are the node's own
        for j in inputs:
            v = vars_[j]
            if v is None:
                ids.append(self.ids[j])
            else:
                c = assigned.setdefault(v, len(assigned))
                identity = identity and c == v
                ids.append(self.canon[j][c])
        if new_var:
            identity = identity and len(assigned) == self.next_var
            params = _fresh(kind, params, len(assigned))
        r = self.o.infer(kind, params, tuple(ids), self.groups)
        if r is None or identity:
            return r
        back = {c: v for v, c in assigned.items()}
        if new_var:
            back[len(assigned)] = self.next_var
        if r[0] == "ok":
            return ("ok", _renamed(r[1], back), [x.rename(back) for x in r[2]], r[3])
        return ("solve", [(back.get(var, var), value.rename(back), _renamed(out, back), [x.rename(back) for x in extra],
                           bound) for var, value, out, extra, bound in r[1]])

    def _legal_sizes(self, sizes) -> bool:
        return check_static(sizes, self.envs, self.o.keys, self.cache) is None

    def _substitute(self, var: int, value: Size) -> None:
        self.shapes = [S.substitute(s, var, value) for s in self.shapes]
        self.ids, self.vars, self.canon = [], [], []
        for shape in self.shapes:
            self._index_node(shape)
        self.steps = [(cls, _subst_params(cls.kind, params, var, value), ins) for cls, params, ins in self.steps]
        self.producers = [None if p is None else (p[0], _subst_params(p[0], p[1], var, value))
                          for p in self.producers]
        self.terms = [t.substitute(var, value) for t in self.terms]
        self.flops_bound = self.o.bound_of(self.terms, self.groups)
        self.dynamic_sizes = list(dict.fromkeys(x for x in (s.substitute(var, value) for s in self.dynamic_sizes)
                                                if not x.is_static()))

    # ---- closing -------------------------------------------------------------------------------------
    def finish(self) -> Decoded:
        """Checks the finished DAG, replays it (the kernel's definition) and solves the budget."""
        if len(self.steps) != self.n:
            raise KernelRejected(f"only {len(self.steps)} of {self.n} primitives were placed")
        open_nodes = [v for v, u in enumerate(self.users) if u == 0]
        if open_nodes != [len(self.shapes) - 1]:
            raise KernelRejected(f"open branches {open_nodes} at the end: the DAG does not merge into one output")
        o = self.o
        if not (o.min_weighted <= self.weighted <= o.max_weighted):
            raise KernelRejected(f"{self.weighted} weighted primitives; the space wants {o.min_weighted}.."
                                 f"{o.max_weighted}")
        if self.weighted > o.max_weighted_ratio * self.n:
            raise KernelRejected(f"{self.weighted} of {self.n} primitives are weighted (over "
                                 f"{o.max_weighted_ratio:.0%})")
        steps = list(self.steps)
        try:
            a = analyze(steps, o.out_channels)
        except PrimitiveError as e:
            raise KernelRejected(f"the closed kernel does not replay: {e}") from e
        rh, rw = a.receptive
        if min(rh, GLOBAL) * min(rw, GLOBAL) < o.min_receptive:
            raise KernelRejected(f"receptive field {rh}x{rw} is below {o.min_receptive} pixels")
        solution = solve_sizes(a, o.targets, self.groups, o.budget, o.max_tensor_ratio, self.cache, o.limits,
                               o.static_caches[self.groups])
        return Decoded(steps, self.groups, o.out_channels, solution, structural_hash(steps))


_BROADCAST_PARAMS = tuple((op,) for op in ("add", "sub", "mul", "max", "min"))
_BMM_PARAMS = (("gram", False), ("gram", True), ("apply", False))
_BMM_GRAM, _BMM_APPLY = _BMM_PARAMS[:2], _BMM_PARAMS[2:]
# What two nodes (a, b) can do together, as bits of one int (``_Options.pair_mask``): broadcast a onto b,
# bmm(a, b) with each of _BMM_PARAMS.
_BROADCAST_BIT = 1
_BMM_BITS = (2, 4, 8)
_MERGE_BITS = _BROADCAST_BIT | 2 | 8          # broadcast, gram (no softmax) or apply: the look-ahead's merges
_BMM_BY_MASK = tuple(tuple(p for p, bit in zip(_BMM_PARAMS, _BMM_BITS) if m & bit) for m in range(16))
_BMM_APPLY_BY_MASK = tuple(tuple(p for p, bit in zip(_BMM_PARAMS, _BMM_BITS) if m & bit and p in _BMM_APPLY)
                           for m in range(16))
_SAME_INFER = {**{(op,): ("add",) for op in ("sub", "mul", "max", "min")}, ("gram", True): ("gram", False)}
_TWO_INPUT_KINDS = frozenset(k for k, cls in PRIMITIVES.items() if cls.arity == 2)
_PAIR = 1 << 32                                # pair key: a * _PAIR + b (shape ids)
# Kinds whose output has its input's channels (at the last step, only a closable input can close).
_KEEPS_CHANNELS = {"activation", "elementwise", "shift", "scale", "softmax", "group"}


class _Candidates:
    """A kind's applications as segments (parameter list, inputs), indexed without being listed."""

    __slots__ = ("segments", "starts", "total")

    def __init__(self, segments):
        self.segments = segments
        self.starts = []
        total = 0
        for params, _ in segments:
            self.starts.append(total)
            total += len(params)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> tuple:
        k = bisect.bisect_right(self.starts, i) - 1
        params, inputs = self.segments[k]
        return params[i - self.starts[k]], inputs

    def index(self, params: tuple, inputs: tuple) -> List[int]:
        """Every index whose application has these inputs and parameters compatible with ``params``."""
        return [self.starts[k] + j for k, (plist, ins) in enumerate(self.segments) if ins == tuple(inputs)
                for j, p in enumerate(plist) if p == params]


def _renamed(shape, mapping) -> tuple:
    return tuple(None if x is None else x.rename(mapping) for x in shape)


def _count(cls, params, ins, out):
    """The G-independent part of the size checks: False when the output holds more than one free
    variable or the weights depend on the image size; else the output's element count when static, or
    None."""
    if len(S.dynamic_vars(out)) > 1 or not _invariant(cls, params, ins, out):
        return False
    n = S.numel(out)
    return n if n.is_static() else None


def _invariant(cls, params, ins, out) -> bool:
    """Whether the primitive's weights are independent of the image size (spatial invariance)."""
    if not cls.weighted:
        return True
    weights = cls.cost(params, ins, out)[2]
    return weights is None or not weights.spatial


def _fresh(kind: str, params: tuple, next_var: int) -> tuple:
    i = _OUT_PARAM.get(kind)
    if i is None or params[i] != "new":
        return params
    return params[:i] + (f"x{next_var}",) + params[i + 1:]


def _subst_all(size: Size, pending) -> Size:
    for var, value in pending:
        size = size.substitute(var, value)
    return size


def _subst_params(kind: str, params: tuple, var: int, value: Size) -> tuple:
    i = _OUT_PARAM.get(kind)
    if i is None or params[i] in ("new", "1"):
        return params
    new = str(Size.parse(params[i]).substitute(var, value))
    return params if new == params[i] else params[:i] + (new,) + params[i + 1:]


def _compatible(kind: str, candidate: tuple, wanted: tuple) -> bool:
    """Whether a candidate can become ``wanted``: equal, or a new variable where ``wanted`` has a size."""
    if candidate == tuple(wanted):
        return True
    i = _OUT_PARAM.get(kind)
    if i is None or candidate[i] != "new" or wanted[i] == "1":
        return False
    return candidate[:i] + candidate[i + 1:] == tuple(wanted)[:i] + tuple(wanted)[i + 1:]


def canonical_steps(steps: Sequence[Step]) -> List[Step]:
    """``steps`` with the free variables renamed x0, x1, ... in order of first appearance."""
    rename: Dict[int, int] = {}
    out = []
    for cls, params, inputs in steps:
        i = _OUT_PARAM.get(cls.kind)
        if i is not None and params[i] not in ("new", "1"):
            size = Size.parse(params[i])
            for v in size.dynamic_vars():
                rename.setdefault(v, len(rename))
            params = params[:i] + (str(size.rename(rename)),) + params[i + 1:]
        out.append((cls, tuple(params), tuple(inputs)))
    return out


def canonical_hash(steps: Sequence[Step]) -> str:
    return structural_hash(canonical_steps(steps))
