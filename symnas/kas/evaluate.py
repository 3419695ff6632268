"""Evaluating kernels: rediscovering known designs, training on a proxy task, timing whole networks.

- ``rediscover(space, seed, max_samples)``: runs Canvas's sampler until each family of
  ``sn.kas.classify`` (depthwise-separable, spatially separable, involution-like) has been sampled;
  returns, per family, the first such kernel and how many kernels it took.
- :class:`ProxyTask`: a kernel's accuracy on a small network and data set (seed 003 trains each
  candidate; on a CPU a reduced one): the kernel replaces the small network's convs with sizes
  solved for *its* convs under the same budget fraction, a zero-cost proxy screens it first
  (``ProxyFilter``), then ``sn.train.Trainer`` trains it, reporting every epoch so
  ``CanvasPruning`` can stop it. ``task.evaluate(design)`` is an evaluator for ``sn.search``.
- ``lower_network(net)``: every ``KernelConv`` that lowers to conv layers replaced by them (for
  ``sn.nn.compile_network``'s TVM kernels); ``network_latencies`` times networks at batch 1 in one
  process, interleaved, each through the routes asked for; ``network_proxy`` scores a network at
  initialisation by a zero-cost proxy (``sn.proxies``), to compare a kernel's network with the original;
  ``train_step_times`` times training steps (forward, backward, SGD update) of torch models, interleaved;
  ``fastest_per_shape`` gives each conv shape the candidate kernel that runs fastest there (or keeps the conv);
  ``layer_latencies`` times, per conv shape, the original conv and a kernel through each route, interleaved.

Example::

    import symnas as sn
    space = sn.kas.KernelSpace(targets=sn.kas.conv_targets(sn.nn.resnet34()), budget=sn.kas.Budget(flops=0.25))
    found = sn.kas.rediscover(space, seed=0, max_samples=5000)
    for family, (decoded, samples) in found.items():
        print(family, samples, decoded.names())
"""
from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.kas.kernel import KernelRejected
from symnas.kas.patterns import FAMILIES, classify
from symnas.kas.pruning import ProxyFilter
from symnas.kas.targets import Budget, conv_targets

__all__ = ["rediscover", "ProxyTask", "lower_network", "network_latencies", "network_proxy", "train_step_times",
           "fastest_per_shape", "layer_latencies", "interleaved_min"]


def rediscover(space, seed: int = 0, max_samples: int = 20000, families: Sequence[str] = FAMILIES
               ) -> Dict[str, Tuple[Any, int]]:
    """{family: (the first Decoded kernel of that family, kernels sampled until then)} for the families found
    within ``max_samples`` proposals of Canvas's sampler."""
    from symnas.algorithms.canvas import Canvas  # pylint: disable=import-outside-toplevel
    hyper = space.search_space()
    algo = Canvas(seed=seed)
    algo.setup(pg.dna_spec(hyper))
    found: Dict[str, Tuple[Any, int]] = {}
    for i in range(1, max_samples + 1):
        algo.propose()
        decoded = algo.last_decoded
        for family in classify(decoded.steps) & set(families):
            found.setdefault(family, (decoded, i))
        if len(found) == len(families):
            break
    return found


