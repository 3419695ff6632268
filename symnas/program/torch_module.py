"""The torch module equivalent to a (neural-transformed) kernel, for training.

Example::

    module = Schedule(Conv2d(c_in=16, c_out=16, h=8, w=8), [Group(2)]).to_torch()
    y = module(torch.randn(1, 16, 8, 8))
"""
import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from symnas._deprecation import renamed_names
from symnas.program.kernel import Kernel


class _GatherChannels(torch.autograd.Function):
    """``x.index_select(dim, index)`` for distinct indices, whose gradient is a gather or a copy.

    torch's own gradient of ``index_select`` adds with atomics, which made it a fifth of a searched
    ResNet-34's training step on the GPU. ``inverse`` (given when ``index`` is a permutation) turns the
    gradient into one more gather.
    """

    @staticmethod
    def forward(ctx, x, dim, index, inverse):  # pylint: disable=arguments-differ
        ctx.dim, ctx.shape = dim, x.shape
        ctx.save_for_backward(index, inverse)
        return x.index_select(dim, index)

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        index, inverse = ctx.saved_tensors
        if inverse is not None:
            return grad.index_select(ctx.dim, inverse), None, None, None
        return grad.new_zeros(ctx.shape).index_copy_(ctx.dim, index, grad), None, None, None


