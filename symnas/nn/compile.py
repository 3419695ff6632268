"""Whole networks for inference on this CPU: every convolution a compiled TVM kernel.

``compile_network(net)`` builds the symbolic network's torch model (or takes yours, with
its trained weights) and swaps each convolution module for a ``TVMKernelModule``: the
original convs and the transformed kernels (``TransformedConv``) alike. A batch norm right
after a conv is folded into its weights and a bias, and a ReLU after that is fused into
the kernel too (``fold_batchnorm``); a batch norm and ReLU right before a conv (pre-activation)
are applied as the kernel reads its input; the last conv of a residual block's body also adds the
shortcut and applies the block's ReLU in its output write (``fuse_residual``). The rest of
the network (other activations, concatenations, pooling, the classifier) stays in torch
and runs on one thread, so only TVM's thread pool is parallel (two spinning pools fight
over the cores: see ``sn.program.torch_tvm``).

At batch 1 a small network's kernels take tens of microseconds each, so calling them
through torch modules costs a fifth of the time. ``CompiledNetwork`` therefore runs a flat
plan (``plan=True``, the default): the model traced once with ``torch.fx``, every kernel
called directly with its weights and a preallocated output buffer, the rest as the traced
torch calls; the plan's first output is checked against the modules' and a model that
cannot be traced (or disagrees) runs through its modules. One plan serves one caller at a
time (its buffers are reused between calls).

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

import operator
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import pyglove as pg
import torch
from torch import fx, nn

from symnas.nn.backbones import CIFAR_SHAPE, TransformedConv, transformable_convs
from symnas.nn.layers import _ResidualModule

__all__ = ["CompiledNetwork", "compile_network"]


class CompiledNetwork(nn.Module):
    """A torch model whose convolutions are TVM kernels; inference at a fixed batch size."""

    def __init__(self, model: nn.Module, schedules: Dict[str, object], fallbacks: Dict[str, str],
                 glue_threads: int = 1, fused: Optional[Dict[str, str]] = None, plan: bool = True):
        super().__init__()
        self.model = model
        self.schedules = schedules          # torch module name -> compiled sn.program.Schedule
        self.fallbacks = fallbacks          # torch module name -> why it stayed in torch
        self.fused = fused or {}            # torch module name -> what its kernel absorbed
        self.glue_threads = glue_threads
        self.plan = plan                    # run the flat plan (built and checked on the first call)
        self._plan: Optional[_FlatPlan] = None
        self.plan_status = "not built yet" if plan else "off"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from symnas.program.torch_tvm import torch_threads  # pylint: disable=import-outside-toplevel
        with torch.no_grad(), torch_threads(self.glue_threads):
            if self._plan is not None:
                return self._plan(x)
            out = self.model(x)
            if self.plan and self.plan_status == "not built yet":
                self._build_plan(x, out)
            return out

    def kernel_time(self, x: torch.Tensor, calls: int = 20) -> Dict[str, object]:
        """Milliseconds per forward on ``x``, split into the TVM kernels and the rest (the torch glue):
        ``{"total", "kernels", "per_kernel": {module name: ms}}``, the mean of ``calls`` forwards."""
        from symnas.program.torch_tvm import TVMKernelModule  # pylint: disable=import-outside-toplevel
        modules = [(n, m) for n, m in self.model.named_modules() if isinstance(m, TVMKernelModule)]
        originals = {n: m._func for n, m in modules}
        spent: Dict[str, float] = {}

        def timed(name, func):
            def call(*args):
                start = time.perf_counter()
                func(*args)
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            return call
        try:
            for n, m in modules:                 # the flat plan looks ``_func`` up per call
                m._func = timed(n, originals[n])
            self(x)
            spent.clear()
            start = time.perf_counter()
            for _ in range(calls):
                self(x)
            total = (time.perf_counter() - start) * 1000 / calls
        finally:
            for n, m in modules:
                m._func = originals[n]
        per_kernel = {n: v * 1000 / calls for n, v in spent.items()}
        return {"total": total, "kernels": sum(per_kernel.values()), "per_kernel": per_kernel}

    def _build_plan(self, x: torch.Tensor, expected: torch.Tensor) -> None:
        try:
            plan = _FlatPlan(self.model)
            got = plan(x)
        except Exception as error:  # pylint: disable=broad-except
            self.plan_status = f"modules: the model could not be run as a flat plan ({error})"
            return
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            self.plan_status = "modules: the flat plan's output differed from the modules'"
            warnings.warn(f"CompiledNetwork: {self.plan_status}; running through the modules")
            return
        self._plan, self.plan_status = plan, f"flat plan: {plan.kernels} kernels, {plan.others} other steps"


def compile_network(net, model: Optional[nn.Module] = None, in_shape: Sequence[int] = CIFAR_SHAPE,
                    batch: int = 1, programs: Optional[Dict[str, List]] = None, tune: bool = True,
                    glue_threads: int = 1, repeat: int = 3, fold_batchnorm: bool = True,
                    fuse_residual: bool = True, fuse_preactivation: bool = True,
                    plan: bool = True, fuse_chains: bool = True) -> CompiledNetwork:
    """Compiles every convolution of the symbolic network ``net`` to a TVM kernel.

    ``model`` is ``net.build(in_shape)`` with the weights to use (built here when None;
    it is modified in place and put in eval mode). ``programs`` maps key paths of convs
    to program steps; other convs get the program steps of their transformed schedule
    or, with ``tune``, the fastest measured CPU template (else the first that compiles).
    With ``fold_batchnorm``, a ``BatchNorm2d`` (with running statistics) that directly
    follows a conv in a ``Sequential`` is folded into the conv's weights and a bias, and a
    ``ReLU`` right after it is fused into the kernel; both modules become ``Identity`` (one after a
    nested ``Sequential`` ending in a conv is not: ``sn.nn.flatten_sequentials(net)`` first).
    With ``fuse_preactivation`` (and ``fold_batchnorm``), a ``BatchNorm2d`` and ``ReLU`` right
    *before* a conv in a ``Sequential`` (pre-activation, as in DenseNet) are applied by the
    conv's kernel as it reads its input, and also become ``Identity``. With ``fuse_residual``
    (and ``fold_batchnorm``), a conv that ends a residual block's body (``sn.nn.Residual``
    with no ``post`` or a ReLU ``post``) adds the shortcut and applies the ReLU in its
    kernel; the block then runs its body and shortcut and hands both to that kernel.
    ``plan``: run the flat plan (module docstring) instead of the modules. With ``fuse_chains``, two plain
    convs in a row of a ``Sequential`` (a ReLU between or not; no bias on the first; a one-row window on
    the second, as a searched kernel's depthwise + pointwise or k x 1 + 1 x k convs lower) become one
    ``sn.program.ConvChain`` function, the first conv computed per row tile of the second, where that is
    faster than the two kernels measured apart (with ``tune``; without, wherever it fits).
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
    chosen: Dict[tuple, List] = {}     # template cache per (operator, neural steps, prologue)
    preactivation = fold_batchnorm and fuse_preactivation
    schedules, fallbacks, fused = {}, {}, {}
    residual_ends = {}                 # residual block's name -> index of its body's fused kernel
    chains = _conv_chains(model, sites, programs, batch, tune, repeat) if fuse_chains else {}
    firsts = {first.torch_name: second for second, (first, _, _) in chains.items()}
    for site in sites:
        if site.torch_name in firsts:
            continue                       # computed inside the next conv's kernel
        module = model.get_submodule(site.torch_name)
        try:
            op = site.operator(batch)
        except ValueError as error:        # a conv sn.program has no operator for
            fallbacks[site.torch_name] = str(error)
            continue
        chain = chains.get(site.torch_name)
        if chain is not None:
            first, between, schedule = chain
            steps, weights, bias = None, [model.get_submodule(first.torch_name).weight, module.weight], module.bias
        elif isinstance(site.layer, TransformedConv):
            steps = list(site.layer.schedule.active_steps())
            weights, bias = list(module.weights), None
        elif isinstance(module, nn.Conv2d):
            steps, weights, bias = [], [module.weight], module.bias
        else:
            fallbacks[site.torch_name] = f"unexpected module {type(module).__name__}"
            continue
        pre_bn, pre_relu = (_batchnorm_relu_before(model, site.torch_name) if preactivation and chain is None
                            else (None, None))
        neural = [s for s in steps or [] if isinstance(s, program.NeuralStep)]
        has_program = any(isinstance(s, program.ProgramStep) for s in steps or [])
        if chain is not None:
            pass
        elif site.path in programs:
            steps = neural + programs[site.path]
        elif not has_program:
            key = (pg.format(op, compact=True), pg.format(neural, compact=True), pre_bn is not None)
            if key not in chosen:
                chosen[key] = _pick_template(op, neural, tune, repeat, prologue=pre_bn is not None)
            if chosen[key] is None:
                fallbacks[site.torch_name] = "no CPU template fits this kernel"
                continue
            steps = neural + chosen[key]
        if chain is None:
            schedule = program.Schedule(op, steps)
        batchnorm, relu = _batchnorm_relu_after(model, site.torch_name) if fold_batchnorm else (None, None)
        in_scale, in_shift = _batchnorm_affine(model.get_submodule(pre_bn)) if pre_bn else (None, None)
        if batchnorm is not None and chain is not None:      # the second conv's weights take the batch norm
            second, bias = _fold_batchnorm(schedule.kernels()[1], weights[1:], bias, model.get_submodule(batchnorm))
            weights = weights[:1] + second
        elif batchnorm is not None:
            weights, bias = _fold_batchnorm(schedule.kernel(), weights, bias, model.get_submodule(batchnorm))
        block = (_residual_block_ended_by(model, site.torch_name, batchnorm)
                 if fold_batchnorm and fuse_residual and relu is None else None)
        post_relu = block is not None and isinstance(model.get_submodule(block).post, nn.ReLU)
        try:
            fast = TVMKernelModule(schedule, weights, bias, relu=relu is not None or post_relu,
                                   residual=block is not None, in_scale=in_scale, in_shift=in_shift)
        except (program.IllegalTransformation, ValueError) as error:
            fallbacks[site.torch_name] = str(error)
            continue
        model.set_submodule(site.torch_name, fast)
        schedules[site.torch_name] = schedule
        for name in (batchnorm, relu, pre_bn, pre_relu) + ((first.torch_name, between) if chain else ()):
            if name is not None:
                model.set_submodule(name, nn.Identity())
        if chain is not None:
            fused[first.torch_name] = f"computed in {site.torch_name}'s kernel ({schedule.describe()})"
        if block is not None:
            residual_ends[block] = int(site.torch_name.rpartition(".")[2])
            fused[site.torch_name] = ("batch norm + " if batchnorm else "") + "residual add" + (
                " + ReLU" if post_relu else "")
        elif batchnorm is not None:
            fused[site.torch_name] = "batch norm + ReLU" if relu is not None else "batch norm"
        if pre_bn is not None:
            after = fused.get(site.torch_name)
            fused[site.torch_name] = "batch norm + ReLU before" + (f", {after} after" if after else "")
    for block, index in residual_ends.items():
        original = model.get_submodule(block)
        model.set_submodule(block, _FusedResidualModule(original.body, index, original.shortcut))
    return CompiledNetwork(model, schedules, fallbacks, glue_threads, fused, plan)


class _KernelLeafTracer(fx.Tracer):
    """Traces through symnas' modules; the TVM kernels and torch's own modules stay calls."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from symnas.program.torch_tvm import TVMKernelModule  # pylint: disable=import-outside-toplevel
        return isinstance(m, TVMKernelModule) or super().is_leaf_module(m, module_qualified_name)


class _FlatPlan:
    """A compiled model's forward as a list of steps over a value list: each TVM kernel's function
    called with its weights (and bias) and a preallocated output, everything else as traced."""

    def __init__(self, model: nn.Module):
        from symnas.program.torch_tvm import TVMKernelModule, _kernel_input  # pylint: disable=import-outside-toplevel
        graph = _KernelLeafTracer().trace(model)
        slot: Dict[fx.Node, int] = {}
        self.steps: List[Callable[[list], None]] = []
        self.kernels = self.others = 0
        self._buffers = set()           # storage addresses of the kernels' output buffers
        constants: Dict[int, object] = {}
        kernel_slots = set()            # value slots that hold a kernel's output buffer

        reads: List[List[int]] = []     # per step, the value slots it reads

        def value(arg):
            # a node's value at run time, or a constant
            return fx.node.map_arg(arg, lambda n: _Slot(slot[n]))

        for node in graph.nodes:
            module = model.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(module, nn.Identity):
                slot[node] = slot[node.args[0]]           # (a folded batch norm or fused ReLU)
                continue
            slot[node] = len(slot)
            dst = slot[node]
            if node.op == "placeholder":
                self._input = dst
            elif node.op == "get_attr":
                constants[dst] = operator.attrgetter(node.target)(model)
            elif module is not None and not isinstance(module, TVMKernelModule):
                args, kwargs = value(node.args), value(node.kwargs)
                self.steps.append(self._generic_step(module, args, kwargs, dst))
                reads.append(_slots_in((args, kwargs)))
                self.others += 1
            elif module is not None:
                if node.kwargs or len(node.args) != 1 + module.residual:
                    raise TypeError(f"unexpected call of kernel {node.target!r}")
                out = torch.empty(module.output_shape, dtype=torch.float32)
                self._buffers.add(out.untyped_storage().data_ptr())
                weights = tuple(getattr(module, f"weight{i}") for i in range(module._num_weights))
                weights += () if module.bias is None else (module.bias,)
                prologue = (module.in_scale, module.in_shift) if module.prologue else ()
                sources = [slot[a] for a in node.args]
                shapes = [module.input_shape, module.output_shape]
                # a kernel's own buffer is contiguous and aligned: only other values are checked
                checked = [None if slot[a] in kernel_slots else _kernel_input for a in node.args]
                kernel_slots.add(dst)
                self.steps.append(self._kernel_step(module, weights, prologue, sources, shapes, checked, out, dst))
                reads.append(sources)
                self.kernels += 1
            elif node.op in ("call_function", "call_method"):
                args, kwargs = value(node.args), value(node.kwargs)
                target = node.target
                if node.op == "call_method":
                    fn = lambda obj, *a, _name=target, **k: getattr(obj, _name)(*a, **k)  # noqa: E731
                else:
                    fn = target
                self.steps.append(self._generic_step(fn, args, kwargs, dst))
                reads.append(_slots_in((args, kwargs)))
                self.others += 1
            elif node.op == "output":
                self._output = value(node.args[0])
        self._values = [constants.get(i) for i in range(len(slot))]   # a fresh copy per call
        self._drop_dead_values(reads, set(_slots_in(self._output)) | set(constants))

    def _drop_dead_values(self, reads: List[List[int]], keep: set) -> None:
        """Makes each step drop the values that no later step reads, as eager torch frees them
        (kept to the end of the call, a DenseNet's concatenations take fresh memory on every call)."""
        last_read = {}
        for index, slots in enumerate(reads):
            for i in slots:
                last_read[i] = index
        dead: List[List[int]] = [[] for _ in self.steps]
        for i, index in last_read.items():
            if i not in keep:
                dead[index].append(i)
        self.steps = [step if not slots else _then_drop(step, tuple(slots))
                      for step, slots in zip(self.steps, dead)]

    @staticmethod
    def _kernel_step(module, weights, prologue, sources, shapes, checked, out, dst):
        # module._func is looked up per call (not bound here), so a profiler can wrap it
        if len(sources) == 1:
            src, = sources
            check = checked[0]
            weights = weights + prologue

            def step(env):
                x = env[src]
                if check is not None:
                    x = check(x, shapes[0], "input")
                module._func(x, *weights, out)
                env[dst] = out
            return step
        src, res = sources

        def step_residual(env):
            x, r = env[src], env[res]
            if checked[0] is not None:
                x = checked[0](x, shapes[0], "input")
            if checked[1] is not None:
                r = checked[1](r, shapes[1], "residual")
            module._func(x, *weights, r, *prologue, out)
            env[dst] = out
        return step_residual

    @staticmethod
    def _generic_step(fn, args, kwargs, dst):
        if not kwargs and all(not isinstance(a, (list, tuple, dict)) for a in args):
            getters = [(a.index, None) if isinstance(a, _Slot) else (None, a) for a in args]

            def step(env):
                env[dst] = fn(*[env[i] if i is not None else c for i, c in getters])
            return step

        def step_nested(env):
            env[dst] = fn(*_resolve(args, env), **_resolve(kwargs, env))
        return step_nested

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        env = list(self._values)
        env[self._input] = x
        for step in self.steps:
            step(env)
        out = _resolve(self._output, env)
        # a kernel's buffer is overwritten by the next call: hand out a copy
        if isinstance(out, torch.Tensor) and out.untyped_storage().data_ptr() in self._buffers:
            out = out.clone()
        return out


def _then_drop(step: Callable[[list], None], slots: tuple) -> Callable[[list], None]:
    def step_then_drop(env):
        step(env)
        for i in slots:
            env[i] = None
    return step_then_drop


def _slots_in(arg) -> List[int]:
    """The value slots that ``arg`` (nested tuples, lists, dicts of ``_Slot`` and constants) reads."""
    found: List[int] = []
    fx.node.map_aggregate(arg, lambda v: found.append(v.index) if isinstance(v, _Slot) else None)
    return found


class _Slot:
    """Where a traced node's value sits in the plan's value list."""
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _resolve(arg, env: list):
    """``arg`` (nested tuples, lists, dicts) with every ``_Slot`` replaced by its value in ``env``."""
    return fx.node.map_aggregate(arg, lambda v: env[v.index] if isinstance(v, _Slot) else v)


class _FusedResidualModule(nn.Module):
    """A residual block whose body's kernel at ``index`` adds the shortcut (and its ReLU) itself;
    the body's modules after it are identities (its folded batch norm)."""

    def __init__(self, body: nn.Sequential, index: int, shortcut: nn.Module):
        super().__init__()
        self.body, self.index, self.shortcut = body, index, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for module in list(self.body)[:self.index]:
            h = module(h)
        return self.body[self.index](h, self.shortcut(x))


def _residual_block_ended_by(model: nn.Module, name: str, batchnorm: Optional[str]) -> Optional[str]:
    """The name of the residual block whose body ends with conv ``name`` (and the batch norm
    ``batchnorm`` folded into it), when its ``post`` is nothing or a ReLU; else None."""
    body_name, _, index = name.rpartition(".")
    block_name, _, attribute = body_name.rpartition(".")
    if attribute != "body" or not index.isdigit() or not block_name:
        return None                    # (a residual block as the whole model is left alone)
    block = model.get_submodule(block_name)
    if not isinstance(block, _ResidualModule) or not isinstance(block.body, nn.Sequential):
        return None
    if not isinstance(block.post, (nn.ReLU, nn.Identity)):
        return None
    last = int(index) + (1 if batchnorm is not None else 0)
    return block_name if last == len(block.body) - 1 else None


def _batchnorm_relu_after(model: nn.Module, name: str):
    """Names of the BatchNorm2d right after module ``name`` in its Sequential and of a ReLU
    right after that (None where absent)."""
    parent_name, _, index = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential) or not index.isdigit():
        return None, None
    i = int(index)
    prefix = f"{parent_name}." if parent_name else ""
    following = list(parent)[i + 1:i + 3]
    if not following or not isinstance(following[0], nn.BatchNorm2d) or following[0].running_var is None:
        return None, None
    relu = (f"{prefix}{i + 2}" if len(following) > 1 and isinstance(following[1], nn.ReLU) else None)
    return f"{prefix}{i + 1}", relu


def _batchnorm_relu_before(model: nn.Module, name: str):
    """Names of a BatchNorm2d (with running statistics) and a ReLU right before module ``name``
    in its Sequential, as in pre-activation networks (None, None where absent). Their output
    is read only by the conv, so the conv's kernel can apply them as it reads its input."""
    parent_name, _, index = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential) or not index.isdigit() or int(index) < 2:
        return None, None
    i = int(index)
    bn, relu = parent[i - 2], parent[i - 1]
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None or not isinstance(relu, nn.ReLU):
        return None, None
    prefix = f"{parent_name}." if parent_name else ""
    return f"{prefix}{i - 2}", f"{prefix}{i - 1}"


