"""Program transformations: semantics-preserving steps applied through ``tvm.s_tir``.

Each step is a small symbolic object; a list of them is a schedule (seed 001
Table 1). Steps name loops; see :mod:`symnas.program.loop_nest` for how names
follow splits and fusions.

Example::

    steps = [Split("co", 4), Split("oh", 2),
             Reorder(["co.0", "oh.0", "ci", "kh", "kw", "co.1", "oh.1", "ow"]),
             Fuse(["n", "co.0", "oh.0"]), Parallel("n*co.0*oh.0"), Vectorize("ow")]
"""
from typing import List

import pyglove as pg

from symnas.program.loop_nest import LoopNest, StepError

THREAD_AXES = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y",
               "threadIdx.z", "vthread.x", "vthread.y", "vthread.z")


class Step(pg.Object):
    """One transformation of a loop nest."""

    is_neural = False
    # Steps that change the compute definition (neural steps, weight packing) are folded
    # into the kernel before the TE PrimFunc is generated.
    changes_kernel = False

    def apply(self, nest: LoopNest) -> None:
        """Applies the step to one block's loops (names only when not scheduling)."""
        raise NotImplementedError

    def apply_to_kernel(self, kernel, nest: LoopNest):
        return kernel


class ProgramStep(Step):
    """A transformation that keeps the computed values (legal iff TVM accepts it)."""


class Split(ProgramStep):
    """Strip-mines ``loop`` into ``loop.0`` (outer) and ``loop.1`` (inner, extent ``factor``)."""

    loop: str
    factor: int

    def apply(self, nest: LoopNest) -> None:
        nest.check(self.loop)
        if not isinstance(self.factor, int) or self.factor < 1:
            raise StepError(f"split factor must be a positive int, got {self.factor!r}")
        names = [f"{self.loop}.0", f"{self.loop}.1"]
        if not nest.scheduling:
            nest.replace(self.loop, names)
            return
        extent = nest.extent(self.loop)
        if self.factor > extent:
            raise StepError(f"split factor {self.factor} is larger than loop {self.loop!r} "
                            f"(extent {extent})")
        if extent % self.factor:
            raise StepError(f"split factor {self.factor} does not divide loop {self.loop!r} "
                            f"(extent {extent})")
        outer, inner = nest.sch.split(nest.rv(self.loop), [None, self.factor])
        nest.replace(self.loop, names, [outer, inner])


class Reorder(ProgramStep):
    """Permutes ``loops`` into the given order, within the positions they occupy."""

    loops: List[str]

    def apply(self, nest: LoopNest) -> None:
        loops = list(self.loops)
        for name in loops:
            nest.check(name)
        if len(set(loops)) != len(loops):
            raise StepError(f"reorder names a loop twice: {loops}")
        if nest.scheduling and len(loops) > 1:
            nest.sch.reorder(*[nest.rv(name) for name in loops])
        nest.permute(loops)


class Interchange(ProgramStep):
    """Swaps two loops (seed 001 §2.2: ``.interchange(CI, CO)``)."""

    first: str
    second: str

    def apply(self, nest: LoopNest) -> None:
        a, b = nest.check(self.first), nest.check(self.second)
        if a == b:
            raise StepError(f"interchange of {a!r} with itself")
        if nest.order.index(a) > nest.order.index(b):
            a, b = b, a
        Reorder([b, a]).apply(nest)


class Tile(ProgramStep):
    """Split each loop by its factor, then put all outer parts before all inner parts."""

    loops: List[str]
    factors: List[int]

    def apply(self, nest: LoopNest) -> None:
        if len(self.loops) != len(self.factors) or not self.loops:
            raise StepError(f"tile needs one factor per loop, got {list(self.loops)} and "
                            f"{list(self.factors)}")
        for loop, factor in zip(self.loops, self.factors):
            Split(loop, factor).apply(nest)
        Reorder([f"{l}.0" for l in self.loops] + [f"{l}.1" for l in self.loops]).apply(nest)


