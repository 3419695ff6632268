"""NAS as program transformation exploration (seed 001 §6-7) on CIFAR backbones, on this CPU.

For each backbone:
  1. kernel table: every distinct transformable conv shape x neural sequence x program
     template is compiled with TVM and timed (batch 1); the original convs too, and the
     same convs in torch (oneDNN). Cached: a layer shape is measured once; ``--kernel-table FILE``
     keeps the latencies for later runs on this machine (they skip those compiles and search the
     same timings).
  2. network search: ``--trials`` candidate networks from ``sn.spaces.network_transformations``
     (one transformation sequence per transformable conv) proposed by a ``sn.algorithms``
     algorithm through ``sn.search``. Each candidate is first checked for legality by Fisher
     Potential (per layer, one CIFAR minibatch at initialisation, cached per distinct
     layer transformation); illegal ones are rejected before any compilation, with both
     scores recorded; legal ones get the sum of their kernels' latencies from the table.
  3. the chosen network (the best of the search or, when better, the per-layer optimum over
     the scored options) is checked exactly, as a whole network on the same batch and seed;
     every layer transformation that fails there moves to its next-fastest option that was
     legal in isolation (for ``--repair-rounds`` rounds, then to its original operator) until
     the network passes, so the reported network is legal by the exact check.
     Before that, the search's ``--exact-candidates`` best legal candidates are checked exactly in
     order and the first that passes is taken. In network mode, when moving the failing layers
     cannot make the network legal, the fewest earliest transformed layers get their original
     operators back (bisection). ``--objective fisher|params`` makes the search maximise the
     network's Fisher Potential / conv weights within ``--target-speedup`` instead of minimising
     latency; ``--fill-budget`` spends what is left of that latency budget after the exact check
     on conv weights (``--fill-by snip``: on the layers' SNIP scores, ranked on ``--fill-images`` of
     the batch), one upgrade at a time, the most per ms first, each kept only when the network stays
     legal exactly. ``--channel-shuffle``
     makes every grouping in the menu read interleaved input channels (``sn.program.ChannelShuffle``);
     ``--keep LAYER ...`` leaves the named layers original (out of the search space).
     ``--no-dead-channels`` offers no input bottleneck to a conv that alone reads the conv before
     it (the channels it skipped would be computed for nothing; layer shapes shared with convs
     that read a residual stream keep them, so on the ResNets it changes nothing).
     ``--proxy NAME`` judges legality by another zero-cost proxy of ``sn.proxies`` (snip,
     grad_norm, synflow, naswot; with ``--context tail``) instead of Fisher Potential.
  4. tables: per-layer latencies (original torch / TVM, NAS-only = group G=2 then compile,
     ours), end-to-end batch-1 latency of whole networks in one process (torch eager, and
     every conv a TVM kernel via sn.nn.compile_network) beside the per-layer sums of the
     compiled conv kernels, rejection rate, search time,
     parameters, the share of ours' conv FLOPs spent on channels that no conv reads
     (``sn.nn.unread_channel_flops``); exact joint legality check of the chosen network.

Usage::

    python benchmarks/nas_pte.py --backbone resnet34 --trials 1000
    python benchmarks/nas_pte.py --quick            # resnet18, 100 trials, small Fisher batch
    python benchmarks/nas_pte.py --mode network --fill-budget --fill-by snip --target-speedup 4
"""
from __future__ import annotations

import argparse
import copy
import datetime
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence

import numpy as np
import pyglove as pg
import torch

import symnas as sn
from symnas.materialize import Materializer
from symnas.program.measure import time_torch, time_torch_conv
from symnas.spaces import describe_neural

MEAN = np.array([125.3, 123.0, 113.9], dtype=np.float32) / 255
STD = np.array([63.0, 62.1, 66.7], dtype=np.float32) / 255


def cifar_path() -> str:
    """$SYMNAS_DATA/cifar10/cifar10_jpeg.npz; FileNotFoundError naming what is missing."""
    root = os.environ.get("SYMNAS_DATA")
    if not root:
        raise FileNotFoundError("the Fisher batch needs CIFAR-10: set SYMNAS_DATA to the data folder that holds "
                                "cifar10/cifar10_jpeg.npz (../shared/data in this project)")
    path = os.path.join(root, "cifar10", "cifar10_jpeg.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"the Fisher batch needs CIFAR-10: {path} does not exist (SYMNAS_DATA={root})")
    return path


def cifar_batch(n: int, seed: int):
    """``n`` random CIFAR-10 training images (normalised NCHW) and labels from $SYMNAS_DATA."""
    from PIL import Image
    data = np.load(cifar_path())
    raw, off, labels = data["train_jpeg"].tobytes(), data["train_offsets"], data["y_train"]
    idx = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(raw[off[i]:off[i + 1]])).convert("RGB"))
                       for i in idx]).astype(np.float32) / 255
    images = (images - MEAN) / STD
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels[idx].astype(np.int64))


def fmt(steps) -> str:
    return " -> ".join(pg.format(s, compact=True) for s in steps) if steps else "original"


def _frozen(value):
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, pg.Object):
        return (type(value).__name__, _frozen(dict(value.sym_init_args.sym_items())))
    return value


_SEALED_KEYS: Dict[int, tuple] = {}


def steps_key(steps) -> tuple:
    """A hashable key of a step list, equal for equal steps; ~20x cheaper than ``fmt``
    (which the search would otherwise call for every layer of every candidate). A sealed
    list (the space's shared, read-only step lists) is keyed once and then by identity."""
    if isinstance(steps, pg.List) and steps.is_sealed:
        cached = _SEALED_KEYS.get(id(steps))
        if cached is None or cached[0] is not steps:
            cached = _SEALED_KEYS[id(steps)] = (steps, tuple(_frozen(s) for s in steps))
        return cached[1]
    return tuple(_frozen(s) for s in steps)


def template_name(steps) -> str:
    splits = [f"{s.loop}/{s.factor}" for s in steps if type(s).__name__ == "Split"]
    return "tile(" + ",".join(splits) + ")"


def this_machine() -> str:
    return f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


