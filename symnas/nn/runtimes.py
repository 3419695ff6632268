"""The runtimes a user would deploy a network with instead, timed beside symnas' compiled network.

Each ``Runtime`` turns a torch model (batch 1, float32, inference) into a callable on this CPU:
``TorchEager``, ``TorchScriptOptimized`` (``torch.jit.optimize_for_inference``), ``TorchCompile``
(Inductor, weights frozen), ``ONNXRuntime`` (CPU provider, threads = cores, ``ORT_ENABLE_ALL``),
``OpenVINO`` (CPU, f32, latency hint), ``TVMRelax`` (TVM's whole-network route, untuned or
MetaSchedule-tuned) and ``Symnas`` (``sn.nn.compile_network``, run as its flat plan).
A runtime whose package is not installed says so in ``missing()``; ``compare_runtimes`` lists it
by name in the result instead of dropping it, and lists a runtime that fails on a network (or
computes other numbers than torch) with its error. The optional packages come with
``pip install -e ".[baselines]"``.

``compare_runtimes`` prepares every runtime on every network, checks each output against torch
eager, and times all of them in one process with interleaved rounds (so load changes hit all
alike); ``time_interleaved`` is that timing loop alone, for callables prepared elsewhere.

Example::

    import symnas as sn
    nets = {"original": sn.nn.resnet18(), "narrow": sn.nn.resnet((2, 2, 2, 2), width=32)}
    result = sn.nn.compare_runtimes(nets, [sn.nn.TorchEager(), sn.nn.ONNXRuntime()], rounds=3)
    print(result.format())
    runtime, ms = result.best("original")      # the fastest way to run the original
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import io
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyglove as pg
import torch
from torch import nn

from symnas.nn.backbones import CIFAR_SHAPE

__all__ = ["Runtime", "TorchEager", "TorchScriptOptimized", "TorchCompile", "ONNXRuntime", "OpenVINO",
           "TVMRelax", "Symnas", "default_runtimes", "compare_runtimes", "time_interleaved",
           "RuntimeComparison"]

_EXTRA = "pip install -e \".[baselines]\""


def _cores() -> int:
    from symnas.program.measure import num_threads  # pylint: disable=import-outside-toplevel
    return num_threads()


def _not_importable(*modules: str) -> Optional[str]:
    """None when every module imports, else the first one that does not and why."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            return f"{module} is not installed ({_EXTRA}): {error}"
    return None


class Runtime(pg.Object):
    """A way to run a torch model for inference on this CPU.

    ``missing()`` says why the runtime cannot run here (None when it can); ``prepare(model, x,
    net)`` returns a callable ``x -> output`` for batch-1 inputs shaped like ``x`` (``net``, the
    symbolic network, is read only by runtimes that compile from it).
    """

    @property
    def label(self) -> str:
        """The runtime's name in tables."""
        return type(self).__name__

    def missing(self) -> Optional[str]:
        return None

    def prepare(self, model: nn.Module, x: torch.Tensor, net: Any = None) -> Callable[[torch.Tensor], Any]:
        raise NotImplementedError


class TorchEager(Runtime):
    """The model itself, with torch's threads = cores."""

    @property
    def label(self) -> str:
        return "torch eager"

    def prepare(self, model, x, net=None):
        return model.eval()


class TorchScriptOptimized(Runtime):
    """``torch.jit.optimize_for_inference``: traced, frozen, batch norms folded, oneDNN layouts."""

    @property
    def label(self) -> str:
        return "torch jit-opt"

    def prepare(self, model, x, net=None):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(model).eval(), x))


class TorchCompile(Runtime):
    """``torch.compile`` (Inductor's C++ backend on CPU), with weights frozen into the graph when
    ``freezing`` (constant folding, batch norms folded, oneDNN weight prepacking: the setting
    PyTorch recommends for CPU inference); ``mode`` is ``torch.compile``'s."""
    freezing: bool = True
    mode: Optional[str] = None

    @property
    def label(self) -> str:
        return "torch.compile" + (", frozen" if self.freezing else "") + (f", {self.mode}" if self.mode else "")

    def missing(self):
        import shutil  # pylint: disable=import-outside-toplevel
        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "torch.compile needs a C++ compiler (g++, c++ or clang++) on PATH"
        return None

    def prepare(self, model, x, net=None):
        import torch._dynamo  # pylint: disable=import-outside-toplevel
        import torch._inductor.config as inductor  # pylint: disable=import-outside-toplevel
        compiled = torch.compile(copy.deepcopy(model).eval(), mode=self.mode)
        # Inductor's C++ kernels fix their OpenMP thread count when they are generated
        torch.set_num_threads(_cores())
        with torch.no_grad(), inductor.patch(freezing=self.freezing):
            compiled(x)
        return compiled


