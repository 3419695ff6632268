"""Operators as loop nests with named iterators.

A convolution is the loop nest ``n, co, oh, ow`` (spatial) x ``ci, kh, kw``
(reduction); a dense layer is ``n, co`` x ``ci``. The names are the ones TVM
gives the loops of the TE compute, so steps can name them.

Example::

    conv = Conv2d(c_in=64, c_out=64, h=32, w=32, k=3)
    conv.loop_extents()   # {'n': 1, 'co': 64, 'oh': 32, 'ow': 32, 'ci': 64, 'kh': 3, 'kw': 3}
    Conv2d(c_in=64, c_out=64, h=32, w=32, k=3, kw=1).loop_extents()["kw"]   # 1: a 3 x 1 window
"""
from typing import Dict, Optional, Tuple, Union

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
    """2-D convolution, NCHW input, OIHW weight (torch's ``F.conv2d``).

    The window is ``k`` rows by ``kw`` columns (``kw=None``: square), its taps ``dilation`` apart;
    ``padding`` is an int or (rows, columns), ``None`` meaning half the dilated window on each
    axis (``(dilation * (k - 1) + 1) // 2``: 'same' at stride 1 for odd windows).
    """

    c_in: int
    c_out: int
    h: int
    w: int
    k: int = 3
    stride: int = 1
    padding: Optional[Union[int, Tuple[int, int]]] = None
    groups: int = 1
    batch: int = 1
    kw: Optional[int] = None
    dilation: int = 1

    def _on_bound(self):
        super()._on_bound()
        for name in ("c_in", "c_out", "h", "w", "k", "kw", "stride", "groups", "batch", "dilation"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {value}")
        if isinstance(self.padding, (tuple, list)) and (
                len(self.padding) != 2 or any(not isinstance(p, int) or p < 0 for p in self.padding)):
            raise ValueError(f"{type(self).__name__}.padding must be an int or (rows, columns) >= 0, "
                             f"got {self.padding!r}")
        if isinstance(self.padding, int) and self.padding < 0:
            raise ValueError(f"{type(self).__name__}.padding must be >= 0, got {self.padding}")
        if isinstance(self.groups, int) and isinstance(self.c_in, int):
            if self.c_in % self.groups or self.c_out % self.groups:
                raise ValueError(f"groups={self.groups} must divide c_in={self.c_in} and "
                                 f"c_out={self.c_out}")

    @property
    def window(self) -> Tuple[int, int]:
        """(rows, columns) of the window."""
        return (self.k, self.k if self.kw is None else self.kw)

    @property
    def pads(self) -> Tuple[int, int]:
        """(rows, columns) of zero padding on each side."""
        if self.padding is None:
            return tuple((self.dilation * (k - 1) + 1) // 2 for k in self.window)
        if isinstance(self.padding, int):
            return (self.padding, self.padding)
        return tuple(self.padding)

    @property
    def pad(self) -> int:
        """The row padding (the padding of a square window's both axes)."""
        return self.pads[0]

    def kernel(self) -> Kernel:
        (kh, kw), (ph, pw), d = self.window, self.pads, self.dilation
        oh = (self.h + 2 * ph - d * (kh - 1) - 1) // self.stride + 1
        ow = (self.w + 2 * pw - d * (kw - 1) - 1) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r} has an empty output ({oh}x{ow})")
        part = KernelPart(co_start=0, co_stop=self.c_out, oh_start=0, oh_stop=oh,
                          in_start=0, in_stop=self.c_in, groups=self.groups)
        return Kernel(kind="conv2d", batch=self.batch, c_in=self.c_in, c_out=self.c_out,
                      h=self.h, w=self.w, k=kh, stride=self.stride, pad=ph,
                      oh=oh, ow=ow, parts=(part,), k_w=0 if kw == kh else kw,
                      pad_w=-1 if pw == ph else pw, dilation=d)


class DepthwiseConv2d(Operator):
    """Depthwise convolution: ``groups = c_in = c_out = channels``."""

    channels: int
    h: int
    w: int
    k: int = 3
    stride: int = 1
    padding: Optional[Union[int, Tuple[int, int]]] = None
    batch: int = 1
    kw: Optional[int] = None
    dilation: int = 1

    def kernel(self) -> Kernel:
        return Conv2d(c_in=self.channels, c_out=self.channels, h=self.h, w=self.w, k=self.k,
                      stride=self.stride, padding=self.padding, groups=self.channels,
                      batch=self.batch, kw=self.kw, dilation=self.dilation).kernel()


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
