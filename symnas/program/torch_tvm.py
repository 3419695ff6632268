"""A compiled TVM kernel as a torch module, for inference inside a torch model.

The kernel reads torch's tensors in place (DLPack, no copy) and writes a fresh output
tensor. Weights are packed once, at construction, into the layout the kernel takes.

Threads: TVM's worker pool and torch's OpenMP workers both spin-wait after their parallel
regions; on a small CPU the two pools then fight for the cores whenever TVM kernels and
multi-threaded torch ops alternate (measured here: a TVM conv followed by a ReLU ran 2-4x
slower than the two alone). ``torch_threads`` runs the torch side on one thread, so
only TVM's pool is parallel; ``sn.nn.compile_network`` does this for whole networks.

Example::

    import torch, symnas as sn
    sched = sn.program.Schedule(sn.program.Conv2d(c_in=16, c_out=16, h=8, w=8),
                                sn.program.cpu_conv_template(4, 2))
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
    fast = sn.program.TVMKernelModule(sched, [conv.weight])
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(fast(x), conv(x), atol=1e-4, rtol=1e-4)
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from symnas.program.lower_tvm import TargetLike, target_kind


_ALIGNMENT = 64   # bytes; what TVM's generated code assumes of every buffer


class TVMKernelModule(nn.Module):
    """Runs ``schedule``'s compiled CPU kernel on torch tensors (float32, inference only); ``schedule``
    may also be a ``ConvChain`` (two convs in one function: its two weights, the epilogue on the second).

    ``weights`` are the kernel's weights in OIHW order (one per kernel part, as
    ``schedule.weight_shapes``); ``bias`` (optional, one value per output channel) and,
    with ``relu``, a ReLU are fused into the kernel's output write (``sn.nn.compile_network``
    folds each conv's batch norm into its weights and this bias). With ``residual`` the
    module is called as ``module(x, residual)`` and adds ``residual`` (the output's shape,
    a residual block's shortcut) before the ReLU, in the same write. ``in_scale`` and
    ``in_shift`` (one value per input channel, given together) fuse a batch norm and ReLU
    *before* the conv: it reads ``relu(x * in_scale + in_shift)`` (pre-activation networks).
    """

    def __init__(self, schedule, weights: Sequence, bias: Optional[torch.Tensor] = None,
                 target: TargetLike = None, relu: bool = False, residual: bool = False,
                 in_scale: Optional[torch.Tensor] = None, in_shift: Optional[torch.Tensor] = None):
        super().__init__()
        if target_kind(target) != "llvm":
            raise ValueError("TVMKernelModule runs kernels compiled for this CPU; use a CPU target")
        # a Schedule packs each weight by its kernel; a ConvChain by its conv (pack_weight_at)
        pack = getattr(schedule, "pack_weight_at", None) or (lambda i, w, kernel=schedule.kernel(): kernel.pack_weight(w))
        shapes = [tuple(s) for s in schedule.weight_shapes]
        weights = list(weights) if isinstance(weights, (list, tuple, nn.ParameterList)) else [weights]
        if len(weights) != len(shapes):
            raise ValueError(f"the kernel takes {len(shapes)} weight tensors, got {len(weights)}")
        for i, (w, shape) in enumerate(zip(weights, shapes)):
            if tuple(w.shape) != shape:
                raise ValueError(f"weight {i} has shape {tuple(w.shape)}, the kernel expects {shape}")
        self.schedule = schedule
        self.input_shape = tuple(schedule.input_shape)
        self.output_shape = tuple(schedule.output_shape)
        self.relu = relu
        self.residual = residual
        if bias is None and (relu or residual):
            bias = torch.zeros(self.output_shape[1])
        if bias is not None and tuple(bias.reshape(-1).shape) != (self.output_shape[1],):
            raise ValueError(f"bias has {bias.numel()} values, the kernel has {self.output_shape[1]} "
                             "output channels")
        if (in_scale is None) != (in_shift is None):
            raise ValueError("give in_scale and in_shift together (the prologue's batch norm)")
        self.prologue = in_scale is not None
        if self.prologue:
            for what, v in (("in_scale", in_scale), ("in_shift", in_shift)):
                if v.numel() != self.input_shape[1]:
                    raise ValueError(f"{what} has {v.numel()} values, the kernel has {self.input_shape[1]} "
                                     "input channels")
        epilogue = None if bias is None else (
            "bias" + ("_residual" if residual else "") + ("_relu" if relu else ""))
        self._runtime = schedule.build(target, epilogue, self.prologue).jit()   # keeps the library alive
        self._func = self._runtime["main"]
        for i, w in enumerate(weights):
            array = w.detach().cpu().numpy() if hasattr(w, "detach") else np.asarray(w)
            packed = pack(i, np.ascontiguousarray(array, dtype=np.float32))
            # clone: torch's allocator aligns to 64 bytes, numpy's only to 16, and TVM's
            # vector loads assume the 64-byte alignment (misaligned buffers segfault)
            self.register_buffer(f"weight{i}", torch.from_numpy(np.ascontiguousarray(packed)).clone())
        self._num_weights = len(weights)
        if bias is not None:
            self.register_buffer("bias", bias.detach().reshape(-1).to(torch.float32).contiguous().clone())
        else:
            self.bias = None
        for what, v in (("in_scale", in_scale), ("in_shift", in_shift)):
            self.register_buffer(what, None if v is None else
                                 v.detach().reshape(-1).to(torch.float32).contiguous().clone())

    def extra_repr(self) -> str:
        fused = "" if self.bias is None else (" + bias" + (" + residual" if self.residual else "")
                                              + (" + relu" if self.relu else ""))
        before = "batch norm + relu, then " if self.prologue else ""
        return f"{self.input_shape} -> {self.output_shape}: {before}{self.schedule.describe()}{fused}"

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = _kernel_input(x, self.input_shape, "input")
        extra = () if self.bias is None else (self.bias,)
        if self.residual:
            if residual is None:
                raise TypeError("this kernel adds a residual: call it as module(x, residual)")
            extra += (_kernel_input(residual, self.output_shape, "residual"),)
        elif residual is not None:
            raise TypeError("this kernel was compiled without a residual input (residual=False)")
        if self.prologue:
            extra += (self.in_scale, self.in_shift)
        out = torch.empty(self.output_shape, dtype=torch.float32)
        self._func(x, *(getattr(self, f"weight{i}") for i in range(self._num_weights)), *extra, out)
        return out


def _kernel_input(x: torch.Tensor, shape, what: str) -> torch.Tensor:
    """``x`` as the compiled kernel reads it (contiguous, aligned), or a clear error."""
    if tuple(x.shape) != shape:
        raise ValueError(f"the compiled kernel takes {what} {shape}, got {tuple(x.shape)} "
                         f"(the batch size is part of the compiled operator)")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"the compiled kernel takes float32 CPU tensors, got {x.dtype} on {x.device}")
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("TVMKernelModule is for inference: it has no backward; "
                           "call it under torch.no_grad() or train the schedule's to_torch() module")
    x = x.contiguous()
    if x.data_ptr() % _ALIGNMENT:
        x = x.clone()                 # a view at an offset: TVM assumes aligned buffers
    return x


@contextlib.contextmanager
def torch_threads(threads: int = 1):
    """Runs torch's intra-op work on ``threads`` threads inside the block, then restores."""
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)
