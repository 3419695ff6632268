"""Transformation-sequence search on the distinct conv layers of a CIFAR ResNet-34 (batch 1).

For each layer this prints, measured in the same run on this machine:
torch (oneDNN), TVM without a schedule, TVM MetaSchedule (bounded trials), our
program-only template, and the best kernel found by searching neural + program
step sequences with sn.algorithms.Random and sn.algorithms.Reinforce (same budget),
its sequence, FLOPs ratio, and the speedup over the best baseline; then geometric means.

Torch is timed in a fresh process (before and after the TVM work, best of the two),
because TVM's spinning worker threads slow torch's in the same process.

    python benchmarks/resnet34_layers.py --trials 24 --tune-trials 16 --tune-layers 0,5,8
    python benchmarks/resnet34_layers.py --quick          # 2 layers, few trials
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

import pyglove as pg  # noqa: E402

import symnas as sn  # noqa: E402

P = sn.program

# (name, c_in, c_out, input size, k, stride); the stem (3 input channels) is left out:
# like the seed, only the convolutions inside residual blocks are transformed.
LAYERS = [
    ("l1.conv 64-64 32x32", 64, 64, 32, 3, 1),
    ("l2.conv1 64-128 s2", 64, 128, 32, 3, 2),
    ("l2.conv 128-128 16x16", 128, 128, 16, 3, 1),
    ("l2.down 1x1 64-128 s2", 64, 128, 32, 1, 2),
    ("l3.conv1 128-256 s2", 128, 256, 16, 3, 2),
    ("l3.conv 256-256 8x8", 256, 256, 8, 3, 1),
    ("l3.down 1x1 128-256 s2", 128, 256, 16, 1, 2),
    ("l4.conv1 256-512 s2", 256, 512, 8, 3, 2),
    ("l4.conv 512-512 4x4", 512, 512, 4, 3, 1),
    ("l4.down 1x1 256-512 s2", 256, 512, 8, 1, 2),
]


def make_op(layer):
    _, c_in, c_out, size, k, stride = layer
    return P.Conv2d(c_in=c_in, c_out=c_out, h=size, w=size, k=k, stride=stride,
                    padding=k // 2)


def torch_baselines(layers, repeat=7):
    """Median torch latency per layer, timed in a fresh process without TVM, at 1 thread and
    at the core count, the faster of the two (on a busy machine oneDNN's spinning threads
    can lose much more than one core's worth)."""
    code = ("import json,os,sys,symnas as sn;from benchmarks.resnet34_layers import *;"
            "layers=json.loads(sys.argv[1]);"
            f"print(json.dumps([min(P.time_torch_conv(make_op(l), repeat={repeat}, threads=t) "
            "for t in sorted({1, os.cpu_count()})) for l in layers]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(layers)], check=True,
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(out.stdout.strip().splitlines()[-1])


def template_steps(op):
    """Our fixed program-only templates for the layer (no neural steps)."""
    kernel = op.kernel()
    if kernel.ow >= 16:
        return [P.cpu_conv_template(4, 2)]
    rows = 2 if kernel.oh % 2 == 0 and 2 * kernel.ow <= 32 else 1
    return [P.cpu_packed_conv_template(16, rows), P.cpu_conv_template(4, 2)]


def neural_summary(schedule):
    steps = [pg.format(s, compact=True) for s in schedule.active_steps() if s.is_neural]
    return ", ".join(steps) or "(program only)"


def search_layer(op, algorithm, trials, max_reduction, quick_measure):
    """Runs sn.search on the layer's transformation space; returns [(latency, schedule)]."""
    space = P.transformation_space(op, max_steps=3)
    base_flops = op.kernel().flops()
    found = []

    def evaluate(schedule):
        try:
            flops = schedule.flops
            if flops * max_reduction < base_flops:
                raise sn.errors.TrialRejected(
                    f"FLOPs reduced {base_flops / flops:.1f}x > --max-reduction")
            m = schedule.measure(repeat=3, min_repeat_ms=quick_measure)
        except P.IllegalTransformation as error:
            raise sn.errors.TrialRejected(str(error)) from None
        found.append((m.latency_ms, schedule))
        return {"reward": -m.latency_ms, "latency_ms": m.latency_ms,
                "flops_ratio": flops / base_flops}

    study = sn.search(space, evaluate, algorithm, num_trials=trials, storage=None,
                      progress=False)
    return found, study


def remeasure_best(candidates, top=3):
    """Re-times the best few candidates with more repeats (the minimum of noisy
    single measurements is biased low)."""
    best = None
    for _, schedule in sorted(candidates, key=lambda c: c[0])[:top]:
        latency = schedule.measure(repeat=9, min_repeat_ms=30).latency_ms
        if best is None or latency < best[0]:
            best = (latency, schedule)
    return best


def geomean(values):
    values = [v for v in values if v and not math.isnan(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per algorithm per layer")
    parser.add_argument("--tune-trials", type=int, default=16,
                        help="MetaSchedule trials per tuned layer (0 skips it)")
    parser.add_argument("--tune-layers", type=str, default="0,5,8",
                        help="indices of the layers MetaSchedule tunes ('all'); its builds "
                             "and runs take minutes per layer on a busy 2-core machine")
    parser.add_argument("--max-reduction", type=float, default=8.0,
                        help="reject kernels whose FLOPs shrink more than this factor")
    parser.add_argument("--layers", type=str, default=None, help="comma-separated indices")
    parser.add_argument("--quick", action="store_true", help="2 layers, 8 trials, 8 tune trials")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    layers = LAYERS
    if args.layers:
        layers = [LAYERS[int(i)] for i in args.layers.split(",")]
    if args.quick:
        layers = layers[:2] if not args.layers else layers
        args.trials, args.tune_trials = min(args.trials, 8), min(args.tune_trials, 8)

    print(f"# ResNet-34 (CIFAR, batch 1) conv layers -- {datetime.datetime.utcnow():%Y-%m-%d %H:%M}"
          f" UTC, {platform.node()}, {os.cpu_count()} cores, target {P.host_target()}, "
          f"TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}, torch at 1 and "
          f"{os.cpu_count()} threads (the faster)")
    print(f"# search: Random and Reinforce, {args.trials} trials each per layer; "
          f"MetaSchedule {args.tune_trials} trials; FLOPs reduction capped at "
          f"{args.max_reduction}x (no Fisher legality yet)")
    start = time.time()
    torch_before = torch_baselines(layers)
    rows = []
    for index, layer in enumerate(layers):
        op = make_op(layer)
        naive = P.Schedule(op, []).measure(repeat=3, min_repeat_ms=10).latency_ms
        tune = args.tune_trials and (args.tune_layers == "all" or LAYERS.index(layer) in
                                     [int(i) for i in args.tune_layers.split(",")])
        tuned = (P.tune_metaschedule(op, trials=args.tune_trials) if tune
                 else P.TuningResult(float("nan"), 0, 0.0, "not tuned"))
        program_only = min(P.Schedule(op, steps).measure(repeat=7, min_repeat_ms=20).latency_ms
                           for steps in template_steps(op))
        results = {}
        candidates = []
        for name, algorithm in (("random", sn.algorithms.Random(seed=args.seed)),
                                ("reinforce", sn.algorithms.Reinforce(seed=args.seed))):
            found, _ = search_layer(op, algorithm, args.trials, args.max_reduction, 10)
            candidates += found
            results[name] = (min(f[0] for f in found) if found else float("nan"), len(found))
        best_latency, best = remeasure_best(candidates) if candidates else (float("nan"), None)
        rows.append(dict(layer=layer[0], naive=naive, tuned=tuned, program_only=program_only,
                         results=results, best=best, best_latency=best_latency,
                         flops=op.kernel().flops()))
        print(f"  [{time.time() - start:6.0f}s] {layer[0]}: naive {naive:.3f} ms, "
              f"MetaSchedule {tuned.latency_ms:.3f} ms ({tuned.error or 'ok'}), template "
              f"{program_only:.3f} ms, random {results['random'][0]:.3f} ms "
              f"({results['random'][1]} legal), reinforce {results['reinforce'][0]:.3f} ms "
              f"({results['reinforce'][1]} legal), best {best_latency:.3f} ms", flush=True)
    torch_after = torch_baselines(layers)

    header = (f"{'layer':24} {'torch':>7} {'(2nd)':>7} {'TVM':>8} {'TVM-MS':>7} {'best base':>9} "
              f"{'template':>8} {'random':>7} {'reinf.':>7} {'ours':>7} {'FLOPs':>6} "
              f"{'speedup':>7}  neural steps of the best kernel")
    print()
    print(header)
    print("-" * len(header))
    speedups, program_speedups = [], []
    for row, t0, t1 in zip(rows, torch_before, torch_after):
        torch_ms = min(t0, t1)
        tuned = row["tuned"].latency_ms
        base = min(v for v in (torch_ms, row["naive"], tuned) if not math.isnan(v))
        best = row["best"]
        ratio = best.flops / row["flops"] if best is not None else float("nan")
        speedup = base / row["best_latency"]
        speedups.append(speedup)
        program_speedups.append(base / row["program_only"])
        print(f"{row['layer']:24} {t0:7.3f} {t1:7.3f} {row['naive']:8.2f} {tuned:7.3f} "
              f"{base:9.3f} {row['program_only']:8.3f} {row['results']['random'][0]:7.3f} "
              f"{row['results']['reinforce'][0]:7.3f} {row['best_latency']:7.3f} "
              f"{ratio:6.3f} {speedup:6.2f}x  {neural_summary(best) if best else '-'}")
    print("-" * len(header))
    print(f"geometric mean speedup over the best baseline: ours {geomean(speedups):.2f}x, "
          f"program-only template {geomean(program_speedups):.2f}x "
          f"(torch noise between its two runs: "
          f"{geomean([max(a, b) / min(a, b) for a, b in zip(torch_before, torch_after)]):.2f}x "
          f"geo-mean); wall time {time.time() - start:.0f} s")
    print("\nbest sequences:")
    for row in rows:
        if row["best"] is not None:
            print(f"  {row['layer']}: {row['best'].describe()}")


if __name__ == "__main__":
    main()
