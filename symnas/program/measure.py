"""Timing kernels on this machine, and the baselines they are compared with.

All figures come from one process with the same thread count: TVM's runtime reads
``TVM_NUM_THREADS`` (set to the core count when ``symnas.program`` is imported,
before TVM starts) and torch gets ``torch.set_num_threads`` of the same number.

Example::

    m = Schedule(conv, steps).measure()         # Measurement(latency_ms=..., flops=..., ...)
    torch_ms = time_torch_conv(conv)            # oneDNN baseline

TVM's auto-scheduler baseline is ``symnas.program.tuning.tune_metaschedule``.
"""
import dataclasses
import os
import statistics
import time
from typing import List, Optional

import numpy as np

from symnas.program.lower_tvm import TargetLike, resolve_target


@dataclasses.dataclass
class Measurement:
    """Median latency of a compiled kernel with its cost counts."""

    latency_ms: float
    flops: int
    params: int
    target: str = "llvm"
    latency_std_ms: float = 0.0
    repeats: List[float] = dataclasses.field(default_factory=list)

    @property
    def gflops_per_s(self) -> float:
        return self.flops / (self.latency_ms * 1e6) if self.latency_ms > 0 else float("inf")


def num_threads() -> int:
    return int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))


def time_module(executable, args, number: int = 0, repeat: int = 5,
                min_repeat_ms: float = 20.0, device=None, cold_weights: bool = False) -> List[float]:
    """Per-call milliseconds of `executable['main']`, one value per repeat.

    ``cold_weights=True`` flushes every argument but the first (the weights and the output)
    from the CPU caches before each call, one call per repeat, as a layer of a network at
    batch 1 finds them when the network's weights do not fit the cache; the first argument
    (the activation, just written by the layer before) stays warm.
    """
    import tvm  # pylint: disable=import-outside-toplevel

    device = device or tvm.cpu()
    runtime = executable.jit() if hasattr(executable, "jit") else executable
    if cold_weights:
        evaluator = runtime.time_evaluator("main", device, number=1, repeat=max(repeat, 10),
                                           f_preproc="cache_flush_cpu_non_first_arg")
        return [r * 1e3 for r in evaluator(*args).results]
    if number <= 0:
        # Calibrate so one repeat lasts about min_repeat_ms.
        func = runtime["main"]
        func(*args)
        start = time.perf_counter()
        func(*args)
        once = max(time.perf_counter() - start, 1e-6)
        number = max(1, int(min_repeat_ms / 1e3 / once))
    evaluator = runtime.time_evaluator("main", device, number=number, repeat=repeat)
    return [r * 1e3 for r in evaluator(*args).results]


def time_schedule(schedule, target: TargetLike = None, number: int = 0, repeat: int = 5,
                  min_repeat_ms: float = 20.0, cold_weights: bool = False,
                  prologue: bool = False) -> Measurement:
    """Builds `schedule` for the CPU target and times it with TVM's time evaluator
    (``cold_weights``: see :func:`time_module`; ``prologue``: with the input's batch norm +
    ReLU fused, see ``Kernel.te_tensors``)."""
    import tvm  # pylint: disable=import-outside-toplevel

    resolved = resolve_target(target)
    if resolved.kind.name != "llvm":
        raise ValueError("measure() times on this machine's CPU; CUDA kernels are timed "
                         "by benchmarks/gpu_conv.py on the GPU machine")
    executable = schedule.build(resolved, prologue=prologue)
    x, weights = schedule.random_inputs()
    kernel = schedule.kernel()
    weights = [kernel.pack_weight(w) for w in weights]
    device = tvm.cpu()
    affine = [np.random.default_rng(0).uniform(0.5, 1.5, x.shape[1]).astype("float32"),
              np.zeros(x.shape[1], "float32")] if prologue else []
    args = [tvm.runtime.tensor(a, device) for a in [x] + weights + affine]
    args.append(tvm.runtime.tensor(np.zeros(schedule.output_shape, "float32"), device))
    results = time_module(executable, args, number, repeat, min_repeat_ms, device, cold_weights)
    return Measurement(latency_ms=statistics.median(results), flops=schedule.flops,
                       params=schedule.params, target=str(resolved),
                       latency_std_ms=statistics.pstdev(results), repeats=results)


def time_torch(module, x, repeat: int = 5, min_repeat_ms: float = 20.0,
               threads: Optional[int] = None) -> List[float]:
    """Per-call milliseconds of a torch module under no_grad, at `threads` (default: TVM's
    thread count)."""
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(threads or num_threads())
    with torch.no_grad():
        for _ in range(3):
            module(x)
        start = time.perf_counter()
        module(x)
        once = max(time.perf_counter() - start, 1e-6)
        number = max(1, int(min_repeat_ms / 1e3 / once))
        results = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                module(x)
            results.append((time.perf_counter() - start) / number * 1e3)
    return results


def time_torch_conv(op, repeat: int = 5, threads: Optional[int] = None) -> float:
    """Median ms of the untransformed operator as a plain torch layer (oneDNN on CPU)."""
    import torch  # pylint: disable=import-outside-toplevel

    kernel = op.kernel()
    if kernel.kind == "dense":
        module = torch.nn.Linear(kernel.c_in, kernel.c_out, bias=False)
    else:
        module = torch.nn.Conv2d(kernel.c_in, kernel.c_out, (kernel.kh, kernel.kw), kernel.stride,
                                 kernel.padding, dilation=kernel.dilation, groups=kernel.parts[0].groups,
                                 bias=False)
    module.eval()
    x = torch.randn(kernel.input_shape())
    return statistics.median(time_torch(module, x, repeat, threads=threads))
