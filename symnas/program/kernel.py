"""The neural state of a kernel: which sub-convolutions it computes.

Program transformations keep the values a kernel computes; neural transformations
change them. Their combined effect is held in a :class:`Kernel`: a list of
:class:`KernelPart` rectangles over (output channels x output rows), each with its
own grouping and bottleneck factors, so e.g. the two halves of the output channels
can be grouped differently (seed 001 §7.3, sequence 3). The TE compute and the
torch module are both generated from this one description, so they agree.

Example::

    kernel = Conv2d(c_in=64, c_out=64, h=32, w=32).kernel()
    kernel.output_shape(), kernel.flops()
"""
import dataclasses
from typing import Dict, List, Optional, Tuple

EPILOGUES = (None, "bias", "bias_relu", "bias_residual", "bias_residual_relu")


@dataclasses.dataclass(frozen=True)
class KernelPart:
    """One sub-convolution: original output-channel and output-row ranges it covers,
    the input-channel span it reads, its groups and bottleneck factors."""

    co_start: int
    co_stop: int
    oh_start: int
    oh_stop: int
    in_start: int
    in_stop: int
    groups: int = 1
    co_factor: int = 1
    ci_factor: int = 1
    shuffle: bool = False    # groups read interleaved input channels (see input_channels)

    @property
    def c_out(self) -> int:
        return (self.co_stop - self.co_start) // self.co_factor

    @property
    def span(self) -> int:
        return self.in_stop - self.in_start

    @property
    def ci_per_group(self) -> int:
        return self.span // self.groups // self.ci_factor

    def check(self) -> None:
        """Raises ValueError when a factor does not divide the domain it slices."""
        out_count = self.co_stop - self.co_start
        if out_count % self.co_factor:
            raise ValueError(f"bottleneck {self.co_factor} does not divide the {out_count} "
                             "output channels")
        if self.c_out % self.groups:
            raise ValueError(f"groups={self.groups} does not divide the {self.c_out} output "
                             "channels")
        if self.span % self.groups:
            raise ValueError(f"groups={self.groups} does not divide the {self.span} input "
                             "channels")
        if (self.span // self.groups) % self.ci_factor:
            raise ValueError(f"input bottleneck {self.ci_factor} does not divide the "
                             f"{self.span // self.groups} input channels per group")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A (possibly neural-transformed) convolution or dense kernel."""

    kind: str            # "conv2d" or "dense"
    batch: int
    c_in: int
    c_out: int
    h: int
    w: int
    k: int               # window rows (and columns, unless ``k_w`` is set)
    stride: int
    pad: int             # zero rows above and below (and columns, unless ``pad_w`` is set)
    oh: int              # untransformed output rows / columns
    ow: int
    parts: Tuple[KernelPart, ...]
    bh: int = 1          # spatial bottleneck factors (strided output rows / columns)
    bw: int = 1
    weight_block: int = 0  # >0: TVM weights packed as [co / block, ci, kh, kw, block]
    k_w: int = 0           # window columns when they differ from the rows (a k x 1 or 1 x k window)
    pad_w: int = -1        # zero columns left and right when they differ from ``pad``
    dilation: int = 1      # spacing of the window's taps (rows and columns)

    # ---- window -------------------------------------------------------------
    @property
    def kh(self) -> int:
        return self.k

    @property
    def kw(self) -> int:
        return self.k_w or self.k

    @property
    def pad_h(self) -> int:
        return self.pad

    @property
    def pad_cols(self) -> int:
        return self.pad if self.pad_w < 0 else self.pad_w

    @property
    def padding(self) -> Tuple[int, int]:
        """(rows, columns) of zero padding on each side."""
        return (self.pad_h, self.pad_cols)

    def window_span(self) -> Tuple[int, int]:
        """Input rows and columns one output reads: ``dilation * (k - 1) + 1`` each."""
        return (self.dilation * (self.kh - 1) + 1, self.dilation * (self.kw - 1) + 1)

    # ---- shape bookkeeping -------------------------------------------------
    def rows(self, part: KernelPart) -> int:
        return (part.oh_stop - part.oh_start) // self.bh

    @property
    def cols(self) -> int:
        return self.ow // self.bw

    def has_row_partitions(self) -> bool:
        return any(p.oh_start != 0 or p.oh_stop != self.oh for p in self.parts)

    def check(self) -> None:
        for part in self.parts:
            part.check()
        if self.oh % self.bh or self.ow % self.bw:
            raise ValueError(f"spatial bottleneck ({self.bh}, {self.bw}) does not divide the "
                             f"{self.oh}x{self.ow} output")
        if self.has_row_partitions():
            if self.bh != 1:
                raise ValueError("a spatial bottleneck on rows cannot follow a row partition")
            factors = {p.co_factor for p in self.parts}
            if len(factors) > 1:
                raise ValueError("with row partitions, output-channel bottlenecks must be the "
                                 "same in every part")
            factor = factors.pop()
            if any(p.co_start % factor for p in self.parts):
                raise ValueError(f"bottleneck {factor} does not divide the partition offsets")
        self.placements()

    def placements(self) -> List[Tuple[int, int]]:
        """(channel offset, row offset) of each part in the output tensor."""
        result = []
        for part in self.parts:
            if self.has_row_partitions():
                channel = part.co_start // part.co_factor
            else:
                channel = sum(q.c_out for q in self.parts if q.co_start < part.co_start)
            result.append((channel, part.oh_start))
        return result

    def output_shape(self) -> Tuple[int, ...]:
        channels = max(c + p.c_out for (c, _), p in zip(self.placements(), self.parts))
        if self.kind == "dense":
            return (self.batch, channels)
        return (self.batch, channels, self.oh // self.bh, self.cols)

    def input_shape(self) -> Tuple[int, ...]:
        if self.kind == "dense":
            return (self.batch, self.c_in)
        return (self.batch, self.c_in, self.h, self.w)

    def weight_shapes(self) -> List[Tuple[int, ...]]:
        if self.kind == "dense":
            return [(p.c_out, p.ci_per_group) for p in self.parts]
        return [(p.c_out, p.ci_per_group, self.kh, self.kw) for p in self.parts]

    def params(self) -> int:
        total = 0
        for shape in self.weight_shapes():
            size = 1
            for dim in shape:
                size *= dim
            total += size
        return total

    def flops(self) -> int:
        """Multiply-adds x 2 of the whole kernel."""
        total = 0
        for part in self.parts:
            total += (2 * self.batch * part.c_out * self.rows(part) * self.cols
                      * part.ci_per_group * self.kh * self.kw)
        return total

    def tvm_weight_shapes(self) -> List[Tuple[int, ...]]:
        """Weight shapes the TVM kernel takes (packed when ``weight_block`` is set)."""
        b = self.weight_block
        if not b:
            return self.weight_shapes()
        return [(o // b, i, kh, kw, b) for (o, i, kh, kw) in self.weight_shapes()]

    def pack_weight(self, weight):
        """An OIHW numpy weight in the layout the TVM kernel takes."""
        import numpy as np  # pylint: disable=import-outside-toplevel

        b = self.weight_block
        if not b:
            return weight
        o, i, kh, kw = weight.shape
        return np.ascontiguousarray(weight.reshape(o // b, b, i, kh, kw).transpose(0, 2, 3, 4, 1))

    def loop_extents(self, part_index: int = 0) -> Dict[str, int]:
        part = self.parts[part_index]
        if self.kind == "dense":
            return {"n": self.batch, "co": part.c_out, "ci": part.ci_per_group}
        return {"n": self.batch, "co": part.c_out, "oh": self.rows(part), "ow": self.cols,
                "ci": part.ci_per_group, "kh": self.kh, "kw": self.kw}

    def input_channels(self, part: KernelPart) -> List[int]:
        """Input channel read by each (group, ci) pair, in weight order.

        Contiguous: group ``g`` reads the ``g``-th block of the span (the first
        ``ci_per_group`` of its channels under an input bottleneck). With ``shuffle``:
        group ``g`` reads channels ``g, g + G, g + 2G, ...`` of the span (ShuffleNet's
        channel shuffle; under an input bottleneck, the first ``ci_per_group`` of them).
        """
        return [part.in_start + _input_offset(part, g, r) for g in range(part.groups)
                for r in range(part.ci_per_group)]

    def block_names(self) -> List[str]:
        return ["conv"] if len(self.parts) == 1 else [f"conv{i}" for i in range(len(self.parts))]

    # ---- TVM TE ------------------------------------------------------------
    def te_tensors(self, epilogue: Optional[str] = None, prologue: bool = False):
        """(input, weights..., [bias,] output) TE tensors of the kernel's compute.

        ``epilogue`` fuses an inference epilogue into the kernel: ``"bias"`` adds a
        per-output-channel bias (a folded batch norm), ``"bias_relu"`` then clamps at zero;
        ``"bias_residual"`` / ``"bias_residual_relu"`` also add a ``residual`` input of the
        output's shape (a residual block's shortcut) before the clamp. ``prologue`` (convs
        only) fuses a batch norm and ReLU *before* the conv, as in pre-activation networks
        (DenseNet): the input is read as ``max(x * in_scale[c] + in_shift[c], 0)`` (the
        zero padding after that), in the padding copy or, without padding, where the conv
        reads it. The tensors are
        (input, weights..., [bias, [residual,]] [in_scale, in_shift,] output).
        """
        from tvm import te  # pylint: disable=import-outside-toplevel

        if epilogue not in EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}: use one of {EPILOGUES}")
        if prologue and self.kind != "conv2d":
            raise ValueError(f"a fused prologue is implemented for convolutions only, not {self.kind!r}")

        data = te.placeholder(self.input_shape(), name="data")
        weights = [te.placeholder(s, name=f"weight{i}")
                   for i, s in enumerate(self.tvm_weight_shapes())]
        # a channel shuffle every part shares is done by the padding copy (the convolution
        # then reads contiguous channels); otherwise by the convolution's input index
        padded_input = self.kind == "conv2d" and (self.pad_h or self.pad_cols or prologue)
        shuffle = self._shared_shuffle() if padded_input else None
        in_scale = te.placeholder((self.c_in,), name="in_scale") if prologue else None
        in_shift = te.placeholder((self.c_in,), name="in_shift") if prologue else None

        def read(n, c, y, x):
            if not prologue:
                return data[n, c, y, x]
            return te.max(data[n, c, y, x] * in_scale[c] + in_shift[c], te.const(0.0, "float32"))

        if padded_input:
            ph, pw = self.padding

            def source(c):
                if shuffle is None:
                    return c
                # padded channel start + g * span_g + r holds what group g reads r-th
                start, span_g = shuffle.in_start, shuffle.span // shuffle.groups
                local = c - start
                return te.if_then_else(te.all(c >= start, c < shuffle.in_stop),
                                       start + _input_offset(shuffle, local // span_g, local % span_g), c)

            padded = te.compute(
                (self.batch, self.c_in, self.h + 2 * ph, self.w + 2 * pw),
                lambda n, c, y, x: te.if_then_else(
                    te.all(y >= ph, y < self.h + ph, x >= pw, x < self.w + pw),
                    read(n, source(c), y - ph, x - pw), te.const(0.0, "float32")),
                name="pad" if ph or pw else "prologue")
        else:
            padded = data
        outputs = [self._te_part(part, padded, weight, name, shuffled=shuffle is not None)
                   for part, weight, name in zip(self.parts, weights, self.block_names())]
        out = outputs[0] if len(outputs) == 1 else self._te_concat(outputs)
        before = [in_scale, in_shift] if prologue else []
        if epilogue is None:
            return [data] + weights + before + [out]
        bias = te.placeholder((out.shape[1],), name="bias")
        residual = (te.placeholder(tuple(out.shape), name="residual")
                    if epilogue.startswith("bias_residual") else None)

        def fused(n, c, *rest):
            value = out[(n, c) + rest] + bias[c]
            if residual is not None:
                value = value + residual[(n, c) + rest]
            return te.max(value, te.const(0.0, "float32")) if epilogue.endswith("_relu") else value

        extra = [bias] if residual is None else [bias, residual]
        return [data] + weights + extra + before + [te.compute(out.shape, fused, name="epilogue")]

    def _shared_shuffle(self) -> Optional[KernelPart]:
        """The part whose channel shuffle every part shares (same input span and groups),
        or None (no shuffle, or parts that read their inputs differently)."""
        first = self.parts[0]
        if not first.shuffle or first.groups == 1:
            return None
        key = (first.in_start, first.in_stop, first.groups, True)
        return first if all((p.in_start, p.in_stop, p.groups, p.shuffle) == key for p in self.parts) else None

    def _te_part(self, part: KernelPart, padded, weight, name, shuffled: bool = False):
        """One part's compute; ``shuffled``: ``padded`` already holds the shuffled channels."""
        from tvm import te  # pylint: disable=import-outside-toplevel

        ext = self.loop_extents(self.parts.index(part))
        ci = te.reduce_axis((0, ext["ci"]), name="ci")
        out_per_group = part.c_out // part.groups

        def channel(co):
            if part.groups == 1:
                return part.in_start + ci
            if shuffled:
                return part.in_start + (co // out_per_group) * (part.span // part.groups) + ci
            return part.in_start + _input_offset(part, co // out_per_group, ci)

        if self.kind == "dense":
            return te.compute((self.batch, part.c_out),
                              lambda n, co: te.sum(padded[n, channel(co)] * weight[co, ci],
                                                   axis=[ci]), name=name)
        kh = te.reduce_axis((0, self.kh), name="kh")
        kw = te.reduce_axis((0, self.kw), name="kw")
        s, bh, bw, b, d = self.stride, self.bh, self.bw, self.weight_block, self.dilation

        def w(co):
            return weight[co // b, ci, kh, kw, co % b] if b else weight[co, ci, kh, kw]

        return te.compute(
            (self.batch, part.c_out, self.rows(part), self.cols),
            lambda n, co, oh, ow: te.sum(
                padded[n, channel(co), (part.oh_start + oh * bh) * s + kh * d, ow * bw * s + kw * d]
                * w(co), axis=[ci, kh, kw]),
            name=name)

    def _te_concat(self, outputs):
        from tvm import te  # pylint: disable=import-outside-toplevel

        places = self.placements()
        shape = self.output_shape()

        def select(*index):
            n, c = index[0], index[1]
            value = te.const(0.0, "float32")
            for (c0, r0), part, out in reversed(list(zip(places, self.parts, outputs))):
                cond = [c >= c0, c < c0 + part.c_out]
                local = [n, c - c0]
                if self.kind == "conv2d":
                    h = index[2]
                    cond += [h >= r0, h < r0 + self.rows(part)]
                    local += [h - r0, index[3]]
                value = te.if_then_else(te.all(*cond), out[tuple(local)], value)
            return value

        return te.compute(shape, select, name="out")

    def prim_func(self, epilogue: Optional[str] = None, prologue: bool = False):
        from tvm import te  # pylint: disable=import-outside-toplevel

        return te.create_prim_func(self.te_tensors(epilogue, prologue))


def _input_offset(part: KernelPart, group, r):
    """Offset in the part's input span of the ``r``-th channel group ``group`` reads (ints or
    TE expressions)."""
    if part.shuffle:
        return r * part.groups + group
    return group * (part.span // part.groups) + r
