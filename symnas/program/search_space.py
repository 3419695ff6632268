"""Schedule templates and searchable transformation spaces.

``cpu_conv_template`` is the step sequence of a fast NCHW direct convolution on x86
(register-blocked output channels and rows, width vectorized, accumulator in a local
buffer, unrolled inner loops, parallel over fused outer loops). ``transformation_space``
puts search points on a variable-length prefix of neural steps and on the template's
factors, so a search explores neural architecture and program together.

Example::

    space = transformation_space(Conv2d(c_in=64, c_out=64, h=32, w=32))
    for sched, feedback in pg.sample(space, pg.geno.Random(seed=1), num_examples=5):
        ...
"""
from typing import List, Optional, Sequence

import pyglove as pg

from symnas.program.neural import Bottleneck, Depthwise, Group, Partition
from symnas.program.operators import Operator
from symnas.program.schedule import Schedule
from symnas.program.transformations import (Bind, CacheRead, CacheWrite, DecomposeReduction, Fuse,
                                            PackWeights, Parallel, Reorder, Split, Step, Unroll,
                                            Vectorize)


def cpu_conv_template(co_block=4, oh_block=2, ow_block=None) -> List[Step]:
    """Program steps of a fast direct NCHW convolution on a CPU.

    `co_block` x `oh_block` x (`ow_block` or the whole row) outputs stay in registers
    while the reduction ``ci, kh, kw`` runs; the innermost width loop is vectorized.
    The factors may be search points (``pg.oneof``); whether the width is split is
    fixed by passing ``ow_block`` or not.
    """
    ow = "ow.1" if ow_block else "ow"
    steps: List[Step] = [Split("co", co_block), Split("oh", oh_block)]
    if ow_block:
        steps.append(Split("ow", ow_block))
    outer = ["n", "co.0", "oh.0"] + (["ow.0"] if ow_block else [])
    steps += [Reorder(outer + ["ci", "kh", "kw", "co.1", "oh.1", ow]),
              CacheWrite(at=outer[-1]),
              Fuse(outer), Parallel("*".join(outer))]
    steps += [Unroll("co.1"), Unroll("oh.1"), Vectorize(ow), DecomposeReduction("ci")]
    return steps


def cpu_packed_conv_template(co_block=16, oh_block=2) -> List[Step]:
    """Program steps of a direct convolution vectorized over output channels.

    `co_block` is used by three steps; pass an int (a search point would be three
    independent decisions).

    For small feature maps (rows of 4-8 outputs are too short to vectorize): weights
    packed as ``[co / co_block, ci, kh, kw, co_block]``, ``oh_block`` rows x the whole
    width x `co_block` channels accumulate in registers, vectorized over channels.
    """
    return [PackWeights(co_block), Split("co", co_block), Split("oh", oh_block),
            Reorder(["n", "co.0", "oh.0", "ci", "kh", "kw", "oh.1", "ow", "co.1"]),
            CacheWrite(at="oh.0", channel_block=co_block), Fuse(["n", "co.0", "oh.0"]),
            Parallel("n*co.0*oh.0"), Unroll("oh.1"), Unroll("ow"), Vectorize("co.1"),
            DecomposeReduction("ci")]


def gpu_conv_template(co_block=4, oh_block=2, threads_co=8, threads_oh=4, ci_block=0) -> List[Step]:
    """Program steps that map a convolution onto CUDA blocks and threads.

    Blocks over (co, oh) tiles, threads over (co, oh, ow) inside a tile, each thread
    keeps `co_block` x `oh_block` accumulators in registers. With ``ci_block`` > 0 the
    reduction over input channels runs in chunks of ``ci_block``, and each chunk of the
    input and weight tile is first copied into shared memory by all threads of the block.
    """
    ci = ["ci"] if not ci_block else ["ci.0", "ci.1"]
    steps: List[Step] = [Split("co", co_block * threads_co), Split("co.1", co_block),
                         Split("oh", oh_block * threads_oh), Split("oh.1", oh_block)]
    if ci_block:
        steps.append(Split("ci", ci_block))
    steps += [Reorder(["n", "co.0", "oh.0", "co.1.0", "oh.1.0", "ow"] + ci + ["kh", "kw",
                       "co.1.1", "oh.1.1"]),
              Fuse(["n", "co.0", "oh.0"]), Bind("n*co.0*oh.0", "blockIdx.x"),
              Fuse(["co.1.0", "oh.1.0", "ow"]), Bind("co.1.0*oh.1.0*ow", "threadIdx.x"),
              CacheWrite(at="co.1.0*oh.1.0*ow")]
    if ci_block:
        steps += [CacheRead("input", at="ci.0"), CacheRead("weight", at="ci.0")]
    steps += [Unroll("co.1.1"), Unroll("oh.1.1")]
    return steps


def dense_template(co_block=16) -> List[Step]:
    """Program steps for a dense layer: parallel over blocks of output features."""
    return [Split("co", co_block), Reorder(["n", "co.0", "ci", "co.1"]), Parallel("co.0"),
            Unroll("co.1")]