@pg.members([
    ("net", pg.typing.Any(), "The small symbolic network (sn.nn) whose 3x3 convs the kernel replaces."),
    ("trainer", pg.typing.Any(), "A sn.train.Trainer whose model is replaced by the kernel's network."),
    ("budget", pg.typing.Any(), "The budget (fractions) the kernel is solved for on this network."),
    ("screen", pg.typing.Object(ProxyFilter).noneable(), "A zero-cost pre-filter, or None."),
    ("screen_batch", pg.typing.Int(min_value=2, default=64), "Images the proxy scores on."),
    ("dedup", pg.typing.Bool(default=True),
     "Reject a kernel structurally equal to one this process evaluated before (mutations that leave it "
     "unchanged; with sn.search's worker processes, each worker remembers its own)."),
])
class ProxyTask(pg.Object):
    """A kernel's accuracy on a small network: the reduced training Canvas's search spends per candidate."""

    def _on_bound(self):
        super()._on_bound()
        self._targets = conv_targets(self.net)
        self._batch = None
        self._seen = set()

    def network(self, decoded):
        """The small network with the kernel in place of its 3x3 convs (sizes solved for them)."""
        from symnas.kas.layer import replace_convs  # pylint: disable=import-outside-toplevel
        from symnas.kas.solver import solve_budget  # pylint: disable=import-outside-toplevel
        kernel = decoded.kernel
        solution = solve_budget(kernel.analyze(), self._targets, kernel.groups, self.budget)
        return replace_convs(self.net, kernel, solution, self._targets)

    def evaluate(self, design) -> Dict[str, float]:
        """Trains the kernel's network; raises KernelRejected (recorded as rejected) when it was evaluated
        before (``dedup``) or does not decode, solve, build or pass the screen."""
        import torch  # pylint: disable=import-outside-toplevel
        decoded = design.decode() if hasattr(design, "decode") else design
        if self.dedup:
            if decoded.hash in self._seen:
                raise KernelRejected(f"the kernel {decoded.hash} was evaluated before")
            self._seen.add(decoded.hash)
        net = self.network(decoded)
        trainer = self.trainer.clone(override={"model": net})
        metrics = {"flops_ratio": decoded.flops_ratio, "params_ratio": decoded.params_ratio}
        if self.screen is not None:
            x, y = self._screen_batch()
            torch.manual_seed(0)
            model = trainer.classifier(x.shape[1:], int(y.max()) + 1).build(tuple(x.shape[1:]))
            metrics[self.screen.proxy] = self.screen.admit(model, x, y)
        result = trainer.train()
        metrics.update({k: float(v) for k, v in result.items() if isinstance(v, (int, float))})
        return metrics

    def _screen_batch(self):
        if self._batch is None:
            splits = self.trainer.data.load()
            self._batch = (splits.x_train[:self.screen_batch], splits.y_train[:self.screen_batch])
        return self._batch


def network_proxy(net, inputs, targets, proxy: str = "fisher", seed: int = 0) -> float:
    """``proxy``'s total score (``sn.proxies``) of the symbolic network ``net`` built with seed ``seed``,
    on one batch; the same seed and batch for every network compared. Kernels run primitive by primitive
    (the same numbers as their native ops), so the proxy's hooks see every weighted primitive."""
    import torch  # pylint: disable=import-outside-toplevel
    from symnas import proxies  # pylint: disable=import-outside-toplevel
    from symnas.kas.torch_module import set_native  # pylint: disable=import-outside-toplevel
    torch.manual_seed(seed)
    model = set_native(net.build(tuple(inputs.shape[1:])), False)   # every weighted primitive a called module
    return float(proxies.get(proxy, seed=seed).score(model, inputs, targets).total)


def train_step_times(models: Dict[str, Any], inputs, targets, rounds: int = 5, steps: int = 3) -> Dict[str, float]:
    """Milliseconds per training step (cross-entropy, backward, SGD update) of each built torch model on
    ``inputs``/``targets``: the minimum over ``rounds`` interleaved rounds of the mean of ``steps`` steps."""
    import torch  # pylint: disable=import-outside-toplevel
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, m in models.items()}

    def step(name):
        model, opt = models[name], optimizers[name]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        opt.step()

    for name, model in models.items():
        model.train()
        step(name)                                   # warm-up (allocations, one-time set-up)
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name in models:
            start = time.perf_counter()
            for _ in range(steps):
                step(name)
            best[name] = min(best[name], (time.perf_counter() - start) * 1000 / steps)
    return best


