"""Neural transformations: steps that change the values a kernel computes (seed 001 §5.1).

They act on the :class:`~symnas.program.kernel.Kernel` (the neural state) and may
sit anywhere in a step list, interleaved with program steps: a schedule folds them
into the kernel first, regenerates the TE compute, then replays the program steps.

* ``Bottleneck(factor, axis)`` shrinks one iterator's domain by ``factor``: ``co``
  (output channels, default), ``ci`` (input channels per group), ``oh``/``ow``
  (strided output positions: a spatial bottleneck), or ``axis=None`` for the
  outermost loop at that point of the sequence (seed §2.3/§5.3 form).
* ``Group(groups)`` slices and offsets the two channel loops.
* ``Depthwise()`` is grouping with ``groups = c_in = c_out``.
* ``ChannelShuffle()`` makes each group read interleaved input channels (group ``g`` of
  ``G`` reads ``g, g + G, ...``) instead of a contiguous block: the same loops and cost,
  but stacked grouped convs then mix information across groups (ShuffleNet's shuffle,
  done as an index change of the input read or of the padding copy, not as a separate
  pass over the data).
* ``Partition(axis, parts)`` splits the index set of ``co`` or ``oh`` into ``parts``
  sub-kernels (values unchanged) so later neural steps can treat them apart
  (``part=i``): e.g. ``[Partition("co", 2), Group(2, part=0), Group(4, part=1)]``.

Example::

    spatial_bottleneck = [Reorder(["oh", "ow", "co"]), Bottleneck(2, axis=None),
                          Interchange("ow", "oh"), Bottleneck(2, axis=None),
                          Reorder(["co", "oh", "ow"])]
"""
import dataclasses
from typing import List, Optional

from symnas.program.kernel import Kernel, KernelPart
from symnas.program.loop_nest import LoopNest, StepError
from symnas.program.transformations import Step


class NeuralStep(Step):
    """A step that changes the kernel's values (its legality is a question for Fisher Potential)."""

    is_neural = True
    changes_kernel = True

    def apply(self, nest: LoopNest) -> None:
        """Program-step replay: a neural step has no loop effect of its own."""

    def apply_to_kernel(self, kernel: Kernel, nest: LoopNest) -> Kernel:
        raise NotImplementedError

    def _selected(self, kernel: Kernel) -> List[int]:
        part = getattr(self, "part", None)
        if part is None:
            return list(range(len(kernel.parts)))
        if not isinstance(part, int) or not 0 <= part < len(kernel.parts):
            raise StepError(f"part {part!r} does not exist; the kernel has "
                            f"{len(kernel.parts)} part(s)")
        return [part]

    def _map_parts(self, kernel: Kernel, change) -> Kernel:
        parts = list(kernel.parts)
        for i in self._selected(kernel):
            parts[i] = change(parts[i])
            try:
                parts[i].check()
            except ValueError as error:
                raise StepError(f"part {i}: {error}") from None
        return dataclasses.replace(kernel, parts=tuple(parts))