def _batchnorm_affine(bn: nn.BatchNorm2d):
    """Per-channel (scale, shift) with ``bn(x) == x * scale + shift`` (inference statistics)."""
    with torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
    return scale, shift


def _fold_batchnorm(kernel, weights: List[torch.Tensor], bias: Optional[torch.Tensor], bn: nn.BatchNorm2d):
    """Weights and a bias that compute ``bn(conv(x))`` (inference statistics) in one conv."""
    scale, shift = _batchnorm_affine(bn)
    with torch.no_grad():
        folded = []
        # each kernel part writes a slice of the output channels (parts of a row partition
        # share theirs): scale the part's filters by its channels' factors
        for (channel, _), part, weight in zip(kernel.placements(), kernel.parts, weights):
            factor = scale[channel:channel + part.c_out].reshape(-1, *([1] * (weight.dim() - 1)))
            folded.append(weight.detach() * factor)
        new_bias = shift if bias is None else bias.detach() * scale + shift
    return folded, new_bias


def _conv_chains(model: nn.Module, sites, programs, batch: int, tune: bool, repeat: int) -> Dict[str, tuple]:
    """{second conv's module name: (first conv's site, name of a ReLU between or None, ConvChain)} for every
    pair of plain convs in a row of a Sequential that a fused chain computes faster (``fuse_chains``)."""
    from symnas import program  # pylint: disable=import-outside-toplevel
    by_name = {s.torch_name: s for s in sites}
    found, taken, decided = {}, set(), {}     # decided: the chain per (operators, ReLU), or None
    for site in sites:
        parent_name, _, index = site.torch_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if site.torch_name in taken or not isinstance(parent, nn.Sequential) or not index.isdigit():
            continue
        i, prefix = int(index), f"{parent_name}." if parent_name else ""
        between = None
        j = i + 1
        if j < len(parent) and isinstance(parent[j], nn.ReLU):
            between, j = f"{prefix}{j}", j + 1
        second = by_name.get(f"{prefix}{j}")
        first_module = model.get_submodule(site.torch_name)
        if second is None or second.torch_name in taken or {site.path, second.path} & set(programs):
            continue
        if isinstance(site.layer, TransformedConv) or isinstance(second.layer, TransformedConv):
            continue
        if not isinstance(first_module, nn.Conv2d) or first_module.bias is not None:
            continue
        try:
            ops = site.operator(batch), second.operator(batch)
        except ValueError:
            continue
        if ops[1].window[0] != 1:          # row tiles of the second conv would recompute the first's rows
            continue
        key = (pg.format(ops[0], compact=True), pg.format(ops[1], compact=True), between is not None)
        if key not in decided:
            decided[key] = _pick_chain(ops, between is not None, tune, repeat)
        if decided[key] is None:
            continue
        found[second.torch_name] = (site, between, decided[key])
        taken.update((site.torch_name, second.torch_name))
    return found


