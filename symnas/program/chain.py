"""Two convolutions as one TVM function: a kernel's chain (k x k depthwise then 1 x 1, k x 1 then 1 x k).

``ConvChain(first, second)`` computes ``second(relu?(first(x)))`` in one PrimFunc (one ``te`` compute
chain). Each conv is scheduled by its own program steps, as a separate ``Schedule`` would be, or, with
``fuse_at`` naming a loop of the second conv's steps, the first conv is computed under that loop: only
the rows that iteration reads, while they are in the cache (no intermediate pass over memory). Row tiles
of a second conv with a one-row window (1 x 1, 1 x k) read exactly the first conv's same rows, so
nothing is computed twice. ``row_tile_template`` gives such steps.

Example::

    import symnas as sn
    P = sn.program
    dw = P.Conv2d(c_in=64, c_out=64, h=16, w=16, k=3, groups=64)
    pw = P.Conv2d(c_in=64, c_out=128, h=16, w=16, k=1)
    chain = P.ConvChain(dw, pw, second_steps=P.row_tile_template(co_block=8, oh_block=2), fuse_at="n*oh.0")
    x, weights = chain.random_inputs()
    y = chain.run(x, weights)                        # numpy, (1, 128, 16, 16)
    print(chain.measure(repeat=3).latency_ms)
    best = P.fastest_chain(dw, pw)                   # {"fused": ..., "one_function": ..., "two_functions": ...}
"""
from typing import List, Optional, Sequence

import numpy as np
import pyglove as pg

from symnas.program.errors import IllegalTransformation, tvm_reason
from symnas.program.kernel import EPILOGUES, Kernel
from symnas.program.loop_nest import LoopNest, StepError
from symnas.program.lower_tvm import TargetLike, schedule_helper_blocks, target_kind
from symnas.program.lower_tvm import _parallel_copy as parallel_copy
from symnas.program.operators import Conv2d
from symnas.program.schedule import Schedule, build_lowered
from symnas.program.transformations import (CacheWrite, DecomposeReduction, Fuse, Parallel, Reorder, Split, Step,
                                            Unroll, Vectorize)


def row_tile_template(co_block: int = 8, oh_block: int = 2) -> List[Step]:
    """Steps for the second conv of a fused chain: parallel over row tiles (``n*oh.0``, the loop to
    compute the first conv under), then ``co_block`` output channels x ``oh_block`` rows x the row
    accumulated in registers, the row vectorized."""
    return [Split("co", co_block), Split("oh", oh_block),
            Reorder(["n", "oh.0", "co.0", "ci", "kh", "kw", "co.1", "oh.1", "ow"]),
            CacheWrite(at="co.0"), Fuse(["n", "oh.0"]), Parallel("n*oh.0"),
            Unroll("co.1"), Unroll("oh.1"), Vectorize("ow"), DecomposeReduction("ci")]


