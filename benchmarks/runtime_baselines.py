"""Searched networks against their originals on every CPU runtime a user would deploy with (batch 1).

For each pair (original, searched network) every runtime of ``sn.nn.default_runtimes()`` runs both
networks, all in one process with interleaved rounds: torch eager, ``torch.jit.optimize_for_inference``,
``torch.compile`` (frozen), ONNX Runtime (CPU, threads = cores, ORT_ENABLE_ALL), OpenVINO (CPU,
f32), optionally TVM Relax (untuned, or MetaSchedule-tuned with ``--relax-trials N``), and symnas
(``sn.nn.compile_network``, flat plan). The best original is the fastest runtime on the original;
the table gives symnas' searched network's speedup over it and over ONNX Runtime on the same searched
network, then splits each symnas-compiled network into its TVM kernels and the rest (torch glue).
Networks with searched kernels (``sn.kas.KernelConv``) are lowered to conv layers first where they
lower (``sn.kas.lower_network``; ``--keep-kernels`` times them as torch modules), and nested
``Sequential``s are spliced (``sn.nn.flatten_sequentials``: the same function). A runtime that is
not installed (``pip install -e ".[baselines]"``) or fails is listed by name.

Usage::

    python benchmarks/runtime_baselines.py                   # the shipped networks vs their originals
    python benchmarks/runtime_baselines.py --pair orig.json searched.json --relax-trials 64
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from typing import Any, Dict, List, Optional

import torch

import symnas as sn

NETWORKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "networks")
SHIPPED = [("resnet18_original.json", "resnet18_warm36.json"), ("resnet34_original.json", "resnet34_cold33.json"),
           ("resnext29_original.json", "resnext29_cold36.json")]
TARGET_SPEEDUP = 3.0


def runtimes(args) -> List[sn.nn.Runtime]:
    chosen = [r for r in sn.nn.default_runtimes() if not isinstance(r, sn.nn.Symnas)]
    if args.relax_trials is not None:
        chosen.append(sn.nn.TVMRelax(trials_per_task=args.relax_trials, work_dir=args.work_dir))
    chosen.append(sn.nn.Symnas())
    if args.modules:
        chosen.append(sn.nn.Symnas(plan=False))
    if args.preactivation_in_torch:
        chosen.append(sn.nn.Symnas(fuse_preactivation=False))
    return chosen


def summarize(result: sn.nn.RuntimeComparison, original: str, searched: str) -> Dict[str, Any]:
    ms = result.ms
    best_label, best_ms = result.best(original)
    row: Dict[str, Any] = {"original": original, "searched": searched, "best_original": best_label,
                           "best_original_ms": best_ms}
    ours = ms[searched].get("symnas")
    if ours is not None:
        row.update(symnas_searched_ms=ours, speedup=best_ms / ours, meets_speedup=best_ms / ours >= TARGET_SPEEDUP)
        ort = ms[searched].get("ONNX Runtime")
        if ort is not None:
            row.update(onnxruntime_searched_ms=ort, symnas_vs_onnxruntime=ort / ours, beats_onnxruntime=ours < ort)
    return row


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pair", nargs=2, action="append", metavar=("ORIGINAL", "SEARCHED"),
                        help="symbolic networks saved as JSON (repeatable; default: the shipped networks)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (the best is reported)")
    parser.add_argument("--relax-trials", type=int, default=None,
                        help="also TVM Relax: 0 untuned, N MetaSchedule trials per fused task (minutes each)")
    parser.add_argument("--work-dir", default=None, help="keep MetaSchedule's logs here")
    parser.add_argument("--modules", action="store_true", help="also symnas through the torch modules (no flat plan)")
    parser.add_argument("--preactivation-in-torch", action="store_true",
                        help="also symnas with the batch norm + ReLU before a conv left to torch")
    parser.add_argument("--keep-kernels", action="store_true",
                        help="time searched kernels (KernelConv) as torch modules, not lowered to conv layers")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.relax_trials is not None and args.relax_trials < 0:
        parser.error(f"--relax-trials must be >= 0, got {args.relax_trials}")
    pairs = args.pair or [tuple(os.path.join(NETWORKS, f) for f in pair) for pair in SHIPPED]
    missing = [p for pair in pairs for p in pair if not os.path.isfile(p)]
    if missing:
        parser.error(f"no such network file: {', '.join(missing)}")
    names = {p: os.path.splitext(os.path.basename(p))[0] for pair in pairs for p in pair}
    if len(set(names.values())) != len(names):
        parser.error("two network files share a name: " + ", ".join(sorted(names)))
    torch.set_num_threads(sn.program.measure.num_threads())
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    load = os.getloadavg()
    print(f"runtime_baselines: {date}, {platform.node()}, {os.cpu_count()} cores, load {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}, torch {torch.__version__} ({torch.get_num_threads()} threads)", flush=True)
    networks = {names[p]: sn.load(p) for p in names}   # JSON only: nothing in the file runs
    for name, net in networks.items():
        lowered, n_low, n_all = (net, 0, 0) if args.keep_kernels else sn.kas.lower_network(net)
        if n_all:
            print(f"  {name}: {n_low} of {n_all} searched kernels lowered to conv layers (every runtime "
                  f"runs the lowered network; --keep-kernels: the kernels as torch modules)", flush=True)
        networks[name] = sn.nn.flatten_sequentials(lowered)    # the same function; see its docstring
    result = sn.nn.compare_runtimes(networks, runtimes(args), rounds=args.rounds)
    x = torch.randn(1, 3, 32, 32)
    print(f"\n  batch 1, one process, best of {args.rounds} interleaved rounds (ms)")
    rows = []
    for original, searched in pairs:
        o, s = names[original], names[searched]
        print("\n" + result.format([o, s]))
        row = summarize(result, o, s)
        rows.append(row)
        if "speedup" in row:
            print(f"  best original: {row['best_original']} {row['best_original_ms']:.2f} ms; symnas on {s} "
                  f"{row['symnas_searched_ms']:.2f} ms: {row['speedup']:.2f}x (target >= {TARGET_SPEEDUP:g}x)")
        if "symnas_vs_onnxruntime" in row:
            print(f"  ONNX Runtime on {s} {row['onnxruntime_searched_ms']:.2f} ms: symnas "
                  f"{row['symnas_vs_onnxruntime']:.2f}x {'faster' if row['beats_onnxruntime'] else 'SLOWER'}")
    splits = {}
    print(f"\n  inside each symnas-compiled network (flat plan, mean of {args.rounds * 3} calls, ms)")
    for name, prepared in result.prepared.items():
        if "symnas" in prepared:
            split = prepared["symnas"].kernel_time(x, calls=args.rounds * 3)
            splits[name] = {k: split[k] for k in ("total", "kernels")}
            print(f"  {name:32s} kernels {split['kernels']:7.2f}   rest {split['total'] - split['kernels']:7.2f}")
    out = {"date": date, "machine": platform.node(), "cores": os.cpu_count(), "load": load, "rounds": args.rounds,
           "ms": result.ms, "runs": result.runs, "missing": result.missing, "failed": result.failed,
           "max_abs_error": result.max_abs_error, "prepare_seconds": result.prepare_seconds,
           "pairs": rows, "symnas_split_ms": splits}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