class Fuse(ProgramStep):
    """Fuses adjacent ``loops`` (outer to inner) into one loop named ``a*b*...``."""

    loops: List[str]

    def apply(self, nest: LoopNest) -> None:
        loops = list(self.loops)
        for name in loops:
            nest.check(name)
        if len(loops) < 2:
            raise StepError("fuse needs at least two loops")
        first = nest.order.index(loops[0])
        if nest.order[first:first + len(loops)] != loops:
            raise StepError(f"fuse needs adjacent loops in nest order; the nest is {nest.order}")
        name = "*".join(loops)
        fused = nest.sch.fuse(*[nest.rv(n) for n in loops]) if nest.scheduling else None
        nest.order[first:first + len(loops)] = [name]
        if nest.scheduling:
            for n in loops:
                del nest.rvs[n]
            nest.rvs[name] = fused


class _Annotate(ProgramStep):
    loop: str

    def apply(self, nest: LoopNest) -> None:
        nest.check(self.loop)
        if nest.scheduling:
            self._primitive(nest)

    def _primitive(self, nest: LoopNest) -> None:
        raise NotImplementedError


class Unroll(_Annotate):
    """Fully unrolls ``loop``."""

    def _primitive(self, nest):
        nest.sch.unroll(nest.rv(self.loop))


class Vectorize(_Annotate):
    """Vectorizes ``loop`` (a spatial loop, usually the innermost)."""

    def _primitive(self, nest):
        nest.sch.vectorize(nest.rv(self.loop))


class Parallel(_Annotate):
    """Runs the iterations of ``loop`` on CPU threads."""

    def _primitive(self, nest):
        if nest.target_kind == "cuda":
            raise StepError("parallel is a CPU step; bind loops to GPU threads instead")
        nest.sch.parallel(nest.rv(self.loop))


class Bind(_Annotate):
    """Maps ``loop`` onto a GPU thread axis (``blockIdx.x``, ``threadIdx.x``, ``vthread.x``, ...)."""

    thread: str = "threadIdx.x"

    def _primitive(self, nest):
        if self.thread not in THREAD_AXES:
            raise StepError(f"unknown thread axis {self.thread!r}; use one of {THREAD_AXES}")
        if nest.target_kind != "cuda":
            raise StepError(f"bind to {self.thread} needs a GPU target, not {nest.target_kind!r}")
        extent = nest.extent(self.loop)
        nest.sch.bind(nest.rv(self.loop), self.thread)
        if extent:
            nest.thread_extents[self.thread] = extent