class ConvChain(pg.Object):
    """``second(relu?(first(x)))`` as one TVM function (plain convolutions: no neural steps)."""

    first: Conv2d
    second: Conv2d
    relu: bool = False
    first_steps: List[Step] = []        # program steps of the first conv (ignored under ``fuse_at``)
    second_steps: List[Step] = []
    fuse_at: Optional[str] = None       # a loop of ``second_steps`` to compute the first conv under
    first_block: int = 0                # under ``fuse_at``: the first conv's output channels per register block

    def kernels(self) -> Sequence[Kernel]:
        """(first, second) kernels; raises ValueError when the first's output is not the second's input."""
        first = Schedule(self.first, [] if self.fuse_at else self.first_steps).kernel()
        second = Schedule(self.second, self.second_steps).kernel()
        made, wanted = first.output_shape(), second.input_shape()
        if tuple(made) != tuple(wanted):
            raise ValueError(f"ConvChain: the first conv makes {tuple(made)}, the second takes {tuple(wanted)}")
        for kernel in (first, second):
            if len(kernel.parts) != 1 or kernel.bh != 1 or kernel.bw != 1 or kernel.parts[0].shuffle:
                raise ValueError("ConvChain takes plain convolutions (no neural steps)")
        return first, second

    @property
    def output_shape(self):
        return self.kernels()[1].output_shape()

    @property
    def input_shape(self):
        return self.kernels()[0].input_shape()

    @property
    def weight_shapes(self):
        first, second = self.kernels()
        return [first.weight_shapes()[0], second.weight_shapes()[0]]

    def te_tensors(self, epilogue: Optional[str] = None):
        """(input, first weight, second weight, [bias, [residual,]] output) TE tensors; ``epilogue`` as in
        ``Kernel.te_tensors`` (a per-channel bias, a residual input, a ReLU in the output write)."""
        from tvm import te  # pylint: disable=import-outside-toplevel

        if epilogue not in EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}: use one of {EPILOGUES}")
        first, second = self.kernels()
        data = te.placeholder(first.input_shape(), name="data")
        w1 = te.placeholder(first.tvm_weight_shapes()[0], name="weight0")
        w2 = te.placeholder(second.tvm_weight_shapes()[0], name="weight1")
        mid = first._te_part(first.parts[0], _padded(data, first, "pad"), w1, "conv1")
        if self.relu:
            mid = te.compute(mid.shape, lambda *i: te.max(mid(*i), te.const(0.0, "float32")), name="relu")
        out = second._te_part(second.parts[0], _padded(mid, second, "pad_mid"), w2, "conv2")
        if epilogue is None:
            return [data, w1, w2, out]
        bias = te.placeholder((out.shape[1],), name="bias")
        residual = (te.placeholder(tuple(out.shape), name="residual")
                    if epilogue.startswith("bias_residual") else None)

        def fused(n, c, h, w):
            value = out[n, c, h, w] + bias[c]
            if residual is not None:
                value = value + residual[n, c, h, w]
            return te.max(value, te.const(0.0, "float32")) if epilogue.endswith("_relu") else value

        extra = [bias] if residual is None else [bias, residual]
        return [data, w1, w2] + extra + [te.compute(out.shape, fused, name="epilogue")]

    def lower(self, target: TargetLike = None, epilogue: Optional[str] = None, prologue: bool = False):
        """The scheduled IRModule (CPU); raises IllegalTransformation naming the bad step. ``epilogue``:
        see ``te_tensors``; a prologue (pre-activation) is not implemented for chains."""
        from tvm import s_tir, te  # pylint: disable=import-outside-toplevel

        kind = target_kind(target)
        if kind != "llvm":
            raise ValueError("ConvChain is scheduled for CPUs only")
        if prologue:
            raise ValueError("ConvChain has no fused prologue (a batch norm before the first conv)")
        first, second = self.kernels()
        sch = s_tir.Schedule(te.create_prim_func(self.te_tensors(epilogue)))
        names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
        nest = LoopNest(list(second.loop_extents()), sch, sch.get_sblock("conv2"), target_kind=kind)
        _apply(nest, self.second_steps, "second")
        if self.fuse_at:
            try:
                at = nest.rv(self.fuse_at)
            except StepError as error:
                raise IllegalTransformation(f"fuse_at: {error}") from None
            try:
                for name in ("pad_mid", "relu", "conv1"):      # consumer first: each lands under ``at``
                    if name in names:
                        sch.compute_at(sch.get_sblock(name), at)
                _schedule_under(sch, sch.get_sblock("conv1"), at, first, self.first_block)
                for name in ("pad_mid", "relu"):
                    if name in names:
                        _vectorize_inner(sch, sch.get_sblock(name))
            except (RuntimeError, ValueError) as error:
                raise IllegalTransformation(f"fuse_at {self.fuse_at!r}: {tvm_reason(error)}") from None
        else:
            _apply(LoopNest(list(first.loop_extents()), sch, sch.get_sblock("conv1"), target_kind=kind),
                   self.first_steps, "first")
            try:
                for name in ("relu", "pad_mid"):
                    if name in names:
                        parallel_copy(sch, sch.get_sblock(name))
            except (RuntimeError, ValueError) as error:
                raise IllegalTransformation(f"helper blocks: {tvm_reason(error)}") from None
        try:
            schedule_helper_blocks(sch, kind)                   # the input's padding copy
        except RuntimeError as error:
            raise IllegalTransformation(f"helper blocks: {tvm_reason(error)}") from None
        return sch.mod

    def build(self, target: TargetLike = None, epilogue: Optional[str] = None, prologue: bool = False):
        """Compiles for this CPU (cached by structural hash)."""
        return build_lowered(self.lower(target, epilogue, prologue), target)

    def random_inputs(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, tuple(self.input_shape)).astype("float32")
        return x, [rng.uniform(-1, 1, s).astype("float32") for s in self.weight_shapes]

    def describe(self) -> str:
        """One line: the two convs and how they are scheduled."""
        def conv(op):
            window = "x".join(str(k) for k in op.window)
            return (f"conv {op.c_in}->{op.c_out} {window}" + (f" d{op.dilation}" if op.dilation > 1 else "")
                    + (f" s{op.stride}" if op.stride > 1 else "") + (f" g{op.groups}" if op.groups > 1 else ""))
        how = f"fused under {self.fuse_at}" if self.fuse_at else "one function"
        steps = " -> ".join(pg.format(s, compact=True) for s in self.second_steps[:2])
        return f"{conv(self.first)}{' + relu' if self.relu else ''} then {conv(self.second)} ({how}; {steps})"

    def pack_weight_at(self, index: int, weight) -> np.ndarray:
        """The ``index``-th OIHW weight (0: first conv, 1: second) in the layout the function takes."""
        return self.kernels()[index].pack_weight(_numpy(weight))

    def packed_weights(self, weights) -> list:
        """OIHW weights in the layouts the function takes (``PackWeights`` steps)."""
        first, second = self.kernels()
        return [first.pack_weight(_numpy(weights[0])), second.pack_weight(_numpy(weights[1]))]

    def run(self, x, weights, target: TargetLike = None) -> np.ndarray:
        """Runs the chain on this CPU: numpy/torch input and OIHW weights in, numpy output out."""
        import tvm  # pylint: disable=import-outside-toplevel

        func = self.build(target).jit()["main"]
        device = tvm.cpu()
        args = [tvm.runtime.tensor(a, device) for a in [_numpy(x)] + self.packed_weights(weights)]
        out = tvm.runtime.tensor(np.zeros(self.output_shape, "float32"), device)
        func(*args, out)
        return out.numpy()

    def measure(self, target: TargetLike = None, repeat: int = 5, min_repeat_ms: float = 20.0):
        """Compiles and times the chain (TVM's time evaluator, ``time_module``): a ``Measurement``."""
        import statistics  # pylint: disable=import-outside-toplevel

        import tvm  # pylint: disable=import-outside-toplevel
        from symnas.program.measure import Measurement, time_module  # pylint: disable=import-outside-toplevel

        executable = self.build(target)
        x, weights = self.random_inputs()
        device = tvm.cpu()
        args = [tvm.runtime.tensor(a, device) for a in [x] + self.packed_weights(weights)]
        args.append(tvm.runtime.tensor(np.zeros(self.output_shape, "float32"), device))
        results = time_module(executable, args, repeat=repeat, min_repeat_ms=min_repeat_ms, device=device)
        first, second = self.kernels()
        return Measurement(latency_ms=statistics.median(results), flops=first.flops() + second.flops(),
                           params=first.params() + second.params(), latency_std_ms=statistics.pstdev(results),
                           repeats=results)


