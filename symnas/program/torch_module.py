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

from symnas.program.kernel import Kernel


class TransformedConv(nn.Module):
    """Computes what :meth:`Kernel.te_tensors` computes; owns one weight per kernel part."""

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
        self._channel_index: List[Optional[torch.Tensor]] = []
        for part in kernel.parts:
            channels = kernel.input_channels(part)
            contiguous = channels == list(range(kernel.c_in))
            self._channel_index.append(None if contiguous else torch.tensor(channels))

    def reset_parameters(self) -> None:
        """Draws every part's weight as ``nn.Conv2d`` / ``nn.Linear`` do (from torch's global generator)."""
        for weight in self.weights:
            nn.init.kaiming_uniform_(weight.data, a=math.sqrt(5))

    def extra_repr(self) -> str:
        k = self.kernel
        parts = ", ".join(f"[co {p.co_start}:{p.co_stop}/{p.co_factor}, oh {p.oh_start}:"
                          f"{p.oh_stop}, g={p.groups}{' shuffled' if p.shuffle else ''}, ci/{p.ci_factor}]"
                          for p in k.parts)
        return (f"{k.kind} {k.c_in}->{k.c_out} k={k.k} s={k.stride} p={k.pad} "
                f"spatial/({k.bh},{k.bw}) parts: {parts}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        if tuple(x.shape[1:]) != tuple(k.input_shape()[1:]):
            raise ValueError(f"input shape {tuple(x.shape)} does not match the kernel's "
                             f"{k.input_shape()}")
        if k.kind == "dense":
            outputs = [self._dense_part(x, i) for i in range(len(k.parts))]
        else:
            padded = F.pad(x, [k.pad] * 4) if k.pad else x
            outputs = [self._conv_part(padded, i) for i in range(len(k.parts))]
        if len(outputs) == 1:
            return outputs[0]
        out = outputs[0].new_zeros((x.shape[0],) + tuple(k.output_shape()[1:]))
        for (c0, r0), part, y in zip(k.placements(), k.parts, outputs):
            if k.kind == "dense":
                out[:, c0:c0 + part.c_out] = y
            else:
                out[:, c0:c0 + part.c_out, r0:r0 + k.rows(part)] = y
        return out

    def _select(self, x: torch.Tensor, i: int) -> torch.Tensor:
        index = self._channel_index[i]
        return x if index is None else x.index_select(1, index.to(x.device))

    def _conv_part(self, padded: torch.Tensor, i: int) -> torch.Tensor:
        k, part = self.kernel, self.kernel.parts[i]
        rows, cols = k.rows(part), k.cols
        step_h, step_w = k.stride * k.bh, k.stride * k.bw
        top = part.oh_start * k.stride
        xs = self._select(padded, i)
        xs = xs[:, :, top:top + (rows - 1) * step_h + k.k, :(cols - 1) * step_w + k.k]
        y = F.conv2d(xs, self.weights[i], stride=(step_h, step_w), groups=part.groups)
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