def cpu_templates(op: Operator, lanes: Optional[int] = None) -> List[List[Step]]:
    """The CPU program templates worth trying for a convolution ``op``, likeliest fastest first.

    Row-vectorized templates whose register block (``co_block x oh_block x`` vectors of a
    row or of ``ow_block``) fills about half of the vector registers, or a little more
    (16 registers of 8 lanes with AVX2, 32 of 16 with AVX-512: ``lanes`` defaults to this
    CPU's; on AVX2 such blocks were 1.2-2.4x faster than blocks that spill), then the
    channel-vectorized packed templates, which come first when a row is shorter than a
    vector (4x4 maps). A template that does not fit a neural-transformed kernel raises
    ``IllegalTransformation`` when lowered.
    """
    from symnas.program.lower_tvm import host_vector_lanes  # pylint: disable=import-outside-toplevel
    lanes = lanes or host_vector_lanes()
    registers = 32 if lanes >= 16 else 16
    kernel = op.kernel()
    rows = []
    for co_block in (8, 4, 16):
        for oh_block in (1, 2, 4):
            for ow_block in (None, lanes, 2 * lanes):
                if kernel.c_out % co_block or kernel.oh % oh_block:
                    continue
                if ow_block is not None and (ow_block >= kernel.ow or kernel.ow % ow_block):
                    continue
                accumulators = co_block * oh_block * -(-(ow_block or kernel.ow) // lanes)
                if accumulators <= registers - 2:
                    half = registers // 2
                    rows.append((accumulators < half, abs(accumulators - half), ow_block is not None,
                                 (co_block, oh_block, ow_block)))
    rows.sort(key=lambda r: r[:3])
    rows = [r for r in rows if not r[0]] or rows     # blocks that leave most registers idle lose
    result = [cpu_conv_template(*row[-1]) for row in rows[:4]]
    packed = [cpu_packed_conv_template(16, oh_block) for oh_block in (2, 1)
              if kernel.c_out % 16 == 0 and kernel.oh % oh_block == 0]
    return packed + result if kernel.ow < lanes else result + packed


def _divisors(n: int, candidates: Sequence[int]) -> List[int]:
    found = [c for c in candidates if c <= n and n % c == 0]
    return found or [1]


def neural_choices(op: Operator, groups: Sequence[int] = (2, 4),
                   bottlenecks: Sequence[int] = (2, 4), spatial: bool = True,
                   partition: bool = True) -> List[Optional[Step]]:
    """Candidates of one position of a neural-step sequence (``None`` = no step)."""
    kernel = op.kernel()
    part = kernel.parts[0]
    choices: List[Optional[Step]] = [None]
    group_options = [g for g in groups if part.c_out % g == 0 and part.span % g == 0]
    if group_options:
        choices.append(Group(pg.oneof(group_options)))
    if part.c_out == part.span and part.c_out > 1:
        choices.append(Depthwise())
    bottleneck_options = [b for b in bottlenecks if part.c_out % b == 0]
    if bottleneck_options:
        choices.append(Bottleneck(pg.oneof(bottleneck_options), axis=pg.oneof(["co", "ci"])))
    if spatial and kernel.kind == "conv2d" and kernel.oh % 2 == 0 and kernel.ow % 2 == 0:
        choices.append(Bottleneck(2, axis="oh"))
    if partition and part.c_out % 2 == 0 and group_options:
        # Sequence 3 of seed 001 §7.3: different grouping on the two halves of co.
        choices.append(Partition("co", 2))
        choices.append(Group(pg.oneof(group_options), part=pg.oneof([0, 1])))
    return choices


def transformation_space(op: Operator, max_steps: int = 3, neural: bool = True,
                         program: bool = True, target: str = "llvm",
                         groups: Sequence[int] = (2, 4), bottlenecks: Sequence[int] = (2, 4),
                         spatial: bool = True, partition: bool = True,
                         template: str = "auto") -> Schedule:
    """A Schedule with search points: `max_steps` optional neural steps, then a searchable
    program template (CPU: ``"rows"`` vectorizes the output width, ``"packed"`` the output
    channels; ``"auto"`` picks by the row length; or GPU with ``target="cuda"``). Illegal combinations raise IllegalTransformation when
    lowered; a search skips them."""
    steps: List[Optional[Step]] = []
    if neural and max_steps > 0:
        choices = neural_choices(op, groups, bottlenecks, spatial, partition)
        steps += [pg.oneof(choices) for _ in range(max_steps)]
    kernel = op.kernel()
    if program:
        if kernel.kind == "dense":
            steps += dense_template(pg.oneof(_divisors(kernel.c_out, (4, 8, 16, 32))))
        elif target == "cuda":
            steps += gpu_conv_template(co_block=pg.oneof([1, 2, 4]),
                                       oh_block=pg.oneof([1, 2]),
                                       threads_co=pg.oneof([4, 8, 16]),
                                       threads_oh=pg.oneof([1, 2, 4]))
        elif template == "rows" or (template == "auto" and kernel.ow >= 8):
            # Wide rows: split the width so a spatial bottleneck (half the width) still fits.
            steps += cpu_conv_template(
                co_block=pg.oneof([2, 4, 8, 16]),
                oh_block=pg.oneof([1, 2, 4]),
                ow_block=pg.oneof([8, 16]) if kernel.ow >= 32 else None)
        else:
            # Short rows: vectorize over output channels instead, with packed weights.
            rows = [r for r in (1, 2, 4) if r * kernel.ow <= 32 and kernel.oh % r == 0] or [1]
            # One 16-float vector of channels: the block appears in three steps, which
            # must agree, and separate pg.oneof's would be separate decisions.
            steps += cpu_packed_conv_template(co_block=16, oh_block=pg.oneof(rows))
    return Schedule(op, steps)
