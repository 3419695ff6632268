"""Compiled kernels for CPU timing, with the original conv compiled the same way.

Two back ends, chosen per kernel:

- ``"tvm"``: a kernel that is a chain of convolution-like primitives (``lower_to_layers``) becomes
  ``sn.nn.Conv``/``ReLU`` layers that ``sn.nn.compile_network`` compiles to TVM kernels
  (``sn.program``'s conv operators: k x k, k x 1, 1 x k windows, dilated or not; the fastest measured
  CPU template each);
- ``"inductor"``: any other kernel (shift, broadcast, fold, softmax, matmul...) through
  ``torch.compile`` (Inductor, weights frozen), since ``sn.program`` has no operator for those.

A third, ``"ort"`` (ONNX Runtime on the torch module exported to ONNX, native ops as plain convs),
serves any kernel when asked for by name.

``compile_kernel(kernel, env)`` returns ``(callable, backend)``; ``compile_conv(env, backend)``
the original ``3x3`` conv through the same back end; ``time_callable`` the batch-1 latency.

Example::

    import torch, symnas as sn
    env = {"C": 16, "O": 16, "H": 8, "W": 8, "S": 1}
    fast, backend = sn.kas.compile_kernel(sn.kas.depthwise_separable(), env, backend="inductor")
    print(backend, sn.kas.time_callable(fast, torch.randn(1, 16, 8, 8), repeat=5))
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, Optional, Tuple

import torch

from symnas.kas.kernel import Kernel
from symnas.kas.layer import lower_to_layers, transfer_weights
from symnas.kas.torch_module import KernelModule

__all__ = ["compile_kernel", "compile_conv", "compile_module", "time_callable", "kernel_backend"]


def kernel_backend(kernel: Kernel, env: Dict[str, int]) -> str:
    """'tvm' when the kernel lowers to conv layers TVM covers, else 'inductor'."""
    return "tvm" if lower_to_layers(kernel, env) is not None else "inductor"


@contextlib.contextmanager
def _frozen():
    import torch._inductor.config as config  # pylint: disable=import-outside-toplevel
    old = config.freezing
    config.freezing = True
    try:
        yield
    finally:
        config.freezing = old


def compile_module(module: torch.nn.Module, example: torch.Tensor) -> Callable:
    """``torch.compile`` (Inductor, frozen weights) of an inference module, compiled on ``example``."""
    module = module.eval()
    with torch.no_grad(), _frozen():
        fast = torch.compile(module, dynamic=False)
        fast(example)

    def run(x):
        with torch.no_grad():
            return fast(x)
    return run


def _tvm(layers, in_shape, weights_from=None, kernel=None):
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    net = snn.Sequential(layers)
    model = net.build(in_shape).eval()
    if weights_from is not None:
        transfer_weights(weights_from, kernel, model)
    compiled = snn.compile_network(net, model, in_shape=in_shape, tune=True)

    def run(x):
        return compiled(x)
    return run


def _ort(module: torch.nn.Module, example: torch.Tensor) -> Callable:
    from symnas.nn.runtimes import ONNXRuntime  # pylint: disable=import-outside-toplevel
    runtime = ONNXRuntime()
    if runtime.missing():
        raise ValueError(f"back end 'ort': {runtime.missing()}")
    return runtime.prepare(module.eval(), example)


def compile_kernel(kernel: Kernel, env: Dict[str, int], backend: Optional[str] = None,
                   module: Optional[KernelModule] = None) -> Tuple[Callable, str]:
    """(batch-1 callable, back end) for ``kernel`` at ``env``; ``backend`` None picks TVM where it covers
    the kernel, else Inductor; ``"ort"``: ONNX Runtime. ``module`` supplies trained weights (else fresh
    ones)."""
    module = module if module is not None else KernelModule(kernel, env)
    backend = backend or kernel_backend(kernel, module.env)
    in_shape = (module.env["C"], module.env["H"], module.env["W"])
    if backend == "tvm":
        layers = lower_to_layers(kernel, module.env)
        if layers is None:
            raise ValueError(f"the kernel {' -> '.join(kernel.names())} does not lower to TVM conv kernels")
        return _tvm(layers, in_shape, module, kernel), "tvm"
    if backend == "ort":
        return _ort(module, torch.randn(1, *in_shape)), "ort"
    if backend != "inductor":
        raise ValueError(f"unknown backend {backend!r}: 'tvm', 'ort' or 'inductor'")
    return compile_module(module, torch.randn(1, *in_shape)), "inductor"


def compile_conv(env: Dict[str, int], backend: str, k: int = 3, groups: int = 1) -> Callable:
    """The original ``k x k`` conv of a target through ``backend`` (the baseline of a kernel's timing)."""
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    in_shape = (env["C"], env["H"], env["W"])
    layer = snn.Conv(env.get("O", env["C"]), k, stride=env.get("S", 1), groups=groups)
    if backend == "tvm":
        return _tvm([layer], in_shape)
    if backend == "ort":
        return _ort(layer.build(in_shape), torch.randn(1, *in_shape))
    if backend != "inductor":
        raise ValueError(f"unknown backend {backend!r}: 'tvm', 'ort' or 'inductor'")
    return compile_module(layer.build(in_shape), torch.randn(1, *in_shape))


def time_callable(fn: Callable, x: torch.Tensor, repeat: int = 20, number: int = 10) -> float:
    """The minimum over ``repeat`` rounds of the mean latency (ms) of ``number`` calls."""
    with torch.no_grad():
        fn(x)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn(x)
            best = min(best, (time.perf_counter() - start) * 1000 / number)
    return best