class _SessionCall:
    """An ONNX Runtime session called like a torch module."""

    def __init__(self, session, input_name: str):
        self.session, self.input_name = session, input_name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])


def _onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    """The model exported to ONNX (TorchScript exporter: it needs no onnxscript)."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model).eval(), (x,), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=17)
    return buffer.getvalue()


class ONNXRuntime(Runtime):
    """ONNX Runtime's CPU provider on the model exported to ONNX: ``threads`` intra-op threads
    (None: one per core), one inter-op thread, every graph optimisation (``ORT_ENABLE_ALL``)."""
    threads: Optional[int] = None

    @property
    def label(self) -> str:
        return "ONNX Runtime"

    def missing(self):
        return _not_importable("onnxruntime", "onnx")

    def prepare(self, model, x, net=None):
        import onnxruntime as ort  # pylint: disable=import-outside-toplevel
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or _cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(_onnx_bytes(model, x), options, providers=["CPUExecutionProvider"])
        return _SessionCall(session, "x")


class _RequestCall:
    """An OpenVINO infer request called like a torch module."""

    def __init__(self, request):
        self.request = request

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.numpy()}, share_inputs=True)
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


class OpenVINO(Runtime):
    """OpenVINO's CPU plugin on the model converted from torch: ``threads`` threads (None: one per
    core), one stream, the latency hint, and ``precision`` (``"f32"`` by default: on a CPU with
    AMX or AVX-512 BF16 OpenVINO would otherwise compute in bf16, other numbers than fp32)."""
    threads: Optional[int] = None
    precision: str = "f32"

    @property
    def label(self) -> str:
        return "OpenVINO" + ("" if self.precision == "f32" else f" {self.precision}")

    def missing(self):
        return _not_importable("openvino")

    def prepare(self, model, x, net=None):
        import openvino as ov  # pylint: disable=import-outside-toplevel
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = ov.convert_model(copy.deepcopy(model).eval(), example_input=x)
        compiled = ov.Core().compile_model(converted, "CPU", {
            "INFERENCE_NUM_THREADS": self.threads or _cores(), "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision})
        return _RequestCall(compiled.create_infer_request())


class _RelaxCall:
    """A Relax virtual machine called like a torch module; ``tasks``/``trials``/``seconds`` of its tuning."""

    def __init__(self, vm, seconds: float, tasks: int, trials: int):
        self.vm, self.seconds, self.tasks, self.trials = vm, seconds, tasks, trials

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import tvm  # pylint: disable=import-outside-toplevel
        out = self.vm["main"](tvm.runtime.tensor(x.numpy()))
        out = out[0] if not hasattr(out, "numpy") else out
        return torch.from_numpy(out.numpy())


class TVMRelax(Runtime):
    """TVM's whole-network route: ``torch.export`` -> ``from_exported_program`` -> Relax, tuned by
    MetaSchedule (``trials_per_task`` measured candidates per fused task, with the
    ``static_shape_tuning`` pipeline; needs xgboost) or untuned (``trials_per_task=0``: the
    default CPU pipeline). ``work_dir`` keeps MetaSchedule's logs (default: a temporary folder)."""
    trials_per_task: int = 0
    work_dir: Optional[str] = None

    def _on_bound(self):
        super()._on_bound()
        if self.trials_per_task < 0:
            raise ValueError(f"trials_per_task must be >= 0, got {self.trials_per_task}")

    @property
    def label(self) -> str:
        return f"TVM Relax + MetaSchedule {self.trials_per_task}/task" if self.trials_per_task else "TVM Relax"

    def missing(self):
        return _not_importable("xgboost") if self.trials_per_task else None

    def prepare(self, model, x, net=None):
        # pylint: disable=import-outside-toplevel
        import tvm
        from tvm import relax
        from tvm.relax.frontend.torch import from_exported_program
        from tvm.s_tir import meta_schedule as ms
        from symnas.program.lower_tvm import host_target
        if self.trials_per_task:
            reason = _not_importable("xgboost")
            if reason:
                raise ImportError(f"Relax's tuning pipeline needs xgboost: {reason}")
        target = tvm.target.Target(host_target())
        with torch.no_grad():
            program = torch.export.export(copy.deepcopy(model).eval(), (x,))
        mod = from_exported_program(program, keep_params_as_input=False)
        start, tasks, trials = time.time(), 0, 0
        if self.trials_per_task:
            with target:   # the passes the tuning pipeline runs before it extracts tasks
                fused = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                                  relax.transform.CanonicalizeBindings(),
                                                  relax.get_pipeline("zero")])(mod)
            tasks = len(ms.relax_integration.extract_tasks(fused, target))
            trials = self.trials_per_task * tasks
            with tempfile.TemporaryDirectory() as tmp:
                mod = relax.get_pipeline("static_shape_tuning", total_trials=trials, target=target,
                                         work_dir=self.work_dir or tmp,
                                         max_trials_per_task=self.trials_per_task)(mod)
        vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
        return _RelaxCall(vm, time.time() - start, tasks, trials)