def fastest_per_shape(net, targets: Sequence, solved: Sequence, backend: Optional[str] = None,
                      repeat: int = 5, number: int = 5) -> Tuple[Any, float, List[Dict[str, Any]]]:
    """Per conv shape in ``targets``, the candidate of ``solved`` (``[(name, kernel, solution)]``) whose
    compiled kernel (``backend``: None = TVM where the kernel lowers, else Inductor) runs fastest at batch 1,
    or the original conv (same back end) where none beats it.

    Returns ``(network, flops_ratio, choices)``: ``net`` with those kernels assigned (``assign_kernels``), its
    replaced convs' FLOPs over the originals', and per shape ``{"target", "count", "choice", "route", "ms",
    "conv_ms"}`` (``choice`` None: the conv stays).
    """
    import torch  # pylint: disable=import-outside-toplevel
    from symnas.kas.compile import compile_conv, compile_kernel, time_callable  # pylint: disable=import-outside-toplevel
    from symnas.kas.layer import assign_kernels  # pylint: disable=import-outside-toplevel
    from symnas.kas.torch_module import KernelModule  # pylint: disable=import-outside-toplevel
    picks, choices, flops, base = [], [], 0.0, 0.0
    for t in targets:
        env = {"C": t.c_in, "O": t.c_out, "H": t.h, "W": t.w, "S": t.stride}
        x = torch.randn(1, t.c_in, t.h, t.w)
        conv_backend = backend or "tvm"
        conv_ms = time_callable(compile_conv(env, conv_backend, k=t.k, groups=t.groups), x, repeat=repeat, number=number)
        best = (conv_ms, None, None, None, conv_backend)
        for name, kernel, solution in solved:
            module = KernelModule(kernel, dict(env, G=kernel.groups, **solution.for_target(t)))
            fn, route = compile_kernel(kernel, module.env, backend=backend, module=module)
            ms = time_callable(fn, x, repeat=repeat, number=number)
            if ms < best[0]:
                best = (ms, name, kernel, solution, route)
        ms, name, kernel, solution, route = best
        choices.append({"target": t.key, "count": t.count, "choice": name, "route": route, "ms": ms,
                        "conv_ms": conv_ms})
        base += t.macs() * t.count
        if kernel is None:
            flops += t.macs() * t.count
            continue
        picks.append((kernel, solution, [t]))
        flops += kernel.flops(t, solution.for_target(t)) * t.count
    return assign_kernels(net, picks), flops / base, choices


def interleaved_min(calls: Dict[Any, Any], x, rounds: int, number: int = 0, min_ms: float = 100.0,
                    settle: float = 0.05) -> Dict[Any, float]:
    """Batch latency (ms) of each callable on ``x``: the min over ``rounds`` rounds, each timing every
    callable in turn for ``number`` calls (0: at least 5 calls and ``min_ms``).

    Before each timed block the process sleeps ``settle`` seconds and makes one untimed call: the
    runtimes' thread pools (TVM's, ONNX Runtime's, OpenMP's under Inductor) spin for a while after
    their work, and on a 2-core machine a pool still spinning took the cores from the next runtime's
    (a TVM conv timed right after ONNX Runtime's ran 8x slower, 2026-12-07)."""
    import torch  # pylint: disable=import-outside-toplevel
    best = {key: float("inf") for key in calls}
    with torch.no_grad():
        for fn in calls.values():
            fn(x)
        for _ in range(rounds):
            for key, fn in calls.items():
                if settle:
                    time.sleep(settle)
                fn(x)
                start = time.perf_counter()
                n = 0
                while n < (number or 5) or (not number and time.perf_counter() - start < min_ms / 1000):
                    fn(x)
                    n += 1
                best[key] = min(best[key], (time.perf_counter() - start) * 1000 / n)
    return best


def layer_latencies(targets: Sequence, kernel, solution, routes: Sequence[str] = ("tvm", "ort"),
                    rounds: int = 5, number: int = 10, settle: float = 0.05) -> List[Dict[str, Any]]:
    """Per conv shape of ``targets``: batch-1 latency (ms, min over ``rounds`` interleaved rounds of the
    mean of ``number`` calls, ``interleaved_min``) of the original conv and of ``kernel`` (sizes from
    ``solution``) through each route ('tvm', 'ort', 'inductor'; ``compile_conv`` / ``compile_kernel``),
    all compiled first.

    Returns ``[{"target", "count", "conv": {route: ms}, "kernel": {route: ms or None}, "why": {route:
    reason}}]``; a kernel that does not lower to TVM gets None for 'tvm' and the reason. Example::

        import symnas as sn
        targets = sn.kas.conv_targets(sn.nn.resnet((1, 1, 1, 1), width=8))
        kernel = sn.kas.spatially_separable()
        solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=0.5))
        rows = sn.kas.layer_latencies(targets[:1], kernel, solution, routes=("tvm",), rounds=2, number=2)
        assert rows[0]["kernel"]["tvm"] > 0
    """
    import torch  # pylint: disable=import-outside-toplevel
    from symnas.kas.compile import compile_conv, compile_kernel  # pylint: disable=import-outside-toplevel
    from symnas.kas.torch_module import KernelModule  # pylint: disable=import-outside-toplevel
    rows = []
    for t in targets:
        env = {"C": t.c_in, "O": t.c_out, "H": t.h, "W": t.w, "S": t.stride}
        module = KernelModule(kernel, dict(env, G=kernel.groups, **solution.for_target(t))).eval()
        calls, why = {}, {}
        for route in routes:
            calls[("conv", route)] = compile_conv(env, route, k=t.k, groups=t.groups)
            try:
                calls[("kernel", route)] = compile_kernel(kernel, module.env, backend=route, module=module)[0]
            except ValueError as error:             # the kernel does not lower to TVM
                why[route] = str(error)
        best = interleaved_min(calls, torch.randn(1, t.c_in, t.h, t.w), rounds, number=number, settle=settle)
        rows.append({"target": t.key, "count": t.count,
                     "conv": {r: best[("conv", r)] for r in routes},
                     "kernel": {r: best.get(("kernel", r)) for r in routes}, "why": why})
    return rows


