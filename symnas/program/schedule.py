"""A kernel schedule: an operator plus the list of steps that transform it.

The step list *is* the schedule: printable, JSON-serialisable and searchable
position by position. Neural steps are folded into the kernel's compute first
(the TE PrimFunc is regenerated), then the program steps are replayed on every
convolution block through ``tvm.s_tir.Schedule``.

Example::

    import pyglove as pg, symnas as sn
    conv = sn.program.Conv2d(c_in=64, c_out=64, h=32, w=32, k=3)
    sched = sn.program.Schedule(conv, steps=[sn.program.Group(2), sn.program.Split("co", 16)])
    sched.output_shape, sched.flops, sched.params
    module = sched.to_torch()                  # equivalent nn.Module with its own weights
    print(sched.measure().latency_ms)          # compiled for this CPU and timed
"""
from typing import List, Optional, Sequence

import numpy as np
import pyglove as pg

from symnas.program.errors import IllegalTransformation, tvm_reason
from symnas.program.kernel import Kernel
from symnas.program.loop_nest import LoopNest, StepError
from symnas.program.lower_tvm import (TargetLike, compile_module, resolve_target,
                                      schedule_helper_blocks, target_kind)
from symnas.program.operators import Operator
from symnas.program.transformations import Step


class Schedule(pg.Object):
    """An operator and the transformation steps applied to it, in order (``None`` entries
    are skipped, which gives search spaces variable-length sequences)."""

    op: Operator
    steps: List[Optional[Step]] = []

    # ---- the neural state ---------------------------------------------------
    def active_steps(self) -> List[Step]:
        return [s for s in self.steps if s is not None]

    def kernel(self) -> Kernel:
        """The operator's kernel after all neural steps (raises IllegalTransformation)."""
        return _fold_kernel(self.op, tuple(self._indexed_steps()))

    def _indexed_steps(self):
        return [(i, s) for i, s in enumerate(self.steps) if s is not None]

    @property
    def output_shape(self):
        return self.kernel().output_shape()

    @property
    def input_shape(self):
        return self.kernel().input_shape()

    @property
    def weight_shapes(self):
        return self.kernel().weight_shapes()

    @property
    def flops(self) -> int:
        return self.kernel().flops()

    @property
    def params(self) -> int:
        return self.kernel().params()

    def to_torch(self, weights: Optional[Sequence] = None):
        """The equivalent ``torch.nn.Module`` (NCHW in and out), owning its weights."""
        from symnas.program.torch_module import TorchKernelModule  # pylint: disable=import-outside-toplevel

        return TorchKernelModule(self.kernel(), weights)

    # ---- TVM ---------------------------------------------------------------
    def lower(self, target: TargetLike = None, epilogue: Optional[str] = None, prologue: bool = False):
        """The scheduled TVM IRModule (raises IllegalTransformation naming the bad step).

        ``epilogue`` (one of ``Kernel``'s ``EPILOGUES``, CPU only) fuses a per-channel bias
        (a folded batch norm), optionally a residual input and a ReLU into the kernel's
        output write; the kernel then takes the bias (and the residual) after its weights.
        ``prologue`` (CPU only) applies a per-input-channel scale, shift and ReLU to the
        input as it is read (a pre-activation batch norm + ReLU); the kernel then takes
        ``in_scale`` and ``in_shift`` after those (``Kernel.te_tensors``).
        """
        import tvm  # pylint: disable=import-outside-toplevel
        from tvm import s_tir  # pylint: disable=import-outside-toplevel

        kernel = self.kernel()
        kind = target_kind(target)
        if (epilogue is not None or prologue) and kind != "llvm":
            raise ValueError("a fused epilogue or prologue is implemented for CPU kernels only")
        sch = s_tir.Schedule(kernel.prim_func(epilogue, prologue))
        initial = list(kernel.loop_extents())
        for block_name in kernel.block_names():
            nest = LoopNest(initial, sch, sch.get_sblock(block_name), target_kind=kind)
            for position, step in self._indexed_steps():
                if step.changes_kernel:
                    continue
                try:
                    step.apply(nest)
                except StepError as error:
                    raise IllegalTransformation(str(error), step, position) from None
                except (RuntimeError, ValueError, TypeError, AttributeError) as error:
                    raise IllegalTransformation(tvm_reason(error), step, position) from None
        try:
            schedule_helper_blocks(sch, kind)
        except RuntimeError as error:
            raise IllegalTransformation(f"helper blocks: {tvm_reason(error)}") from None
        return sch.mod

    def build(self, target: TargetLike = None, epilogue: Optional[str] = None, prologue: bool = False):
        """Compiles for `target` (this CPU by default); cached by structural hash."""
        return build_lowered(self.lower(target, epilogue, prologue), target)

    def cuda_source(self) -> str:
        """The CUDA C source TVM generates (no GPU needed; needs bind steps)."""
        executable = self.build("cuda")
        return "\n".join(m.inspect_source() for m in executable.mod.imports)

    def random_inputs(self, seed: int = 0):
        """A random input and weights with this kernel's shapes (float32 numpy)."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, tuple(self.input_shape)).astype("float32")
        weights = [rng.uniform(-1, 1, s).astype("float32") for s in self.weight_shapes]
        return x, weights

    def run(self, x, weights, target: TargetLike = None) -> np.ndarray:
        """Runs the TVM kernel on CPU: numpy/torch input and weights in, numpy output out."""
        import tvm  # pylint: disable=import-outside-toplevel

        if target_kind(target) != "llvm":
            raise ValueError("run() executes on this CPU; use a CPU target")
        func = self.build(target).jit()["main"]
        kernel = self.kernel()
        arrays = [_numpy(x)] + [_numpy(w) for w in _as_list(weights)]
        shapes = [tuple(self.input_shape)] + [tuple(s) for s in self.weight_shapes]
        if len(arrays) != len(shapes):
            raise ValueError(f"expected {len(shapes) - 1} weight tensors, got {len(arrays) - 1}")
        for i, (array, shape) in enumerate(zip(arrays, shapes)):
            if array.shape != shape:
                raise ValueError(f"argument {i} has shape {array.shape}, expected {shape}")
        arrays = [arrays[0]] + [kernel.pack_weight(w) for w in arrays[1:]]
        device = tvm.cpu()
        args = [tvm.runtime.tensor(a, device) for a in arrays]
        out = tvm.runtime.tensor(np.zeros(self.output_shape, "float32"), device)
        func(*args, out)
        return out.numpy()

    def measure(self, target: TargetLike = None, number: int = 0, repeat: int = 5,
                min_repeat_ms: float = 20.0, cold_weights: bool = False, prologue: bool = False):
        """Compiles and times the kernel; returns a :class:`Measurement`. ``cold_weights``
        times each call with the weights flushed from the caches (a layer inside a network
        at batch 1) instead of warm, back-to-back calls; ``prologue`` times it with the
        input's batch norm + ReLU fused (``lower``)."""
        from symnas.program.measure import time_schedule  # pylint: disable=import-outside-toplevel

        return time_schedule(self, target, number=number, repeat=repeat,
                             min_repeat_ms=min_repeat_ms, cold_weights=cold_weights, prologue=prologue)

    def describe(self) -> str:
        """A one-line trace of the steps."""
        return " -> ".join(pg.format(s, compact=True) for s in self.active_steps()) or "(none)"


def _fold_kernel(op: Operator, indexed_steps) -> Kernel:
    try:
        kernel = op.kernel()
    except ValueError as error:
        raise IllegalTransformation(str(error)) from None
    nest = LoopNest(list(kernel.loop_extents()))
    for position, step in indexed_steps:
        try:
            if step.changes_kernel:
                kernel = step.apply_to_kernel(kernel, nest)
            else:
                step.apply(nest)
        except StepError as error:
            raise IllegalTransformation(str(error), step, position) from None
    try:
        kernel.check()
    except ValueError as error:
        raise IllegalTransformation(str(error)) from None
    return kernel


def _as_list(weights) -> list:
    if isinstance(weights, (list, tuple)):
        return list(weights)
    return [weights]


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype="float32"))


def build_lowered(mod, target: TargetLike = None):
    """Compiles a lowered module (cached); a TVM failure becomes IllegalTransformation naming it."""
    try:
        return compile_module(mod, target)
    except (RuntimeError, ValueError) as error:
        raise IllegalTransformation(f"build failed: {tvm_reason(error)}") from None