def _padded(tensor, kernel: Kernel, name: str):
    from tvm import te  # pylint: disable=import-outside-toplevel

    ph, pw = kernel.padding
    if not ph and not pw:
        return tensor
    n, c, h, w = (int(d) for d in tensor.shape)
    return te.compute((n, c, h + 2 * ph, w + 2 * pw),
                      lambda i, j, y, x: te.if_then_else(te.all(y >= ph, y < h + ph, x >= pw, x < w + pw),
                                                         tensor[i, j, y - ph, x - pw], te.const(0.0, "float32")),
                      name=name)


def _apply(nest: LoopNest, steps, which: str) -> None:
    for position, step in enumerate(steps):
        if step.changes_kernel:
            continue
        try:
            step.apply(nest)
        except StepError as error:
            raise IllegalTransformation(f"{which} conv: {error}", step, position) from None
        except (RuntimeError, ValueError, TypeError, AttributeError) as error:
            raise IllegalTransformation(f"{which} conv: {tvm_reason(error)}", step, position) from None


def _schedule_under(sch, block, at, kernel: Kernel, co_block: int = 0) -> None:
    """The first conv's loops under the fused loop ``at``: reductions outside, the row vectorized
    inside, with ``co_block`` output channels unrolled around it (compute_at drops loops of extent 1,
    so the loops are told apart by the kernel's extents)."""
    loops = sch.get_loops(block)
    outer = [sch.get_sref(lp) for lp in loops]
    under = loops[[i for i, ref in enumerate(outer) if ref.same_as(sch.get_sref(at))][0] + 1:]
    extents = kernel.loop_extents()
    reduce_count = sum(1 for name in ("ci", "kh", "kw") if extents[name] > 1)
    spatial, reduce = under[:len(under) - reduce_count], under[len(under) - reduce_count:]
    if kernel.cols > 1 and spatial:
        ow, rest = spatial[-1], spatial[:-1]
        inner = []
        if co_block and rest and extents["co"] > co_block and extents["co"] % co_block == 0:
            co_outer, co_inner = sch.split(rest[0], [None, co_block])
            rest, inner = [co_outer] + rest[1:], [co_inner]
        sch.reorder(*rest, *reduce, *inner, ow)
        for loop in inner:
            sch.unroll(loop)
        sch.vectorize(ow)
    if reduce:
        sch.decompose_reduction(block, reduce[0])