def lower_network(net):
    """(``net`` with every lowerable ``KernelConv`` replaced by its conv layers, how many were lowered, how
    many there are). The conv layers are spliced into the ``Sequential`` around the kernel
    (``sn.nn.flatten_sequentials``), so the batch norm, ReLU and residual add after it follow its last conv
    directly and ``sn.nn.compile_network`` fuses them into that conv's TVM kernel, as for the original's."""
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    from symnas.kas.layer import KernelConv, lower_to_layers  # pylint: disable=import-outside-toplevel
    sites = {str(k): v for k, v in pg.query(net, where=lambda v: isinstance(v, KernelConv)).items()}
    if not sites:
        return net, 0, 0
    shapes = _input_shapes(net, set(sites))
    updates = {}
    for path, layer in sites.items():
        layers = lower_to_layers(layer.kernel, layer.env(shapes[path]))
        if layers is not None:
            updates[path] = snn.Sequential(layers)
    if not updates:
        return net, 0, len(sites)
    out = net.clone(deep=True)
    out.rebind(updates, skip_notification=True)
    return snn.flatten_sequentials(out), len(updates), len(sites)


def _input_shapes(net, paths) -> Dict[str, tuple]:
    """Input shape of each layer at ``paths`` (CIFAR input), by walking the network's shapes."""
    from symnas.nn import layers as L  # pylint: disable=import-outside-toplevel
    found: Dict[str, tuple] = {}

    def walk(layer, shape, path):
        if path in paths:
            found[path] = tuple(shape)
        if isinstance(layer, L.Sequential):
            for i, child in enumerate(layer.layers):
                shape = walk(child, shape, f"{path}.layers[{i}]" if path else f"layers[{i}]")
            return shape
        if isinstance(layer, L.Residual):
            walk(layer.body, shape, f"{path}.body" if path else "body")
            if layer.shortcut is not None:
                walk(layer.shortcut, shape, f"{path}.shortcut" if path else "shortcut")
        return layer.output_shape(shape)

    walk(net, (3, 32, 32), "")
    return found


def network_latencies(models: Dict[str, Tuple[Any, Any, str]], rounds: int = 7,
                      settle: float = 0.05) -> Dict[str, float]:
    """Batch-1 latency (ms, min over ``rounds`` interleaved rounds) of each ``name: (symbolic net, built
    model, route)``; route 'tvm' = ``sn.nn.compile_network`` (tuned templates, a kernel's two convs fused
    into one function where measured faster), 'tvm_unfused' = the same without fusing chains, 'inductor' =
    ``torch.compile`` with frozen weights, 'ort' = ONNX Runtime (``sn.nn.ONNXRuntime``: the model
    exported to ONNX, every graph optimisation), 'eager' = torch as is. Each timed block runs for at
    least 0.1 s, after a ``settle`` pause (``interleaved_min``)."""
    import torch  # pylint: disable=import-outside-toplevel
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    from symnas.kas.compile import compile_module  # pylint: disable=import-outside-toplevel
    x = torch.randn(1, 3, 32, 32)
    runs = {}
    for name, (net, model, route) in models.items():
        model = model.eval()
        if route in ("tvm", "tvm_unfused"):
            runs[name] = snn.compile_network(net, copy.deepcopy(model), tune=True, fuse_chains=route == "tvm")
        elif route == "inductor":
            runs[name] = compile_module(copy.deepcopy(model), x)
        elif route == "ort":
            runtime = snn.ONNXRuntime()
            if runtime.missing():
                raise ValueError(f"route 'ort': {runtime.missing()}")
            runs[name] = runtime.prepare(copy.deepcopy(model), x)
        elif route == "eager":
            runs[name] = model
        else:
            raise ValueError(f"unknown route {route!r}: tvm, tvm_unfused, inductor, ort or eager")
    return interleaved_min(runs, x, rounds, settle=settle)