def _pick_chain(ops, relu: bool, tune: bool, repeat: int):
    """The fused chain of two conv operators: the fastest measured, if faster than the two convs apart
    (``tune``), else the first that lowers; None when none fits or wins."""
    from symnas import program  # pylint: disable=import-outside-toplevel
    _, fused = program.chain_candidates(*ops, relu=relu)
    if not fused:
        return None
    if tune:
        best = program.fastest_chain(*ops, relu=relu, repeat=repeat, ways=("two_functions", "fused"))
        faster = best["fused"][1] is not None and best["fused"][0] < best["two_functions"][0]
        return best["fused"][1] if faster else None
    for chain in fused:
        try:
            chain.lower()
            return chain
        except program.IllegalTransformation:
            continue
    return None


def _pick_template(op, neural: List, tune: bool, repeat: int, prologue: bool = False) -> Optional[List]:
    from symnas import program  # pylint: disable=import-outside-toplevel
    best, best_ms = None, float("inf")
    for template in program.cpu_templates(op):
        schedule = program.Schedule(op, neural + template)
        try:
            if not tune:
                schedule.build(prologue=prologue)
                return template
            measurement = schedule.measure(repeat=repeat, prologue=prologue)
        except program.IllegalTransformation:
            continue
        latency = min(measurement.repeats) if measurement.repeats else measurement.latency_ms
        if latency < best_ms:
            best, best_ms = template, latency
    return best