class CacheWrite(ProgramStep):
    """Accumulates into a ``scope`` buffer and writes it back under loop ``at``.

    The write-back's innermost loop is vectorized on CPU targets. With ``channel_block``
    > 0 the accumulator of a convolution is laid out ``[n, co / block, oh, ow, block]`` so
    a loop over ``block`` output channels is contiguous in it (needed to vectorize over
    output channels).
    """

    at: str
    scope: str = "local"
    channel_block: int = 0

    def apply(self, nest: LoopNest) -> None:
        nest.check(self.at)
        if not nest.scheduling:
            return
        write_back = nest.sch.cache_write(nest.block, 0, self.scope)
        block = self.channel_block
        if block:
            if len(nest.sch.get(nest.block).iter_vars) != 7:
                raise StepError("channel_block applies to convolution accumulators")
            nest.sch.transform_layout(nest.block, ("write", 0),
                                      lambda n, c, h, w: (n, c // block, h, w, c % block))
        nest.sch.reverse_compute_at(write_back, nest.rv(self.at))
        if nest.target_kind == "llvm":
            inner = nest.sch.get_loops(write_back)[-1]
            if int(nest.sch.get(inner).extent) > 1:
                nest.sch.vectorize(inner)


def _read_buffer_index(nest: LoopNest, operand: str) -> int:
    names = [str(region.source.name) for region in nest.sch.get(nest.block).reads]
    wanted = ("pad", "prologue", "data") if operand == "input" else ("weight",)
    for index, name in enumerate(names):
        if any(name == w or (w == "weight" and name.startswith(w)) for w in wanted):
            return index
    raise StepError(f"the block reads {names}; none is its {operand}")


def _cooperative_copy(nest: LoopNest, copy_block, at: str, threads: int) -> None:
    """Spreads a copy block placed under loop ``at`` over GPU threads or CPU vector lanes."""
    sch = nest.sch
    inner = sch.get_loops(copy_block)[nest.order.index(at) + 1:]
    if not inner:
        return
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    if nest.target_kind == "cuda":
        threads = threads or nest.thread_extents.get("threadIdx.x", 0)
        if threads < 1:
            raise StepError("a GPU copy needs the block's threads: bind a loop to threadIdx.x first "
                            "or give threads=")
        _, thread = sch.split(fused, [None, threads])
        sch.bind(thread, "threadIdx.x")
    elif threads > 1:
        _, lanes = sch.split(fused, [None, threads])
        sch.vectorize(lanes)


class CacheRead(ProgramStep):
    """Copies the part of an operand (``"input"`` or ``"weight"``) that the loops under ``at``
    read into a ``scope`` buffer (``"shared"`` on GPUs, ``"global"``/``"local"`` on CPUs),
    once per iteration of ``at`` (cache_read + compute_at).

    On GPUs the copy is spread over the block's threads (``threads``, by default the extent
    of the loop bound to ``threadIdx.x`` by an earlier ``Bind``); on CPUs ``threads`` > 1
    vectorizes the copy by that many lanes.
    """

    operand: str
    at: str
    scope: str = "shared"
    threads: int = 0

    def apply(self, nest: LoopNest) -> None:
        nest.check(self.at)
        if self.operand not in ("input", "weight"):
            raise StepError(f"cache read operand must be 'input' or 'weight', got {self.operand!r}")
        if self.scope not in ("shared", "local", "global"):
            raise StepError(f"unknown scope {self.scope!r}; use 'shared', 'local' or 'global'")
        if not nest.scheduling:
            return
        if self.scope == "shared" and nest.target_kind != "cuda":
            raise StepError("shared memory is a GPU scope; on CPUs cache into 'global' or 'local'")
        index = _read_buffer_index(nest, self.operand)
        copy_block = nest.sch.cache_read(nest.block, index, self.scope)
        nest.sch.compute_at(copy_block, nest.rv(self.at))
        _cooperative_copy(nest, copy_block, self.at, self.threads)


class ComputeAt(ProgramStep):
    """Computes a producer block (``"pad"``: the zero-padded input) under loop ``at`` of the
    convolution, only the part that iteration reads, instead of all of it up front.
    ``threads`` spreads it as in ``CacheRead``."""

    block: str = "pad"
    at: str = ""
    threads: int = 0

    def apply(self, nest: LoopNest) -> None:
        nest.check(self.at)
        if not nest.scheduling:
            return
        try:
            producer = nest.sch.get_sblock(self.block)
        except (RuntimeError, ValueError):
            raise StepError(f"the kernel has no block named {self.block!r}") from None
        nest.sch.compute_at(producer, nest.rv(self.at))
        _cooperative_copy(nest, producer, self.at, self.threads)


class DecomposeReduction(ProgramStep):
    """Hoists the accumulator initialisation out of the reduction, before ``loop``.

    Put it after Vectorize/Parallel steps: TVM refuses those after decomposition.
    """

    loop: str

    def apply(self, nest: LoopNest) -> None:
        nest.check(self.loop)
        if nest.scheduling:
            nest.sch.decompose_reduction(nest.block, nest.rv(self.loop))


class PackWeights(ProgramStep):
    """Stores the weights as ``[co / block, ci, kh, kw, block]`` (packed once, offline) so a
    loop over ``block`` output channels reads contiguous weights and can be vectorized.

    Values are unchanged; ``Schedule.run`` packs OIHW weights before calling the kernel.
    """

    block: int
    changes_kernel = True

    def apply(self, nest: LoopNest) -> None:
        """Loops are unchanged; the packing is part of the compute definition."""

    def apply_to_kernel(self, kernel, nest: LoopNest):
        import dataclasses  # pylint: disable=import-outside-toplevel

        if not isinstance(self.block, int) or self.block < 1:
            raise StepError(f"weight block must be a positive int, got {self.block!r}")
        for i, part in enumerate(kernel.parts):
            if part.c_out % self.block:
                raise StepError(f"weight block {self.block} does not divide the {part.c_out} "
                                f"output channels of part {i}")
        if kernel.kind != "conv2d":
            raise StepError("weight packing is implemented for convolutions")
        return dataclasses.replace(kernel, weight_block=self.block)