def _positive(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StepError(f"{what} must be a positive int, got {value!r}")
    return value


class Bottleneck(NeuralStep):
    """Shrinks the domain of ``axis`` (``None``: the outermost loop here) by ``factor``."""

    factor: int
    axis: Optional[str] = "co"
    part: Optional[int] = None

    def apply_to_kernel(self, kernel: Kernel, nest: LoopNest) -> Kernel:
        factor = _positive(self.factor, "bottleneck factor")
        loop = nest.outermost() if self.axis is None else nest.check(self.axis)
        if "*" in loop:
            raise StepError(f"cannot bottleneck the fused loop {loop!r}")
        axis = loop.split(".")[0]
        if axis == "co":
            return self._map_parts(
                kernel, lambda p: dataclasses.replace(p, co_factor=p.co_factor * factor))
        if axis == "ci":
            return self._map_parts(
                kernel, lambda p: dataclasses.replace(p, ci_factor=p.ci_factor * factor))
        if axis in ("oh", "ow"):
            if self.part is not None:
                raise StepError("a spatial bottleneck applies to the whole kernel, not one part")
            if axis == "oh" and kernel.has_row_partitions():
                raise StepError("a spatial bottleneck on rows cannot follow a row partition")
            new = dataclasses.replace(kernel, **{"bh" if axis == "oh" else "bw":
                                                 (kernel.bh if axis == "oh" else kernel.bw)
                                                 * factor})
            size = kernel.oh if axis == "oh" else kernel.ow
            if size % (new.bh if axis == "oh" else new.bw):
                raise StepError(f"bottleneck {factor} does not divide the {size} output "
                                f"{'rows' if axis == 'oh' else 'columns'}")
            return new
        raise StepError(f"cannot bottleneck loop {loop!r}: use co, ci, oh or ow")


class Group(NeuralStep):
    """Slices and offsets the two channel loops into ``groups`` groups."""

    groups: int
    part: Optional[int] = None

    def apply_to_kernel(self, kernel: Kernel, nest: LoopNest) -> Kernel:
        groups = _positive(self.groups, "groups")
        return self._map_parts(kernel, lambda p: dataclasses.replace(p, groups=p.groups * groups))


class Depthwise(NeuralStep):
    """Grouping with one input and one output channel per group (needs c_in == c_out)."""

    part: Optional[int] = None

    def apply_to_kernel(self, kernel: Kernel, nest: LoopNest) -> Kernel:
        def change(p: KernelPart) -> KernelPart:
            if p.c_out * p.ci_factor != p.span:
                raise StepError(f"depthwise needs as many input as output channels; the part "
                                f"has {p.span // p.ci_factor} and {p.c_out}")
            return dataclasses.replace(p, groups=p.c_out, ci_factor=1,
                                       in_stop=p.in_start + p.c_out)
        return self._map_parts(kernel, change)


class ChannelShuffle(NeuralStep):
    """Each group reads every ``G``-th input channel, starting at its index, instead of a
    contiguous block (with an input bottleneck: the first of those); changes only which input
    channels the compute reads (on CPU the padding copy reorders them, so the convolution's
    reads stay contiguous)."""

    part: Optional[int] = None

    def apply_to_kernel(self, kernel: Kernel, nest: LoopNest) -> Kernel:
        return self._map_parts(kernel, lambda p: dataclasses.replace(p, shuffle=True))


class Partition(NeuralStep):
    """Splits the index set of ``axis`` (``co`` or ``oh``) into ``parts`` equal sub-kernels.

    Keeps the computed values; later neural steps can address a sub-kernel with ``part=i``.
    Program steps apply to every sub-kernel.
    """

    axis: str = "co"
    parts: int = 2
    part: Optional[int] = None

    def apply_to_kernel(self, kernel: Kernel, nest: LoopNest) -> Kernel:
        count = _positive(self.parts, "partition count")
        selected = self._selected(kernel)
        new_parts: List[KernelPart] = []
        for i, part in enumerate(kernel.parts):
            if i in selected:
                new_parts.extend(self._split(kernel, part, count))
            else:
                new_parts.append(part)
        return dataclasses.replace(kernel, parts=tuple(new_parts))

    def _split(self, kernel: Kernel, part: KernelPart, count: int) -> List[KernelPart]:
        if self.axis == "oh":
            rows = part.oh_stop - part.oh_start
            if kernel.kind == "dense" or rows % count:
                raise StepError(f"{count} parts do not divide the {rows} output rows")
            if kernel.bh != 1:
                raise StepError("cannot partition rows after a spatial bottleneck on rows")
            size = rows // count
            return [dataclasses.replace(part, oh_start=part.oh_start + j * size,
                                        oh_stop=part.oh_start + (j + 1) * size)
                    for j in range(count)]
        if self.axis != "co":
            raise StepError(f"partition axis must be 'co' or 'oh', got {self.axis!r}")
        if part.shuffle:
            raise StepError("partition the output channels before shuffling the input channels")
        if part.co_factor != 1:
            raise StepError("partition the output channels before bottlenecking them")
        total = part.co_stop - part.co_start
        if total % count:
            raise StepError(f"{count} parts do not divide the {total} output channels")
        size = total // count
        per_group = total // part.groups
        span_g = part.span // part.groups
        result = []
        for j in range(count):
            start = part.co_start + j * size
            offset = j * size
            if size % per_group == 0:
                groups = size // per_group
                in_start = part.in_start + offset // per_group * span_g
                in_stop = in_start + groups * span_g
            elif per_group % size == 0:
                groups = 1
                in_start = part.in_start + offset // per_group * span_g
                in_stop = in_start + span_g
            else:
                raise StepError(f"{count} parts cut across the {part.groups} groups")
            result.append(dataclasses.replace(part, co_start=start, co_stop=start + size,
                                              in_start=in_start, in_stop=in_stop, groups=groups))
        return result