class Symnas(Runtime):
    """``sn.nn.compile_network(net, model)``: every conv a TVM kernel (with ``tune``, the fastest
    measured CPU template), batch norms, ReLUs and residual adds fused, run as the flat plan
    (``plan=False``: through the torch modules). ``fuse_preactivation=False`` leaves the batch norm
    + ReLU before a conv to torch. Needs the symbolic network ``net``."""
    tune: bool = True
    plan: bool = True
    fuse_preactivation: bool = True

    @property
    def label(self) -> str:
        return ("symnas" + ("" if self.plan else ", through the modules")
                + ("" if self.fuse_preactivation else ", pre-activation in torch"))

    def prepare(self, model, x, net=None):
        from symnas.nn.compile import compile_network  # pylint: disable=import-outside-toplevel
        if net is None:
            raise ValueError("the symnas runtime compiles the symbolic network: pass net")
        compiled = compile_network(net, copy.deepcopy(model), in_shape=tuple(x.shape[1:]), batch=x.shape[0],
                                   tune=self.tune, plan=self.plan, fuse_preactivation=self.fuse_preactivation)
        compiled(x)    # builds (and checks) the flat plan
        return compiled


def default_runtimes(relax: bool = False) -> List[Runtime]:
    """Every runtime above (Relax untuned only with ``relax``: it compiles for minutes per network)."""
    runtimes = [TorchEager(), TorchScriptOptimized(), TorchCompile(), ONNXRuntime(), OpenVINO()]
    return runtimes + ([TVMRelax()] if relax else []) + [Symnas()]


def time_interleaved(callables: Mapping[str, Callable], x: torch.Tensor, rounds: int = 9, repeat: int = 3,
                     min_repeat_ms: float = 100.0) -> Dict[str, List[float]]:
    """Per-round milliseconds per call of each callable on ``x`` (each round's best of ``repeat``
    timed runs), rounds interleaved so load changes hit all alike. A timed run calls until
    ``min_repeat_ms`` have passed, so a load burst cannot stretch it (a call count calibrated on one
    fast call could). Torch runs with one thread per core (``sn.program.measure.num_threads``)."""
    from symnas.program.measure import num_threads  # pylint: disable=import-outside-toplevel
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if repeat < 1 or min_repeat_ms < 0:
        raise ValueError(f"repeat must be >= 1 and min_repeat_ms >= 0, got {repeat} and {min_repeat_ms}")
    torch.set_num_threads(num_threads())
    runs: Dict[str, List[float]] = {name: [] for name in callables}
    with torch.no_grad():
        for fn in callables.values():
            for _ in range(3):
                fn(x)
        for _ in range(rounds):
            for name, fn in callables.items():
                runs[name].append(min(_time_calls(fn, x, min_repeat_ms / 1e3) for _ in range(repeat)))
    return runs