class KernelTable:
    """TVM latency of (layer shape, neural sequence, template), measured once each.

    ``save(path)`` / ``load(path)`` keep the latencies in a JSON file, so a later run on the same
    machine (another target, ``--keep``, algorithm or backbone order) reuses them instead of
    compiling and timing every kernel again, and searches the same timings. ``cold_weights=True``
    times each kernel with its weights flushed from the caches (as inside a network at batch 1);
    a saved table keeps its mode, and a table of the other mode is refused.
    """

    def __init__(self, repeat: int, cold_weights: bool = False):
        self.repeat = repeat
        self.cold_weights = cold_weights
        self.latency: Dict[Any, float] = {}
        self.compiles = 0
        self.seconds = 0.0
        self._op_keys: Dict[int, tuple] = {}
        self._loaded: set = set()       # keys read from a file: already the min of two timings

    def save(self, path: str) -> None:
        entries = {repr(k): (v if math.isfinite(v) else None) for k, v in self.latency.items()}
        with open(path, "w") as f:
            json.dump({"machine": this_machine(), "repeat": self.repeat, "cold_weights": self.cold_weights,
                       "date": f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC", "latency_ms": entries}, f)

    def load(self, path: str) -> int:
        """Reads a saved table (``ValueError`` naming the file when it is not one); returns the
        number of latencies read. A table from another machine is used with a warning."""
        import ast  # pylint: disable=import-outside-toplevel
        try:
            saved = sn.load(path)   # plain JSON through the safe loader; keys are literals
            entries = {ast.literal_eval(k): (math.inf if v is None else float(v))
                       for k, v in saved["latency_ms"].items()}
        except (OSError, ValueError, KeyError, TypeError, SyntaxError, AttributeError) as e:
            raise ValueError(f"--kernel-table {path}: not a kernel table saved by nas_pte ({e})") from e
        if bool(saved.get("cold_weights", False)) != self.cold_weights:
            modes = {True: "with cold weights (--kernel-timing cold)",
                     False: "with warm weights (--kernel-timing warm)"}
            raise ValueError(f"--kernel-table {path}: its kernels were timed {modes[not self.cold_weights]}, "
                             f"this run times them {modes[self.cold_weights]}; use another file")
        if saved.get("machine") != this_machine():
            print(f"  warning: kernel table {path} was measured on {saved.get('machine')!r}, "
                  f"this is {this_machine()!r}", flush=True)
        self.latency.update(entries)
        self._loaded.update(entries)
        return len(entries)

    def _op_key(self, op) -> tuple:
        if id(op) not in self._op_keys:    # operators are the same few objects in every call
            self._op_keys[id(op)] = (op, _frozen(op))
        return self._op_keys[id(op)][1]

    def remeasure(self, op, neural, program) -> float:
        """Times a measured kernel again (the build is cached) and keeps the lower value:
        load from other processes only ever adds time."""
        key = (self._op_key(op), steps_key(neural), steps_key(program))
        if key in self._loaded:
            return self.latency[key]
        old = self.latency.pop(key, math.inf)
        self.latency[key] = min(old, self.measure(op, neural, program))
        self.compiles -= 1                # the build was cached; only the timing is new
        return self.latency[key]

    def measure(self, op, neural, program) -> float:
        key = (self._op_key(op), steps_key(neural), steps_key(program))
        if key not in self.latency:
            start = time.perf_counter()
            try:
                # best of the repeats: other processes share this CPU, and contention only adds time
                m = sn.program.Schedule(op, list(neural) + list(program)).measure(
                    repeat=self.repeat, cold_weights=self.cold_weights)
                value = min(m.repeats) if m.repeats else m.latency_ms
            except (sn.program.IllegalTransformation, ValueError) as e:
                print(f"    illegal schedule {fmt(neural)} + {template_name(program)}: {str(e)[:100]}")
                value = math.inf
            self.compiles += 1
            self.seconds += time.perf_counter() - start
            self.latency[key] = value
        return self.latency[key]


def trim_memory() -> None:
    """Collects garbage and hands freed heap back to the OS (whole-network Fisher passes on
    DenseNet-161 at batch 128 otherwise leave ~1.5 GB each in glibc's arenas)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def end_to_end_timings(models: Dict[str, torch.nn.Module], rounds: int = 5) -> Dict[str, List[float]]:
    """Batch-1 latency (ms) of each model, all in this process, rounds interleaved so load
    changes hit every model alike. Torch models run with torch's threads; compiled networks
    (TVM convs) run their torch glue on one thread (see sn.program.torch_tvm)."""
    x = torch.randn(1, 3, 32, 32)
    runs: Dict[str, List[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            with torch.no_grad():
                runs[name].append(min(time_torch(model, x, repeat=3, min_repeat_ms=100.0)))
    return runs


def kernel_share(compiled, rounds: int = 20) -> Dict[str, float]:
    """Per-forward time (ms) of a compiled network split into its TVM kernels and the rest,
    measured inside the network (weights come from memory, not from a warm cache)."""
    from symnas.program.torch_tvm import TVMKernelModule
    spent = {}
    modules = [(n, m) for n, m in compiled.model.named_modules() if isinstance(m, TVMKernelModule)]
    originals = {n: m._func for n, m in modules}

    def timed(name, func):
        def call(*args):
            start = time.perf_counter()
            func(*args)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return call
    x = torch.randn(1, 3, 32, 32)
    try:
        for n, m in modules:
            m._func = timed(n, originals[n])
        compiled(x)
        spent.clear()
        start = time.perf_counter()
        for _ in range(rounds):
            compiled(x)
        total = (time.perf_counter() - start) * 1000 / rounds
    finally:
        for n, m in modules:
            m._func = originals[n]
    per_kernel = {n: v * 1000 / rounds for n, v in spent.items()}
    return {"total": total, "kernels": sum(per_kernel.values()), "per_kernel": per_kernel}


def torch_optimized(model: torch.nn.Module) -> torch.nn.Module:
    """Torch's own inference compilation of ``model``: traced, frozen, batch norm folded into
    the convs, oneDNN layouts (``torch.jit.optimize_for_inference``)."""
    with torch.no_grad():
        return torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(model).eval(),
                                                                torch.randn(1, 3, 32, 32)))


def relax_latency(model: torch.nn.Module, repeat: int = 3) -> Dict[str, Any]:
    """The whole network through TVM's Relax frontend (``torch.export`` ->
    ``from_exported_program`` -> ``tvm.compile`` with TVM's default CPU pipeline), batch 1.

    TVM 0.27 has no default CPU schedule for a convolution (dlight's CPU rules cover
    GEMV and reductions), so the convs run as plain loop nests unless tuned; this is the
    untuned number. Returns ``{"ms": best of repeat}`` or ``{"error": why}``.
    """
    try:
        import tvm
        from tvm import relax
        from tvm.relax.frontend.torch import from_exported_program
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            program = torch.export.export(copy.deepcopy(model).eval(), (x,))
        executable = tvm.compile(from_exported_program(program, keep_params_as_input=False),
                                 target=tvm.target.Target(sn.program.lower_tvm.host_target()))
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
    except Exception as e:   # pylint: disable=broad-except  (a baseline that fails is reported, not fatal)
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def torch_conv_timings(ops: List[Any]) -> List[float]:
    """oneDNN latency (ms) of each conv operator alone, batch 1."""
    result = []
    for op in ops:
        conv = torch.nn.Conv2d(op.c_in, op.c_out, op.k, stride=op.stride, padding=op.pad, groups=op.groups,
                               bias=False).eval()
        with torch.no_grad():
            result.append(min(time_torch(conv, torch.randn(1, op.c_in, op.h, op.w), repeat=5,
                                         min_repeat_ms=20.0)))
    return result


def drop_input_bottlenecks(menus: Dict[Any, List], sites, private: Sequence[str]) -> None:
    """Removes the input-bottleneck options (``B(ci)``) of the convs whose input only they read (in
    place): the channels such an option skips would be computed by the conv before it for nothing.
    A layer shape that convs with a shared input have too keeps its options, and is named."""
    private = set(private)
    shared_keys = {s.key for s in sites if s.path not in private}
    mixed = set()
    for key in {s.key for s in sites if s.path in private}:
        if key in shared_keys:
            mixed.add(key)
            continue
        menus[key] = [steps for steps in menus[key]
                      if not any(isinstance(step, sn.program.Bottleneck) and step.axis == "ci" for step in steps)]
    if mixed:
        print(f"  --no-dead-channels: {len(mixed)} layer shapes also read a shared input and keep B(ci): "
              + ", ".join(map(str, sorted(mixed))), flush=True)


def run_backbone(name: str, args) -> Dict[str, Any]:
    print(f"\n=== {name} ===", flush=True)
    original = sn.nn.backbone(name)
    sites = sn.spaces.drop_kept_layers(sn.nn.transformable_convs(original), args.keep)
    all_convs = sn.nn.transformable_convs(original, include_all=True)
    fixed_convs = [s for s in all_convs if s.path not in {t.path for t in sites}]
    ops = {}
    for s in all_convs:
        ops.setdefault(s.key, s.operator())

    # 1. kernel table ------------------------------------------------------------------
    table = KernelTable(args.repeat, args.cold_weights)
    loaded = table.load(args.kernel_table) if args.kernel_table and os.path.exists(args.kernel_table) else 0
    if loaded:
        print(f"  kernel table: {loaded} latencies read from {args.kernel_table}", flush=True)
    menus = {k: sn.spaces.neural_menu(op, args.channel_shuffle) for k, op in ops.items()
             if k in {s.key for s in sites}}
    if args.no_dead_channels:
        drop_input_bottlenecks(menus, sites, sn.nn.private_input_convs(original))
    templates = {k: sn.spaces.program_templates(op)[:args.max_templates] for k, op in ops.items()}
    best: Dict[Any, List] = {}          # key -> per neural option (latency, template)
    torch_conv: Dict[Any, float] = {}
    t0 = time.perf_counter()
    for key, op in ops.items():
        options = menus.get(key, [[]])
        best[key] = []
        for neural in options:
            lat = [(table.measure(op, neural, prog), prog) for prog in templates[key]]
            best[key].append(min(lat, key=lambda t: t[0]))
        print(f"  {op.c_in:4d}->{op.c_out:4d} {op.h}x{op.w} k{op.k} s{op.stride}: TVM ms "
              + ", ".join(f"{describe_neural(n)} {b[0]:.3f}" for n, b in zip(options, best[key])), flush=True)
    # a second timing of each option's best kernel: a load spike during the first one would
    # otherwise decide the table (and the original convs are every speedup's denominator)
    for key, op in ops.items():
        for i, neural in enumerate(menus.get(key, [[]])):
            latency, prog = best[key][i]
            if math.isfinite(latency):
                best[key][i] = (table.remeasure(op, neural, prog), prog)
    # the NAS-only baseline (group G=2 then compile) per layer shape: from the table when the menu
    # offers plain G=2, else timed here (--channel-shuffle offers only shuffled groupings)
    nas_steps = [sn.program.Group(2)]
    nas_best: Dict[Any, tuple] = {}
    for key in menus:
        found = [i for i, n in enumerate(menus[key]) if steps_key(n) == steps_key(nas_steps)]
        nas_best[key] = best[key][found[0]] if found else min(
            ((table.measure(ops[key], nas_steps, prog), prog) for prog in templates[key]), key=lambda t: t[0])
    table_seconds = time.perf_counter() - t0
    if args.kernel_table:
        table.save(args.kernel_table)
    # a neural sequence that no template compiles for is not offered to the search
    for key in menus:
        keep = [i for i in range(len(menus[key])) if i == 0 or math.isfinite(best[key][i][0])]
        if len(keep) < len(menus[key]):
            print(f"  {key}: not offered (no template compiles): "
                  + ", ".join(describe_neural(menus[key][i]) for i in range(len(menus[key])) if i not in keep))
            menus[key], best[key] = [menus[key][i] for i in keep], [best[key][i] for i in keep]

    # 2. search ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    x, y = cifar_batch(args.fisher_batch, args.seed)
    legality = sn.proxies.LegalityCheck(seed=args.seed, mode=args.mode, proxy=args.proxy)
    scorer = legality.isolated_scorer(original, x, y, context=args.context)
    init_seconds = time.perf_counter() - t0
    print(f"  {args.proxy} of the original ({args.fisher_batch} images): {init_seconds:.1f} s", flush=True)

    site_by_path = {s.path: s for s in sites}
    key_by_path = {s.path: s.key for s in sites}    # a site's key is recomputed on each read (5 us)
    fixed_tvm = sum(best[s.key][0][0] for s in fixed_convs)
    orig_tvm_total = fixed_tvm + sum(best[s.key][0][0] for s in sites)
    neural_index = {k: {steps_key(n): i for i, n in enumerate(m)} for k, m in menus.items()}
    layer_legal: Dict[Any, Any] = {}    # (path, neural idx) -> (legal, cand score)

    def layer_check(path: str, idx: int):
        if (path, idx) not in layer_legal:
            site = site_by_path[path]
            sched = sn.program.Schedule(site.operator(), list(menus[site.key][idx]))
            orig = scorer.original_scores[site.torch_name]
            try:
                cand = scorer.score(path, sched)
                layer_legal[(path, idx)] = (cand >= orig, cand, orig, "")
            except sn.proxies.NonFiniteScore as e:
                layer_legal[(path, idx)] = (False, float("nan"), orig, e.reason)
        return layer_legal[(path, idx)]

    fisher_original = sum(scorer.original_scores.values())

    def nas_layer_legal(path: str) -> bool:
        site = site_by_path[path]
        in_menu = neural_index[site.key].get(steps_key(nas_steps))
        if in_menu is not None:
            return layer_check(path, in_menu)[0]
        try:
            return scorer.score(path, sn.program.Schedule(site.operator(), nas_steps)) >= \
                scorer.original_scores[site.torch_name]
        except sn.proxies.NonFiniteScore:
            return False

    counts = {"transformed": 0, "uncompilable": 0}
    # the search's budget; --fill-budget spends orig_tvm_total / args.target_speedup after it, whatever the objective
    budget = orig_tvm_total / args.target_speedup if args.objective != "latency" else math.inf
    layer_weights: Dict[Any, int] = {}  # (layer key, neural idx) -> weights of the transformed conv

    def weights_of(key, idx: int) -> int:
        if (key, idx) not in layer_weights:
            layer_weights[(key, idx)] = sn.program.Schedule(ops[key], list(menus[key][idx])).params
        return layer_weights[(key, idx)]
    original_weights = sum(weights_of(s.key, 0) for s in sites)

    def legal_reward(latency: float, fisher: float, weights: int) -> float:
        # --objective latency: the fastest legal network. fisher / params: within the latency budget the
        # highest network Fisher Potential / the most conv weights (reward = ratio to the original's, > 0);
        # a legal network over the budget ranks below every one within it, faster above slower
        if args.objective == "latency" or latency > budget:
            return -latency
        return fisher / fisher_original if args.objective == "fisher" else weights / original_weights

    def evaluate(candidate) -> Dict[str, Any]:
        counts["transformed"] += sum(1 for l in candidate.layers if l.neural)
        failing, cand_total, latency, weights = [], fisher_original, fixed_tvm, original_weights
        illegal = []                    # (site, its kernel's latency, candidate - original score)
        for layer in candidate.layers:
            site, key = site_by_path[layer.path], key_by_path[layer.path]
            idx = neural_index[key][steps_key(layer.neural)]
            layer_ms = table.measure(ops[key], layer.neural, layer.program)
            if not math.isfinite(layer_ms):
                # this template does not compile for this neural sequence: like an illegal layer
                # transformation, the layer keeps its original operator (best compiled kernel)
                counts["uncompilable"] += 1
                latency += best[key][0][0]
                continue
            latency += layer_ms
            if idx:
                ok, cand, orig, _ = layer_check(layer.path, idx)
                cand_total += cand - orig
                weights += weights_of(key, idx) - weights_of(key, 0)
                if not ok:
                    failing.append(site.torch_name)
                    illegal.append((site, layer_ms, cand - orig, idx))
        if args.mode == "network":
            failing = [] if cand_total >= fisher_original else ["network"] * max(1, len(failing))
        elif args.rejection == "layer" and failing:
            # each illegal layer transformation is rejected on its own: that layer keeps the original
            # operator (its best compiled kernel) and the rest of the candidate goes on
            for site, layer_ms, gain, idx in illegal:
                latency += best[site.key][0][0] - layer_ms
                cand_total -= gain
                weights -= weights_of(site.key, idx) - weights_of(site.key, 0)
            return {"fisher_original": fisher_original, "fisher_candidate": cand_total, "legal": True,
                    "network_rejected": True, "rejected_layers": len(failing),
                    "reward": legal_reward(latency, cand_total, weights), "conv_weights": weights,
                    "latency_ms": latency, "reason": f"{len(failing)} illegal layer transformations rejected "
                                                     f"(kept the original layer), first {failing[0]}"}
        metrics = {"fisher_original": fisher_original, "fisher_candidate": cand_total,
                   "legal": not failing, "network_rejected": bool(failing), "rejected_layers": len(failing)}
        if failing:
            # rejected before compilation; the reward ranks it below every legal network and
            # fewer failing layers above more, so an algorithm can learn its way to legality
            metrics.update(reward=-(orig_tvm_total * (1 + len(failing)) + latency), latency_ms=None,
                           reason=(f"{args.proxy} below the original in {len(failing)} layers "
                                   f"(first {failing[0]})" if args.mode == "per_layer" else
                                   f"network {args.proxy} {cand_total:.4g} < original {fisher_original:.4g}"))
        else:
            metrics.update(reward=legal_reward(latency, cand_total, weights), latency_ms=latency,
                           conv_weights=weights, reason="legal")
        return metrics

    space = sn.spaces.network_transformations(name, menu=menus, templates=templates, keep=args.keep)
    algorithm = {"evolution": lambda: sn.algorithms.RegularizedEvolution(population_size=20, tournament_size=5,
                                                                          seed=args.seed),
                 "random": lambda: sn.algorithms.Random(seed=args.seed),
                 "reinforce": lambda: sn.algorithms.Reinforce(seed=args.seed)}[args.algorithm]()
    t1 = time.perf_counter()
    # no per-trial JSON of 30-160-layer candidates (60 ms each on DenseNet); the best is rebuilt from its DNA
    study = sn.search(space, evaluate, algorithm, num_trials=args.trials, storage=None, progress=False,
                      name=f"nas_pte_{name}", record_objects=False)
    scorings_in_search = scorer.evaluations
    # per-layer optimum (per-layer legality and summed latency decompose over layers); the options the
    # search did not propose are scored here, and that time counts as search time
    greedy = {}
    for s in sites:
        choices = []
        for idx in range(len(menus[s.key])):
            if idx == 0 or layer_check(s.path, idx)[0]:
                choices.append((best[s.key][idx][0], idx))
        greedy[s.path] = min(choices)
    greedy_tvm = fixed_tvm + sum(v[0] for v in greedy.values())
    search_seconds = init_seconds + time.perf_counter() - t1
    nas_legal = {s.path: nas_layer_legal(s.path) for s in sites}     # the NAS-only baseline's layers
    # every option of every layer is scored now: free the scorer's activations and gradients
    # (11 GB on DenseNet-161) before the whole-network checks below
    scorer.release()
    trim_memory()
    trials = study.trials
    if not study.completed:
        raise RuntimeError(f"no candidate was evaluated: {len(trials)} trials failed, the first with "
                           f"{trials['error'].dropna().iloc[0] if 'error' in trials else 'no error recorded'}")
    failed = int((trials["status"] != "completed").sum())
    trials = trials[trials["status"] == "completed"]

    def column(name):
        return trials[name] if name in trials else trials["metrics"].map(lambda m: m.get(name))
    rejected = int(column("network_rejected").astype(bool).sum())
    rejected_layer_choices = int(column("rejected_layers").sum())
    layer_candidates = len(layer_legal)
    layer_rejected = sum(1 for v in layer_legal.values() if not v[0])
    decode = Materializer(space).materialize    # PyGlove's decoder takes 40 ms per DenseNet candidate
    best_candidate = decode(study.best)
    print(f"  search: {args.trials} candidates ({args.algorithm}, "
          f"{'rejection per ' + args.rejection if args.mode == 'per_layer' else 'network legality (sum of layer scores)'}; "
          f"{'fastest legal' if args.objective == 'latency' else f'highest {args.objective} within {budget:.2f} ms of kernels'}; "
          f"{failed} failed; "
          f"{counts['uncompilable']} proposed layer kernels had no compiling template and kept the original), "
          f"{rejected} {'had an illegal layer' if args.mode == 'per_layer' else 'were illegal'} "
          f"({100 * rejected / len(trials):.1f}%); "
          f"{rejected_layer_choices} of {counts['transformed']} proposed layer transformations rejected "
          f"({100 * rejected_layer_choices / max(counts['transformed'], 1):.1f}%); {layer_candidates} distinct layer transformations scored, "
          f"{layer_rejected} illegal ({100 * layer_rejected / max(layer_candidates, 1):.1f}%); "
          f"{search_seconds:.1f} s (Fisher init {init_seconds:.1f} s, {scorings_in_search} layer scorings; "
          f"{scorer.evaluations - scorings_in_search} more for the per-layer optimum; {scorer.seconds:.0f} s "
          f"scoring in all, the rest is proposing, building and evaluating candidates)",
          flush=True)

    if args.mode == "network" or args.objective != "latency":
        greedy_tvm = math.inf   # the per-layer optimum is the fastest network under per-layer legality only
    search_tvm = evaluate(best_candidate)["latency_ms"] or math.inf

    def choice_of(candidate) -> Dict[str, Any]:
        # path -> (neural steps, program); under per-layer rejection an illegal layer keeps the original
        out = {}
        for layer in candidate.layers:
            key = key_by_path[layer.path]
            idx = neural_index[key][steps_key(layer.neural)]
            if args.mode == "per_layer" and args.rejection == "layer" and idx and not layer_check(layer.path, idx)[0]:
                out[layer.path] = ([], list(best[key][0][1]))
            else:
                out[layer.path] = (list(layer.neural), list(layer.program))
        return out

    # the best legal candidates of the search, best first, distinct: the exact check takes the first
    # of them that passes it (the isolated scores add up to an estimate of the network's)
    # (none when the per-layer optimum is chosen instead)
    shortlist, seen = [], set()
    for record in sorted(study.completed, key=lambda r: r.metrics["reward"], reverse=True):
        if len(shortlist) >= args.exact_candidates or not record.metrics.get("legal") or greedy_tvm < search_tvm:
            break
        choice = choice_of(decode(record.to_dna()))
        key = tuple((p, fmt(n), fmt(pr)) for p, (n, pr) in sorted(choice.items()))
        if key not in seen:
            seen.add(key)
            shortlist.append(choice)
    if greedy_tvm < search_tvm:
        chosen_source = "per-layer optimum over all scored options"
        chosen = {p: (menus[site_by_path[p].key][i], best[site_by_path[p].key][i][1]) for p, (_, i) in greedy.items()}
        shortlist = []
    else:
        chosen_source = f"best of the {args.algorithm} search"
        chosen = choice_of(best_candidate)

    # NAS-only: group G=2 on every transformable conv, then compiled (BlockSwap-style, no legality)
    nas_tvm = fixed_tvm + sum(nas_best[s.key][0] for s in sites)

    # 3. networks, exact legality of the chosen one, end-to-end latency -----------------
    # the search scored layers in isolation (block context); check the chosen network exactly, as a
    # whole, and give every layer that fails there its original operator back until it passes
    t0 = time.perf_counter()
    path_by_name = {s.torch_name: s.path for s in sites}
    exact_check = sn.proxies.LegalityCheck(seed=args.seed, mode=args.mode, proxy=args.proxy)
    original_scores = exact_check.layer_scores(original, x, y)
    moves: List[str] = []              # "layer: from -> to" for every layer the exact check moved

    def network_of(choice):
        return sn.nn.replace_convs(original, {p: sn.program.Schedule(site_by_path[p].operator(), n + pr)
                                              for p, (n, pr) in choice.items() if n})
    screened = []                      # exact verdicts of the shortlist, in order, until one passes
    for rank, choice in enumerate(shortlist):
        verdict = exact_check.check(original, network_of(choice), x, y, original_scores=original_scores)
        trim_memory()
        screened.append(verdict.legal)
        if verdict.legal:
            chosen = choice
            if rank:
                chosen_source += f" that passes the exact check (rank {rank + 1} of the search's legal candidates)"
            break
    if shortlist:
        print(f"  exact check of the search's {len(screened)} best legal candidates: "
              f"{'passed by rank ' + str(screened.index(True) + 1) if any(screened) else 'none passed; repairing the best'}",
              flush=True)
    tried = {p: {neural_index[site_by_path[p].key][steps_key(n)]} for p, (n, _) in chosen.items()}
    rounds = 0
    chosen_net = network_of(chosen)
    chosen_legal = any(screened)       # by the exact check
    while not chosen_legal:
        verdict = exact_check.check(original, chosen_net, x, y, original_scores=original_scores)
        trim_memory()
        failing = [path_by_name[n] for n in verdict.failing_layers if path_by_name.get(n) in chosen
                   and chosen[path_by_name[n]][0]]
        chosen_legal = verdict.legal
        if verdict.legal or not failing:
            break
        if args.mode == "network":
            # move the layers that lost the most, until their losses cover the network's deficit
            def loss(p):
                orig, cand = verdict.per_layer[site_by_path[p].torch_name]
                return orig - cand
            deficit, covered, worst = verdict.original_score - verdict.candidate_score, 0.0, []
            for p in sorted(failing, key=loss, reverse=True):
                if worst and covered >= deficit:
                    break
                worst.append(p)
                covered += loss(p)
            failing = worst
        rounds += 1
        for p in failing:
            # the next-fastest option that was legal in isolation and not tried here yet; after
            # --repair-rounds rounds (or when none is left) the original operator
            site = site_by_path[p]
            options = sorted((best[site.key][i][0], i) for i in range(1, len(menus[site.key]))
                             if i not in tried[p] and rounds <= args.repair_rounds and layer_check(p, i)[0]
                             and best[site.key][i][0] < best[site.key][0][0])
            idx = options[0][1] if options else 0
            tried[p].add(idx)
            before = describe_neural(chosen[p][0])
            chosen[p] = (list(menus[site.key][idx]), list(best[site.key][idx][1]))
            moves.append(f"{site.torch_name}: {before} -> {describe_neural(chosen[p][0])}")
        chosen_net = network_of(chosen)
    if not chosen_legal and args.mode == "network":
        # no transformed layer fails any more, yet they lower the layers after them: give the earliest
        # transformed layers (those with the most layers after them) their original operators back, as
        # few as the exact check allows (bisection; reverting all of them gives the original network)
        def reverted(count):
            out = dict(chosen)
            for p in transformed[:count]:
                out[p] = ([], list(best[site_by_path[p].key][0][1]))
            return out

        transformed = [s.path for s in sites if chosen[s.path][0]]
        low, high = min(1, len(transformed)), len(transformed)   # reverting none fails (checked above)
        while low < high:
            mid = (low + high) // 2
            ok = exact_check.check(original, network_of(reverted(mid)), x, y, original_scores=original_scores).legal
            trim_memory()
            rounds += 1
            low, high = (low, mid) if ok else (mid + 1, high)
        moves += [f"{site_by_path[p].torch_name}: {describe_neural(chosen[p][0])} -> original (prefix)" for p in transformed[:high]]
        chosen = reverted(high)
        chosen_net, chosen_legal = network_of(chosen), True
    filled: List[str] = []             # "layer: from -> to" for every upgrade --fill-budget made
    fill_checks = 0
    if args.fill_budget and not chosen_legal:
        print("  --fill-budget: skipped, the chosen network is not legal by the exact check", flush=True)
    elif args.fill_budget:
        # spend the latency budget left: upgrade the layer option that adds the most value (conv weights,
        # or SNIP with --fill-by snip) per ms and still fits; keep it when the whole network stays legal
        # by the exact check
        fill_to = orig_tvm_total / args.target_speedup
        current = fixed_tvm + sum(table.measure(ops[site_by_path[p].key], n, pr) for p, (n, pr) in chosen.items())
        refused = set()
        if args.fill_by == "snip":
            # each layer option's SNIP in the otherwise original network (exact tail context), cached
            # (ranking only: --fill-images of the batch; the exact checks use all of it)
            n_fill = min(args.fill_images or len(x), len(x))
            snip_scorer = sn.proxies.LegalityCheck(seed=args.seed, mode="network", proxy="snip").isolated_scorer(
                original, x[:n_fill], y[:n_fill], context="tail")
        snip_cache: Dict[Any, float] = {}

        def value_of(site, i: int) -> float:
            # what an option adds: conv weights, or (--fill-by snip) its SNIP score
            if args.fill_by == "weights":
                return weights_of(site.key, i)
            if (site.path, i) not in snip_cache:
                snip_cache[(site.path, i)] = (snip_scorer.original_scores[site.torch_name] if i == 0 else
                                              snip_scorer.score(site.path, sn.program.Schedule(
                                                  site.operator(), list(menus[site.key][i]))))
            return snip_cache[(site.path, i)]
        while fill_checks < args.fill_checks:
            upgrades = []
            for site in sites:
                n, pr = chosen[site.path]
                now_ms, now_v = table.measure(ops[site.key], n, pr), value_of(site, neural_index[site.key][steps_key(n)])
                for i in range(len(menus[site.key])):
                    cost = best[site.key][i][0] - now_ms
                    if current + cost > fill_to or (site.path, i) in refused or not math.isfinite(cost):
                        continue
                    gain = value_of(site, i) - now_v
                    if gain > 0:
                        upgrades.append((gain / max(cost, 1e-3), site.path, i, cost))
            if not upgrades:
                break
            _, p, i, cost = max(upgrades)
            site = site_by_path[p]
            trial = dict(chosen)
            trial[p] = (list(menus[site.key][i]), list(best[site.key][i][1]))
            fill_checks += 1
            legal = exact_check.check(original, network_of(trial), x, y, original_scores=original_scores).legal
            trim_memory()
            if legal:
                filled.append(f"{site.torch_name}: {describe_neural(chosen[p][0])} -> {describe_neural(trial[p][0])}")
                chosen, current = trial, current + cost
            else:
                refused.add((p, i))
        chosen_net = network_of(chosen)
        if args.fill_by == "snip":
            snip_scorer.release()
            trim_memory()
        print(f"  --fill-budget (by {args.fill_by}): {len(filled)} upgrades kept of {fill_checks} checked exactly "
              f"(kernels {current:.2f} ms of {fill_to:.2f}): {'; '.join(filled)}", flush=True)
    if moves:
        print(f"  exact check of the chosen network: {rounds} rounds; layer transformations that failed it moved to "
              f"their next-fastest legal option (the original operator after {args.repair_rounds} rounds): "
              f"{'; '.join(moves)}")
    ours_tvm = fixed_tvm + sum(table.measure(ops[site_by_path[p].key], n, pr) for p, (n, pr) in chosen.items())
    exact = {}
    for mode in ("per_layer", "network"):
        exact[mode] = sn.proxies.LegalityCheck(seed=args.seed, mode=mode, proxy=args.proxy).check(
            original, chosen_net, x, y, original_scores=original_scores)
    exact_seconds = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    orig_model = original.build((3, 32, 32))
    torch.manual_seed(args.seed)
    ours_model = chosen_net.build((3, 32, 32))
    nas_net = sn.nn.replace_convs(original, {s.path: sn.nn.Conv(s.out_shape[0], s.layer.kernel, stride=s.layer.stride,
                                                                 groups=2 * s.layer.groups, padding=s.layer.padding)
                                             for s in sites})
    nas_model = nas_net.build((3, 32, 32))
    params = {k: sn.nn.count_params(m) for k, m in
              (("original", orig_model), ("nas", nas_model), ("ours", ours_model))}
    keys = list(ops)
    torch_conv.update(zip(keys, torch_conv_timings([ops[k] for k in keys])))
    torch_conv_sum = sum(torch_conv[s.key] for s in all_convs)
    # whole networks in this process: torch eager, and every conv a TVM kernel (sn.nn.compile_network)
    # with the kernel table's best template; BN/ReLU/add/pool/classifier stay in torch
    t0 = time.perf_counter()
    originals = {s.path: list(best[s.key][0][1]) for s in all_convs}
    nas_programs = dict(originals)
    nas_programs.update({s.path: list(nas_best[s.key][1]) for s in sites})
    ours_programs = {p: v for p, v in originals.items() if p not in chosen or not chosen[p][0]}
    ours_programs.update({p: list(pr) for p, (n, pr) in chosen.items() if not n})
    compiled = {
        "tvm_original": sn.nn.compile_network(original, copy.deepcopy(orig_model), programs=originals),
        "tvm_nas_g2": sn.nn.compile_network(nas_net, copy.deepcopy(nas_model), programs=nas_programs),
        "tvm_ours": sn.nn.compile_network(chosen_net, copy.deepcopy(ours_model), programs=ours_programs)}
    for label, net_c in compiled.items():
        if net_c.fallbacks:
            print(f"  {label}: {len(net_c.fallbacks)} convs stayed in torch: {net_c.fallbacks}")
    compile_seconds = time.perf_counter() - t0
    x_check = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        errors = {k: float((compiled[k](x_check) - m.eval()(x_check)).abs().max())
                  for k, m in (("tvm_original", orig_model), ("tvm_nas_g2", nas_model), ("tvm_ours", ours_model))}
    for label, m in (("original", orig_model), ("ours", ours_model), ("nas", nas_model)):
        jit = torch_optimized(m)
        with torch.no_grad():
            errors[f"jit_{label}"] = float((jit(x_check) - m(x_check)).abs().max())
        compiled[f"jit_{label}"] = jit
    e2e_runs = end_to_end_timings({"torch_original": orig_model.eval(), "torch_ours": ours_model.eval(),
                                   "torch_nas": nas_model.eval(), **compiled})
    e2e = {k: min(v) for k, v in e2e_runs.items()}
    relax = relax_latency(orig_model) if args.relax else {"error": "not run (--no-relax)"}
    shares = {k: kernel_share(compiled[k]) for k in ("tvm_original", "tvm_nas_g2", "tvm_ours")}
    torch_orig, torch_ours, torch_nas = e2e["torch_original"], e2e["torch_ours"], e2e["torch_nas"]
    torch_runs = [e2e_runs["torch_original"], e2e_runs["torch_ours"], e2e_runs["torch_nas"]]
    baseline = min(torch_orig, orig_tvm_total, torch_conv_sum)          # conv sums
    baseline_e2e = min(e2e["torch_original"], e2e["jit_original"], e2e["tvm_original"],
                       relax.get("ms", math.inf))   # whole networks

    print(f"  kernel table: {table.compiles} TVM kernels compiled and timed in {table_seconds:.0f} s"
          + (" (each call with its weights flushed from the caches: --kernel-timing cold)" if args.cold_weights else ""))
    print("\n  per-layer latency (ms, batch 1; TVM = best of the program templates; NAS = G2 then compile)")
    print(f"  {'layer':28s} {'shape':22s} {'torch':>7s} {'TVM':>7s} {'NAS':>7s} {'ours':>7s} "
          f"{'x':>5s}  ours sequence (+template)   fisher orig->ours")
    rows = []
    for s in sites:
        n, pr = chosen[s.path]
        ours_ms = table.measure(ops[s.key], n, pr)
        idx = neural_index[s.key][steps_key(n)]
        _, cand, orig, _ = layer_check(s.path, idx) if idx else (True, scorer.original_scores[s.torch_name],
                                                                  scorer.original_scores[s.torch_name], "")
        g2 = nas_best[s.key][0]
        row = dict(layer=s.torch_name, shape=f"{s.in_shape[0]}->{s.out_shape[0]} {s.in_shape[1]}x{s.in_shape[2]} "
                   f"s{s.layer.stride}", torch_ms=torch_conv[s.key], tvm_ms=best[s.key][0][0], nas_ms=g2,
                   ours_ms=ours_ms, sequence=describe_neural(n), template=template_name(pr), fisher_original=orig,
                   fisher_ours=cand, nas_legal=nas_legal[s.path])
        rows.append(row)
        speed = min(row["torch_ms"], row["tvm_ms"]) / ours_ms
        print(f"  {row['layer']:28s} {row['shape']:22s} {row['torch_ms']:7.3f} {row['tvm_ms']:7.3f} {g2:7.3f} "
              f"{ours_ms:7.3f} {speed:5.2f}  {row['sequence'] + ' ' + row['template']:28s} {orig:.3g}->{cand:.3g}")

    unread = sn.nn.unread_channel_flops(chosen_net)
    conv_flops = sum(site.kernel().flops()
                     for site in sn.nn.transformable_convs(chosen_net, include_all=True))
    unread_share = sum(u for u, _ in unread.values()) / conv_flops
    result = dict(
        backbone=name, date=datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                f"{torch.__version__}, threads {torch.get_num_threads()}",
        trials=len(trials), algorithm=args.algorithm, legality_proxy=args.proxy, legality_mode=args.mode,
        rejection=args.rejection,
        objective=args.objective, channel_shuffle=args.channel_shuffle,
        kernel_budget_ms=orig_tvm_total / args.target_speedup if args.objective != "latency" or args.fill_budget else None,
        failed_trials=failed, uncompilable_layer_choices=counts["uncompilable"],
        proposed_layer_transformations=counts["transformed"], rejected_layer_transformations=rejected_layer_choices, rejected=rejected, rejection_rate=rejected / len(trials),
        layer_candidates=layer_candidates, layer_rejected=layer_rejected,
        layer_rejection_rate=layer_rejected / max(layer_candidates, 1),
        search_seconds=search_seconds, fisher_init_seconds=init_seconds, fisher_scoring_seconds=scorer.seconds, fisher_batch=args.fisher_batch,
        fisher_context=args.context, layer_scorings=scorer.evaluations,
        kernel_table_seconds=table_seconds, kernel_compiles=table.compiles, kernel_table_loaded=loaded,
        kernel_timing="cold weights" if args.cold_weights else "warm",
        latency_ms=dict(torch_original=torch_orig, torch_runs=dict(original=torch_runs[0], ours=torch_runs[1], nas=torch_runs[2]),
                        torch_nas=torch_nas,
                        torch_conv_sum_original=torch_conv_sum, tvm_original=orig_tvm_total, tvm_nas_g2=nas_tvm,
                        tvm_ours=ours_tvm, tvm_ours_search_best=search_tvm, tvm_ours_per_layer_optimum=greedy_tvm,
                        torch_ours=torch_ours),
        end_to_end_ms=e2e, end_to_end_runs=e2e_runs, relax_untuned_original=relax, end_to_end_max_abs_error=errors,
        end_to_end_compile_seconds=compile_seconds, kernels_inside_network=shares,
        programs={label: {n: sched.describe() for n, sched in compiled[label].schedules.items()}
                  for label in ("tvm_original", "tvm_nas_g2", "tvm_ours")},
        end_to_end_speedup=baseline_e2e / e2e["tvm_ours"], end_to_end_nas_speedup=baseline_e2e / e2e["tvm_nas_g2"],
        speedup_vs_best_baseline=baseline / ours_tvm, nas_speedup=baseline / nas_tvm,
        chosen_from=chosen_source, params=params, unread_channel_share=unread_share,
        no_dead_channels=args.no_dead_channels,
        exact_legality={m: r.as_metrics() | {"failing": r.failing_layers} for m, r in exact.items()},
        exact_legality_seconds=exact_seconds, exact_screening=screened, fill_upgrades=filled, fill_by=args.fill_by,
        fill_images=args.fill_images, fill_checks=fill_checks, moved_by_exact_check=moves, exact_check_rounds=rounds,
        layers=rows,
        chosen={p: dict(neural=fmt(n), program=fmt(pr)) for p, (n, pr) in chosen.items()})
    print(f"\n  end-to-end batch 1 (ms): torch original {torch_orig:.2f} "
          f"(runs {', '.join(f'{v:.2f}' for v in torch_runs[0])}); torch per-conv sum {torch_conv_sum:.2f}; "
          f"TVM original (per-conv sum) {orig_tvm_total:.2f}; NAS-only G2 {nas_tvm:.2f}; ours {ours_tvm:.2f} "
          f"[{chosen_source}; search best {search_tvm:.2f}, per-layer optimum {greedy_tvm:.2f}]; "
          f"ours in torch eager {torch_ours:.2f}")
    print(f"  conv sums: speedup of ours over the best original baseline ({baseline:.2f} ms): "
          f"{baseline / ours_tvm:.2f}x; NAS-only {baseline / nas_tvm:.2f}x")
    print(f"\n  whole network, batch 1, one process (ms; min of {len(e2e_runs['tvm_ours'])} interleaved rounds; "
          f"torch jit-opt = torch.jit.optimize_for_inference (batch norm folded); TVM = every conv a TVM kernel "
          f"with its batch norm, ReLU and (ending a residual block) shortcut add + ReLU fused, a batch norm + ReLU before it (pre-activation) too, the rest torch on 1 thread; compiled in {compile_seconds:.0f} s; "
          f"{sum(len(c.fused) for k, c in compiled.items() if k.startswith('tvm'))} kernels with batch norms fused, over the networks):")
    print(f"  {'':22s} {'torch eager':>12s} {'torch jit-opt':>14s} {'TVM convs':>10s}  max |error| of TVM vs torch")
    for label, t_key, j_key, v_key in (("original", "torch_original", "jit_original", "tvm_original"),
                                       ("NAS-only G2", "torch_nas", "jit_nas", "tvm_nas_g2"),
                                       ("ours", "torch_ours", "jit_ours", "tvm_ours")):
        print(f"  {label:22s} {e2e[t_key]:12.2f} {e2e[j_key]:14.2f} {e2e[v_key]:10.2f}  {errors[v_key]:.1e}"
              f"   (TVM kernels inside the network {shares[v_key]['kernels']:.2f} of {shares[v_key]['total']:.2f} ms)")
    print(f"  original through TVM Relax (torch.export -> from_exported_program -> default CPU pipeline, "
          f"untuned): " + (f"{relax['ms']:.1f} ms (max |error| {relax['max_abs_error']:.1e})" if "ms" in relax
                           else relax["error"]))
    print(f"  speedup of ours over the best original ({baseline_e2e:.2f} ms): {baseline_e2e / e2e['tvm_ours']:.2f}x; "
          f"NAS-only {baseline_e2e / e2e['tvm_nas_g2']:.2f}x; ours vs torch eager original "
          f"{e2e['torch_original'] / e2e['tvm_ours']:.2f}x")
    print(f"  params: original {params['original'] / 1e6:.2f}M, NAS-only {params['nas'] / 1e6:.2f}M, "
          f"ours {params['ours'] / 1e6:.2f}M; {unread_share:.1%} of ours' conv FLOPs compute channels that "
          f"the next conv does not read (an input bottleneck there)")
    print(f"  exact joint legality of the chosen network: per-layer {exact['per_layer'].legal} "
          f"({exact['per_layer'].reason}); network {exact['network'].legal} "
          f"({exact['network'].candidate_score:.4g} vs {exact['network'].original_score:.4g}); {exact_seconds:.1f} s")
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        for label, net in (("original", original), ("ours", chosen_net), ("nas_g2", nas_net)):
            with open(os.path.join(args.export, f"{name}_{label}.json"), "w") as f:
                f.write(pg.to_json_str(net))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", nargs="+", default=["resnet34"],
                        choices=["resnet18", "resnet34", "resnext29_2x64d", "densenet161"])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--algorithm", default="evolution", choices=["evolution", "random", "reinforce"])
    parser.add_argument("--fisher-batch", type=int, default=128)
    parser.add_argument("--proxy", default="fisher", choices=sn.proxies.available(),
                        help="the zero-cost proxy that judges legality (seed: fisher); other proxies need "
                             "--context tail")
    parser.add_argument("--context", default="block", choices=["block", "tail"],
                        help="isolated Fisher scoring: the layer's block with the original's output gradient "
                             "(fast) or the whole rest of the network (exact)")
    parser.add_argument("--mode", default="per_layer", choices=["per_layer", "network"],
                        help="legality: every transformed layer, or the network sum (seed §7.4 uses per layer)")
    parser.add_argument("--rejection", default="layer", choices=["layer", "network"],
                        help="an illegal layer transformation is rejected alone (the layer keeps the original "
                             "operator) or rejects the whole candidate network")
    parser.add_argument("--objective", default="latency", choices=["latency", "fisher", "params"],
                        help="the fastest legal network, or the legal network of highest network Fisher Potential "
                             "/ of most conv weights whose kernels sum to at most the original's / --target-speedup")
    parser.add_argument("--target-speedup", type=float, default=3.0,
                        help="latency budget of --objective fisher|params, as a speedup over the TVM original's "
                             "kernel sum")
    parser.add_argument("--fill-budget", action="store_true",
                        help="after the exact check, spend the latency budget (--target-speedup) left: upgrade "
                             "layers (most --fill-by value per ms first) while the network stays legal")
    parser.add_argument("--fill-by", default="weights", choices=["weights", "snip"],
                        help="what --fill-budget buys per ms: conv weights, or the layer's SNIP score (scored in "
                             "the otherwise original network)")
    parser.add_argument("--fill-images", type=int, default=None,
                        help="images of the Fisher batch that --fill-by snip ranks options on (default: all; "
                             "fewer is proportionally faster, the exact checks still use the whole batch)")
    parser.add_argument("--fill-checks", type=int, default=40, help="exact checks --fill-budget may spend")
    parser.add_argument("--exact-candidates", type=int, default=10,
                        help="the search's best legal candidates checked exactly, as whole networks, in order; "
                             "the first that passes is chosen (the best is repaired when none does)")
    parser.add_argument("--repair-rounds", type=int, default=4,
                        help="rounds in which a layer that fails the exact whole-network check tries its next-"
                             "fastest legal option before it gets the original operator")
    parser.add_argument("--channel-shuffle", action="store_true",
                        help="groupings in the menu read interleaved input channels (sn.program.ChannelShuffle: "
                             "same cost, groups of consecutive layers mix)")
    parser.add_argument("--no-dead-channels", action="store_true",
                        help="offer no input bottleneck to a conv that alone reads the conv before it "
                             "(whose skipped channels would be computed for nothing)")
    parser.add_argument("--keep", nargs="+", default=[], metavar="LAYER",
                        help="layers the search (and the NAS-only baseline) leave original (torch names as "
                             "in the per-layer table, e.g. 3.body.0)")
    parser.add_argument("--kernel-table", default=None, metavar="FILE",
                        help="read kernel latencies measured by an earlier run from FILE (when it exists) and "
                             "write this run's table there: later runs on this machine skip those compiles")
    parser.add_argument("--repeat", type=int, default=5, help="timing repeats per kernel")
    parser.add_argument("--kernel-timing", choices=["cold", "warm"], default="cold",
                        help="cold (default): time each kernel with its weights flushed from the caches, as "
                             "inside a network at batch 1 whose weights do not fit them (the kernel sums then "
                             "predict the whole network); warm: back-to-back calls, weights in cache")
    parser.add_argument("--cold-weights", dest="kernel_timing", action="store_const", const="cold",
                        help="the same as --kernel-timing cold (the default)")
    parser.add_argument("--max-templates", type=int, default=6, help="program templates per kernel")
    parser.add_argument("--no-relax", dest="relax", action="store_false",
                        help="skip the original network through TVM's Relax frontend (untuned, ~1.5 s per run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="resnet18, 100 trials, Fisher batch 32")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--export", default=None, help="save the original and chosen torch models here")
    args = parser.parse_args(argv)
    args.cold_weights = args.kernel_timing == "cold"
    if args.exact_candidates < 0:
        parser.error(f"--exact-candidates must be >= 0, got {args.exact_candidates}")
    if args.fill_images is not None and args.fill_images < 1:
        parser.error(f"--fill-images must be >= 1, got {args.fill_images}")
    if not args.target_speedup > 0:
        parser.error(f"--target-speedup must be positive, got {args.target_speedup}")
    if args.proxy != "fisher" and args.context == "block":
        parser.error(f"--proxy {args.proxy}: the block context reuses output gradients and is defined for fisher; "
                     "add --context tail")
    try:
        cifar_path()  # before minutes of kernel compiles, not after
        if args.kernel_table and os.path.exists(args.kernel_table):
            KernelTable(args.repeat, args.cold_weights).load(args.kernel_table)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    if args.quick:
        args.backbone, args.trials, args.fisher_batch, args.max_templates = ["resnet18"], 100, 32, 1
    torch.set_num_threads(sn.program.measure.num_threads())
    print(f"nas_pte: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), TVM threads "
          f"{os.environ.get('TVM_NUM_THREADS')}; other processes share this CPU", flush=True)
    results = [run_backbone(b, args) for b in args.backbone]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
