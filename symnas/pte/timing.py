"""Whole networks timed at batch 1 on this CPU: compiled (every conv a TVM kernel) and baselines.

``compile_choice`` compiles a network with the kernels a search chose (the flat plan: one traced
call sequence, batch norms folded, ReLU and residual adds fused); ``end_to_end_timings`` times
several models in one process, rounds interleaved so that load changes hit every model alike;
``kernel_share`` splits a compiled network's time into its TVM kernels and the rest.

Example::

    compiled = sn.pte.compile_choice(net, model, programs)
    runs = sn.pte.end_to_end_timings({"torch": model, "tvm": compiled}, rounds=5)
    print({k: min(v) for k, v in runs.items()})
"""
from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Sequence

import torch

__all__ = ["compare_networks", "compile_choice", "end_to_end_timings", "kernel_share", "relax_latency", "torch_conv_timings",
           "torch_optimized"]

IMAGE = (1, 3, 32, 32)


def compile_choice(network, model: torch.nn.Module, programs: Dict[str, List[Any]]):
    """``sn.nn.compile_network`` of ``network`` (``model``'s weights, left unchanged) with the given
    program steps per conv path; every conv not in ``programs`` keeps its schedule's own."""
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    return snn.compile_network(network, copy.deepcopy(model), programs=programs)


def end_to_end_timings(models: Dict[str, Any], rounds: int = 5, image: Sequence[int] = IMAGE) -> Dict[str, List[float]]:
    """Batch-1 latency (ms) of each model per round (min of 3 calls each), all in this process,
    rounds interleaved. Compiled networks run their torch glue on one thread."""
    from symnas.program.measure import time_torch  # pylint: disable=import-outside-toplevel
    x = torch.randn(*image)
    runs: Dict[str, List[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            with torch.no_grad():
                runs[name].append(min(time_torch(model, x, repeat=3, min_repeat_ms=100.0)))
    return runs


def kernel_share(compiled, rounds: int = 20, image: Sequence[int] = IMAGE) -> Dict[str, Any]:
    """Per-call time (ms) of a compiled network split into its TVM kernels and the rest, measured
    inside the network (weights come from memory, not from a warm cache): ``CompiledNetwork.kernel_time``."""
    return compiled.kernel_time(torch.randn(*image), calls=rounds)


def torch_optimized(model: torch.nn.Module, image: Sequence[int] = IMAGE) -> torch.nn.Module:
    """Torch's own inference compilation of ``model``: traced, frozen, batch norm folded into the
    convs, oneDNN layouts (``torch.jit.optimize_for_inference``)."""
    with torch.no_grad():
        return torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(model).eval(), torch.randn(*image)))


def torch_conv_timings(ops: List[Any]) -> List[float]:
    """oneDNN latency (ms) of each conv operator alone, batch 1."""
    from symnas.program.measure import time_torch  # pylint: disable=import-outside-toplevel
    result = []
    for op in ops:
        conv = torch.nn.Conv2d(op.c_in, op.c_out, op.window, stride=op.stride, padding=op.pads,
                               dilation=op.dilation, groups=op.groups, bias=False).eval()
        with torch.no_grad():
            result.append(min(time_torch(conv, torch.randn(1, op.c_in, op.h, op.w), repeat=5, min_repeat_ms=20.0)))
    return result


def relax_latency(model: torch.nn.Module, repeat: int = 3, image: Sequence[int] = IMAGE) -> Dict[str, Any]:
    """The whole network through TVM's Relax frontend (``torch.export`` -> ``from_exported_program``
    -> ``tvm.compile`` with TVM's default CPU pipeline), untuned, batch 1: ``{"ms": best of repeat,
    "max_abs_error": vs torch}`` or ``{"error": why}`` (a baseline that fails is reported, not fatal)."""
    try:
        # pylint: disable=import-outside-toplevel
        import numpy as np
        import tvm
        from tvm import relax
        from tvm.relax.frontend.torch import from_exported_program
        from symnas.program.lower_tvm import host_target
        x = torch.randn(*image)
        with torch.no_grad():
            program = torch.export.export(copy.deepcopy(model).eval(), (x,))
        executable = tvm.compile(from_exported_program(program, keep_params_as_input=False),
                                 target=tvm.target.Target(host_target()))
        vm = relax.VirtualMachine(executable, tvm.cpu())
        data = tvm.runtime.tensor(x.numpy())
        out = vm["main"](data)
        out = out[0] if not hasattr(out, "numpy") else out
        with torch.no_grad():
            error = float(np.abs(out.numpy() - model.eval()(x).numpy()).max())
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            vm["main"](data)
            times.append((time.perf_counter() - start) * 1000)
        return {"ms": min(times), "runs": times, "max_abs_error": error}
    except Exception as e:   # pylint: disable=broad-except
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def compare_networks(networks: Dict[str, Any], programs: Dict[str, Dict[str, list]], rounds: int = 5,
                     baselines: Sequence[str] = ("torch",), seed: int = 0) -> Dict[str, Any]:
    """Compiles each symbolic network (label -> network) with its ``programs[label]`` (conv path ->
    program steps) and times them in one process, with the ``baselines`` of each: "torch" (eager),
    "jit" (``torch_optimized``), and "relax" (the first network through TVM Relax, untuned).

    Returns ``runs`` (label -> ms per round; "<label>" compiled, "<label>_torch", "<label>_jit"),
    ``errors`` (max |compiled - torch| per label), ``shares`` (``kernel_share`` per label),
    ``fallbacks`` (convs left to torch), ``fused`` (kernels with a batch norm fused), ``relax`` and
    ``compile_seconds``."""
    unknown = set(baselines) - {"torch", "jit", "relax", "nas_only"}
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}: use 'torch', 'jit', 'relax', 'nas_only'")
    models, compiled = {}, {}
    start = time.perf_counter()
    for label, net in networks.items():
        torch.manual_seed(seed)
        models[label] = net.build(tuple(IMAGE[1:])).eval()
        compiled[label] = compile_choice(net, models[label], programs.get(label, {}))
    compile_seconds = time.perf_counter() - start
    timed: Dict[str, Any] = dict(compiled)
    if "torch" in baselines:
        timed.update({f"{label}_torch": m for label, m in models.items()})
    if "jit" in baselines:
        timed.update({f"{label}_jit": torch_optimized(m) for label, m in models.items()})
    x = torch.randn(*IMAGE)
    with torch.no_grad():
        errors = {label: float((compiled[label](x) - m(x)).abs().max()) for label, m in models.items()}
    runs = end_to_end_timings(timed, rounds)
    first = next(iter(networks))
    return {"runs": runs, "errors": errors, "shares": {label: kernel_share(c) for label, c in compiled.items()},
            "fallbacks": {label: dict(c.fallbacks) for label, c in compiled.items()},
            "fused": sum(len(c.fused) for c in compiled.values()), "compile_seconds": compile_seconds,
            "relax": relax_latency(models[first]) if "relax" in baselines else None,
            "schedules": {label: {n: s.describe() for n, s in c.schedules.items()} for label, c in compiled.items()}}