def _time_calls(fn: Callable, x: torch.Tensor, seconds: float) -> float:
    """Milliseconds per call of ``fn(x)``, called until ``seconds`` have passed (at least once)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls * 1e3


NetworkLike = Union[Any, Tuple[Any, nn.Module]]


@dataclasses.dataclass
class RuntimeComparison:
    """What ``compare_runtimes`` measured: per network, per runtime label."""
    runs: Dict[str, Dict[str, List[float]]]            # ms per interleaved round
    missing: Dict[str, str]                            # runtime -> why it cannot run here
    failed: Dict[str, Dict[str, str]]                  # network -> runtime -> the error
    max_abs_error: Dict[str, Dict[str, float]]         # against torch eager
    prepare_seconds: Dict[str, Dict[str, float]]
    prepared: Dict[str, Dict[str, Callable]] = dataclasses.field(repr=False, default_factory=dict)

    @property
    def ms(self) -> Dict[str, Dict[str, float]]:
        """Network -> runtime -> the best round (ms)."""
        return {net: {rt: min(v) for rt, v in by_rt.items()} for net, by_rt in self.runs.items()}

    def best(self, network: str) -> Tuple[str, float]:
        """(runtime, ms) of the fastest runtime on ``network``."""
        times = self.ms[network]
        if not times:
            raise ValueError(f"no runtime ran network {network!r}: {self.failed.get(network)}")
        label = min(times, key=times.get)
        return label, times[label]

    def format(self, columns: Optional[Sequence[str]] = None) -> str:
        """A table: one row per runtime, one column per network (ms), then the missing and the
        failed runtimes by name."""
        columns = list(columns or self.runs)
        labels = list(dict.fromkeys(rt for net in columns for rt in list(self.runs[net]) + list(self.failed[net])))
        width = max([len(r) for r in labels] + [12])
        lines = [f"  {'runtime':{width}s} " + " ".join(f"{c[:18]:>18s}" for c in columns)]
        ms = self.ms
        fastest = {net: self.best(net)[0] if ms[net] else None for net in columns}
        for label in labels:
            cells = []
            for net in columns:
                if label in ms[net]:
                    star = "*" if fastest[net] == label else " "
                    cells.append(f"{ms[net][label]:17.2f}{star}")
                else:
                    cells.append(f"{'failed':>18s}")
            lines.append(f"  {label:{width}s} " + " ".join(cells))
        lines.append("  (* the fastest on that network)")
        for label, reason in self.missing.items():
            lines.append(f"  missing: {label}: {reason}")
        for net in columns:
            for label, error in self.failed[net].items():
                lines.append(f"  failed: {label} on {net}: {error}")
        return "\n".join(lines)


def compare_runtimes(networks: Mapping[str, NetworkLike], runtimes: Optional[Sequence[Runtime]] = None,
                     rounds: int = 9, in_shape: Sequence[int] = CIFAR_SHAPE, atol: float = 1e-3,
                     prepared: Optional[Mapping[str, Mapping[str, Callable]]] = None,
                     seed: int = 0, min_repeat_ms: float = 100.0) -> RuntimeComparison:
    """Times every runtime on every network at batch 1, in this process, ``rounds`` interleaved rounds.

    ``networks`` maps a name to a symbolic network (built here with ``seed``) or to ``(net, model)``
    with the torch model whose weights to use. ``runtimes`` defaults to ``default_runtimes()``.
    ``prepared`` adds callables prepared elsewhere (network -> label -> callable), timed alike.
    Each round times each callable three times for ``min_repeat_ms`` and keeps the best.
    A runtime that is missing goes to ``missing``; one that raises while preparing or running, or
    whose output differs from torch eager by more than ``atol``, goes to ``failed`` with the error.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    runtimes = list(default_runtimes() if runtimes is None else runtimes)
    labels = [rt.label for rt in runtimes]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two runtimes share a label: {labels}")
    unknown = set(prepared or {}) - set(networks)
    if unknown:
        raise KeyError(f"prepared names networks that are not compared: {sorted(unknown)}")
    x = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(seed))
    missing = {rt.label: reason for rt in runtimes if (reason := rt.missing()) is not None}
    result = RuntimeComparison({}, missing, {}, {}, {})
    timed: Dict[Tuple[str, str], Callable] = {}
    for name, value in networks.items():
        net, model = value if isinstance(value, tuple) else (value, None)
        if model is None:
            torch.manual_seed(seed)
            model = net.build(tuple(in_shape))
        model.eval()
        with torch.no_grad():
            reference = model(x)
        result.failed[name], result.max_abs_error[name], result.prepare_seconds[name] = {}, {}, {}
        result.prepared[name] = {}
        candidates = [(rt.label, rt) for rt in runtimes if rt.label not in missing]
        extra = dict((prepared or {}).get(name, {}))
        clash = set(extra) & set(labels)
        if clash:
            raise ValueError(f"prepared callables for {name!r} reuse runtime labels: {sorted(clash)}")
        for label, runtime in candidates + list(extra.items()):
            start = time.perf_counter()
            try:
                fn = runtime.prepare(model, x, net) if isinstance(runtime, Runtime) else runtime
                with torch.no_grad():
                    error = float((fn(x) - reference).abs().max())
            except Exception as e:  # pylint: disable=broad-except  (a failing runtime is reported)
                result.failed[name][label] = f"{type(e).__name__}: {str(e).strip()[:300]}"
                continue
            result.prepare_seconds[name][label] = time.perf_counter() - start
            result.max_abs_error[name][label] = error
            if not error <= atol:
                result.failed[name][label] = f"output differs from torch eager by {error:.3g} (> {atol})"
                continue
            result.prepared[name][label] = fn
            timed[(name, label)] = fn
    runs = time_interleaved({f"{n} | {l}": fn for (n, l), fn in timed.items()}, x, rounds=rounds,
                            min_repeat_ms=min_repeat_ms)
    result.runs = {name: {} for name in networks}
    for name, label in timed:
        result.runs[name][label] = runs[f"{name} | {label}"]
    return result
