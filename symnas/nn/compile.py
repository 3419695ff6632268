"""Whole networks for inference on this CPU: every convolution a compiled TVM kernel.

``compile_network(net)`` builds the symbolic network's torch model (or takes yours, with
its trained weights) and swaps each convolution module for a ``TVMKernelModule``: the
original convs and the transformed kernels (``TransformedConv``) alike. The rest of the
network (batch norm, activations, pooling, the classifier) stays in torch and runs on one
thread, so only TVM's thread pool is parallel (two spinning pools fight over the cores:
see ``sn.program.torch_tvm``).

Each kernel gets a program template: the one given in ``programs`` (key path -> steps),
the program steps already in a transformed kernel's schedule, or the fastest of
``sn.program.cpu_templates`` measured here (cached per distinct kernel). A convolution
that no template fits stays in torch and is listed in ``fallbacks``.

Example::

    import torch, symnas as sn
    net = sn.nn.resnet18()
    model = net.build((3, 32, 32)).eval()
    fast = sn.nn.compile_network(net, model, tune=False)      # tune=True: time the templates
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(fast(x), model(x), atol=1e-3, rtol=1e-3)
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import pyglove as pg
import torch
from torch import nn

from symnas.nn.backbones import CIFAR_SHAPE, TransformedConv, transformable_convs

__all__ = ["CompiledNetwork", "compile_network"]


class CompiledNetwork(nn.Module):
    """A torch model whose convolutions are TVM kernels; inference at a fixed batch size."""

    def __init__(self, model: nn.Module, schedules: Dict[str, object], fallbacks: Dict[str, str],
                 glue_threads: int = 1):
        super().__init__()
        self.model = model
        self.schedules = schedules          # torch module name -> compiled sn.program.Schedule
        self.fallbacks = fallbacks          # torch module name -> why it stayed in torch
        self.glue_threads = glue_threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from symnas.program.torch_tvm import torch_threads  # pylint: disable=import-outside-toplevel
        with torch.no_grad(), torch_threads(self.glue_threads):
            return self.model(x)


def compile_network(net, model: Optional[nn.Module] = None, in_shape: Sequence[int] = CIFAR_SHAPE,
                    batch: int = 1, programs: Optional[Dict[str, List]] = None, tune: bool = True,
                    glue_threads: int = 1, repeat: int = 3) -> CompiledNetwork:
    """Compiles every convolution of the symbolic network ``net`` to a TVM kernel.

    ``model`` is ``net.build(in_shape)`` with the weights to use (built here when None;
    it is modified in place and put in eval mode). ``programs`` maps key paths of convs
    to program steps; other convs get the program steps of their transformed schedule
    or, with ``tune``, the fastest measured CPU template (else the first that compiles).
    """
    from symnas import program  # pylint: disable=import-outside-toplevel
    from symnas.program.torch_tvm import TVMKernelModule  # pylint: disable=import-outside-toplevel

    in_shape = tuple(in_shape)
    if model is None:
        model = net.build(in_shape)
    model.eval()
    programs = {str(k): list(v) for k, v in (programs or {}).items()}
    sites = transformable_convs(net, in_shape, include_all=True)
    unknown = set(programs) - {s.path for s in sites}
    if unknown:
        raise KeyError(f"programs name no convolution of the network: {sorted(unknown)}")
    chosen: Dict[str, List] = {}       # template cache per (operator, neural steps)
    schedules, fallbacks = {}, {}
    for site in sites:
        module = model.get_submodule(site.torch_name)
        op = site.operator(batch)
        if isinstance(site.layer, TransformedConv):
            steps = list(site.layer.schedule.active_steps())
            weights, bias = list(module.weights), None
        elif isinstance(module, nn.Conv2d):
            steps, weights, bias = [], [module.weight], module.bias
        else:
            fallbacks[site.torch_name] = f"unexpected module {type(module).__name__}"
            continue
        neural = [s for s in steps if isinstance(s, program.NeuralStep)]
        has_program = any(isinstance(s, program.ProgramStep) for s in steps)
        if site.path in programs:
            steps = neural + programs[site.path]
        elif not has_program:
            key = (pg.format(op, compact=True), pg.format(neural, compact=True))
            if key not in chosen:
                chosen[key] = _pick_template(op, neural, tune, repeat)
            if chosen[key] is None:
                fallbacks[site.torch_name] = "no CPU template fits this kernel"
                continue
            steps = neural + chosen[key]
        schedule = program.Schedule(op, steps)
        try:
            fast = TVMKernelModule(schedule, weights, bias)
        except (program.IllegalTransformation, ValueError) as error:
            fallbacks[site.torch_name] = str(error)
            continue
        model.set_submodule(site.torch_name, fast)
        schedules[site.torch_name] = schedule
    return CompiledNetwork(model, schedules, fallbacks, glue_threads)


def _pick_template(op, neural: List, tune: bool, repeat: int) -> Optional[List]:
    from symnas import program  # pylint: disable=import-outside-toplevel
    best, best_ms = None, float("inf")
    for template in program.cpu_templates(op):
        schedule = program.Schedule(op, neural + template)
        try:
            if not tune:
                schedule.build()
                return template
            measurement = schedule.measure(repeat=repeat)
        except program.IllegalTransformation:
            continue
        latency = min(measurement.repeats) if measurement.repeats else measurement.latency_ms
        if latency < best_ms:
            best, best_ms = template, latency
    return best