def _vectorize_inner(sch, block) -> None:
    inner = sch.get_loops(block)[-1]
    if int(sch.get(inner).extent) > 1:
        sch.vectorize(inner)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype="float32"))


def chain_candidates(first: Conv2d, second: Conv2d, relu: bool = False, lanes: Optional[int] = None):
    """``(one_function, fused)``: the chain with each conv on its CPU templates (``cpu_templates``, the
    first two each), and the chain fused at row tiles (``row_tile_template`` with the register blocks
    ``cpu_templates`` would pick: co_block x oh_block in 4/8/16 x 1/2/4 that divide the second conv; a dense
    first conv also with 4 of its output channels per register block, ``first_block``).
    A strided second conv gets no fused candidates: it never reads some of the first conv's rows, and
    TVM's ``compute_at`` then refuses the partly written intermediate."""
    from symnas.program.search_space import cpu_templates  # pylint: disable=import-outside-toplevel
    one = [ConvChain(first, second, relu=relu, first_steps=a, second_steps=b)
           for a in cpu_templates(first, lanes)[:2] for b in cpu_templates(second, lanes)[:2]]
    kernel = second.kernel()
    dense = first.kernel().parts[0].ci_per_group > 1      # (a depthwise first conv has one input per output)
    fused = [ConvChain(first, second, relu=relu, second_steps=row_tile_template(cb, ob), fuse_at="n*oh.0",
                       first_block=fb)
             for fb in ((0, 4) if dense else (0,)) for cb in (8, 4, 16) for ob in (1, 2, 4)
             if kernel.c_out % cb == 0 and kernel.oh % ob == 0 and kernel.oh // ob >= 2 and second.stride == 1]
    return one, fused


def fastest_chain(first: Conv2d, second: Conv2d, relu: bool = False, repeat: int = 3,
                  min_repeat_ms: float = 10.0, ways: Sequence[str] = ("two_functions", "one_function", "fused")):
    """The chain timed three ways on this CPU: ``{"two_functions": (ms, [steps1, steps2]),
    "one_function": (ms, ConvChain), "fused": (ms, ConvChain)}``, each the fastest of its candidates
    (TVM's time evaluator, median of ``repeat``; two functions: the sum of each conv's fastest template);
    only the ``ways`` asked for."""
    from symnas.program.search_space import cpu_templates  # pylint: disable=import-outside-toplevel

    def fastest(candidates, measure):
        best = (float("inf"), None)
        for candidate in candidates:
            try:
                ms = measure(candidate)
            except IllegalTransformation:
                continue
            best = min(best, (ms, candidate), key=lambda b: b[0])
        return best

    result = {}
    if "two_functions" in ways:
        separate = []
        for op in (first, second):
            separate.append(fastest(cpu_templates(op), lambda steps, op=op: Schedule(op, steps).measure(
                repeat=repeat, min_repeat_ms=min_repeat_ms).latency_ms))
        result["two_functions"] = (separate[0][0] + separate[1][0], [separate[0][1], separate[1][1]])
    one, fused = chain_candidates(first, second, relu)
    for name, candidates in (("one_function", one), ("fused", fused)):       # (inf, None) when none
        if name in ways:
            result[name] = fastest(candidates,
                                   lambda c: c.measure(repeat=repeat, min_repeat_ms=min_repeat_ms).latency_ms)
    return result
