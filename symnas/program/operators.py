"""Operators as loop nests with named iterators.

A convolution is the loop nest ``n, co, oh, ow`` (spatial) x ``ci, kh, kw``
(reduction); a dense layer is ``n, co`` x ``ci``. The names are the ones TVM
gives the loops of the TE compute, so steps can name them.

Example::

    conv = Conv2d(c_in=64, c_out=64, h=32, w=32, k=3)
    conv.loop_extents()   # {'n': 1, 'co': 64, 'oh': 32, 'ow': 32, 'ci': 64, 'kh': 3, 'kw': 3}
"""
from typing import Dict, Optional

import pyglove as pg

from symnas._deprecation import renamed_names
from symnas.program.kernel import Kernel, KernelPart


class Operator(pg.Object):
    """A tensor operator whose compute is a loop nest."""

    def kernel(self) -> Kernel:
        """The untransformed kernel (neural state) of this operator."""
        raise NotImplementedError

    def loop_extents(self) -> Dict[str, int]:
        return self.kernel().loop_extents()


class Conv2d(Operator):
    """2-D convolution, NCHW input, OIHW weight, ``padding=None`` means ``k // 2``."""

    c_in: int
    c_out: int
    h: int
    w: int
    k: int = 3
    stride: int = 1
    padding: Optional[int] = None
    groups: int = 1
    batch: int = 1

    def _on_bound(self):
        super()._on_bound()
        for name in ("c_in", "c_out", "h", "w", "k", "stride", "groups", "batch"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {value}")
        if isinstance(self.groups, int) and isinstance(self.c_in, int):
            if self.c_in % self.groups or self.c_out % self.groups:
                raise ValueError(f"groups={self.groups} must divide c_in={self.c_in} and "
                                 f"c_out={self.c_out}")

    @property
    def pad(self) -> int:
        return self.k // 2 if self.padding is None else self.padding

    def kernel(self) -> Kernel:
        oh = (self.h + 2 * self.pad - self.k) // self.stride + 1
        ow = (self.w + 2 * self.pad - self.k) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r} has an empty output ({oh}x{ow})")
        part = KernelPart(co_start=0, co_stop=self.c_out, oh_start=0, oh_stop=oh,
                          in_start=0, in_stop=self.c_in, groups=self.groups)
        return Kernel(kind="conv2d", batch=self.batch, c_in=self.c_in, c_out=self.c_out,
                      h=self.h, w=self.w, k=self.k, stride=self.stride, pad=self.pad,
                      oh=oh, ow=ow, parts=(part,))


class DepthwiseConv2d(Operator):
    """Depthwise convolution: ``groups = c_in = c_out = channels``."""

    channels: int
    h: int
    w: int
    k: int = 3
    stride: int = 1
    padding: Optional[int] = None
    batch: int = 1

    def kernel(self) -> Kernel:
        return Conv2d(c_in=self.channels, c_out=self.channels, h=self.h, w=self.w, k=self.k,
                      stride=self.stride, padding=self.padding, groups=self.channels,
                      batch=self.batch).kernel()


class Linear(Operator):
    """Fully connected layer ``out[n, co] = sum_ci x[n, ci] * w[co, ci]`` (torch's ``Linear``; the
    symbolic network layer of the same role is ``sn.nn.Dense``)."""

    c_in: int
    c_out: int
    batch: int = 1

    def kernel(self) -> Kernel:
        part = KernelPart(co_start=0, co_stop=self.c_out, oh_start=0, oh_stop=1,
                          in_start=0, in_stop=self.c_in, groups=1)
        return Kernel(kind="dense", batch=self.batch, c_in=self.c_in, c_out=self.c_out,
                      h=1, w=1, k=1, stride=1, pad=0, oh=1, ow=1, parts=(part,))


# files saved before the rename name the class by its old type name
pg.JSONConvertible.register("symnas.program.operators.Dense", Linear, override_existing=True)


# old name -> new name; the old one still works, with a warning
__getattr__ = renamed_names(__name__, globals(), {"Dense": "Linear"})