class TorchKernelModule(nn.Module):
    """Computes in torch what :meth:`Kernel.te_tensors` computes (``TVMKernelModule`` runs the TVM
    kernel itself); owns one weight per kernel part. ``sn.nn.TransformedConv`` is the symbolic layer."""

    def __init__(self, kernel: Kernel, weights: Optional[Sequence] = None):
        super().__init__()
        kernel.check()
        self.kernel = kernel
        shapes = kernel.weight_shapes()
        self.weights = nn.ParameterList()
        for i, shape in enumerate(shapes):
            if weights is not None:
                tensor = torch.as_tensor(weights[i], dtype=torch.float32).clone()
                if tuple(tensor.shape) != tuple(shape):
                    raise ValueError(f"weight {i} has shape {tuple(tensor.shape)}, "
                                     f"expected {shape}")
            else:
                tensor = torch.empty(shape)
            self.weights.append(nn.Parameter(tensor))
        if weights is None:
            self.reset_parameters()
        self._register_channel_indices()

    def _register_channel_indices(self) -> None:
        """Each part's input channels (None: all, in order), as buffers so that ``.to(device)`` moves
        them once: an index copied to the GPU in every forward waits for the GPU each time."""
        kernel = self.kernel
        self._index_names: List[Optional[str]] = []
        self._inverse_names: List[Optional[str]] = []   # set where the index is a permutation
        for i, part in enumerate(kernel.parts):
            channels = kernel.input_channels(part)
            self._inverse_names.append(None)
            if channels == list(range(kernel.c_in)):
                self._index_names.append(None)
                continue
            if len(set(channels)) != len(channels):
                raise ValueError(f"part {i} reads an input channel twice: {channels}")
            self._index_names.append(f"channel_index_{i}")
            self.register_buffer(f"channel_index_{i}", torch.tensor(channels), persistent=False)
            if sorted(channels) == list(range(kernel.c_in)):  # a permutation (a channel shuffle)
                inverse = torch.empty(len(channels), dtype=torch.long)
                inverse[torch.tensor(channels)] = torch.arange(len(channels))
                self.register_buffer(f"channel_inverse_{i}", inverse, persistent=False)
                self._inverse_names[i] = f"channel_inverse_{i}"
        # one part over every output row, no spatial bottleneck: F.conv2d(x, w, stride, padding, groups)
        self._plain = (kernel.kind == "conv2d" and len(kernel.parts) == 1 and kernel.bh == kernel.bw == 1
                       and not kernel.has_row_partitions())

    def __setstate__(self, state) -> None:
        """Modules pickled before 2026-12-02 (``torch.save``) kept their indices in a plain list."""
        super().__setstate__(state)
        if "_index_names" not in self.__dict__:
            self.__dict__.pop("_channel_index", None)
            self._register_channel_indices()
            device = self.weights[0].device if len(self.weights) else None
            if device is not None:
                for name, buffer in self._buffers.items():
                    self._buffers[name] = buffer.to(device)

    def reset_parameters(self) -> None:
        """Draws every part's weight as ``nn.Conv2d`` / ``nn.Linear`` do (from torch's global generator)."""
        for weight in self.weights:
            nn.init.kaiming_uniform_(weight.data, a=math.sqrt(5))

    def extra_repr(self) -> str:
        k = self.kernel
        parts = ", ".join(f"[co {p.co_start}:{p.co_stop}/{p.co_factor}, oh {p.oh_start}:"
                          f"{p.oh_stop}, g={p.groups}{' shuffled' if p.shuffle else ''}, ci/{p.ci_factor}]"
                          for p in k.parts)
        window = f"{k.kh}" if k.kh == k.kw else f"{k.kh}x{k.kw}"
        pad = f"{k.pad_h}" if k.pad_h == k.pad_cols else f"{k.pad_h}x{k.pad_cols}"
        dilation = f" d={k.dilation}" if k.dilation != 1 else ""
        return (f"{k.kind} {k.c_in}->{k.c_out} k={window}{dilation} s={k.stride} p={pad} "
                f"spatial/({k.bh},{k.bw}) parts: {parts}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        if tuple(x.shape[1:]) != tuple(k.input_shape()[1:]):
            raise ValueError(f"input shape {tuple(x.shape)} does not match the kernel's "
                             f"{k.input_shape()}")
        if self._plain:
            # one part that is an ordinary (grouped, strided) convolution of the selected channels:
            # torch pads inside the convolution, no padded copy, no slicing
            return F.conv2d(self._select(x, 0), self.weights[0], stride=k.stride, padding=k.padding,
                            dilation=k.dilation, groups=k.parts[0].groups)
        if k.kind == "dense":
            outputs = [self._dense_part(x, i) for i in range(len(k.parts))]
        else:
            ph, pw = k.padding
            padded = F.pad(x, [pw, pw, ph, ph]) if ph or pw else x
            outputs = [self._conv_part(padded, i) for i in range(len(k.parts))]
        if len(outputs) == 1:
            return outputs[0]
        shape = (x.shape[0],) + tuple(k.output_shape()[1:])
        layout = (torch.channels_last if len(shape) == 4 and x.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)  # keep the caller's layout
        out = torch.empty(shape, dtype=outputs[0].dtype, device=x.device, memory_format=layout).zero_()
        for (c0, r0), part, y in zip(k.placements(), k.parts, outputs):
            if k.kind == "dense":
                out[:, c0:c0 + part.c_out] = y
            else:
                out[:, c0:c0 + part.c_out, r0:r0 + k.rows(part)] = y
        return out

    def _select(self, x: torch.Tensor, i: int) -> torch.Tensor:
        name = self._index_names[i]
        if name is None:
            return x
        index = getattr(self, name).to(x.device)
        inverse_name = self._inverse_names[i]
        inverse = None if inverse_name is None else getattr(self, inverse_name).to(x.device)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # gather along the innermost (channel) dimension so the result stays channels_last
            return _GatherChannels.apply(x.permute(0, 2, 3, 1), 3, index, inverse).permute(0, 3, 1, 2)
        return _GatherChannels.apply(x, 1, index, inverse)

    def _conv_part(self, padded: torch.Tensor, i: int) -> torch.Tensor:
        k, part = self.kernel, self.kernel.parts[i]
        rows, cols = k.rows(part), k.cols
        step_h, step_w = k.stride * k.bh, k.stride * k.bw
        top = part.oh_start * k.stride
        xs = self._select(padded, i)
        span_h, span_w = k.window_span()
        xs = xs[:, :, top:top + (rows - 1) * step_h + span_h, :(cols - 1) * step_w + span_w]
        y = F.conv2d(xs, self.weights[i], stride=(step_h, step_w), dilation=k.dilation, groups=part.groups)
        return y[:, :, :rows, :cols]

    def _dense_part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        part = self.kernel.parts[i]
        xs = self._select(x, i)
        if part.groups == 1:
            return F.linear(xs, self.weights[i])
        n = x.shape[0]
        xs = xs.reshape(n, part.groups, part.ci_per_group)
        w = self.weights[i].reshape(part.groups, part.c_out // part.groups, part.ci_per_group)
        return torch.einsum("ngc,goc->ngo", xs, w).reshape(n, part.c_out)


# old name -> new name; the old one still works, with a warning
__getattr__ = renamed_names(__name__, globals(), {"TransformedConv": "TorchKernelModule"})
# (torch.save'd models of before the rename unpickle through the old name)
