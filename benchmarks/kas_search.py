"""Kernel architecture search (Canvas, seed 003) with sn.kas: sampler rate, rediscovery, search, networks.

Sub-commands (each prints its table; ``--json`` keeps the figures):

- ``sampler``: valid, distinct, solved kernels per second of ``sn.algorithms.Canvas`` for a
  backbone's 3x3 convs (wall and CPU time, the load average beside them), and why samples were
  discarded.
- ``rediscover``: samples until depthwise-separable, spatially separable and involution-like
  kernels appear; prints each as a primitive list with its FLOPs, and shows the space holds the
  hand-written reference kernels (``space.encode``).
- ``search``: Canvas's search on a CPU proxy task: kernels within the budget, screened by a
  zero-cost proxy, trained briefly on a small ResNet and CIFAR-10 subset with Canvas's pruning;
  the best is written to ``--export``.
- ``networks``: a kernel (a reference family or a ``search`` export) in place of a backbone's
  3x3 convs; whole-network latency at batch 1 beside the original and the NAS-PTE networks, each
  through the routes that apply (TVM via ``sn.nn.compile_network``; ``torch.compile``); the
  networks are written to ``--export`` as JSON for ``benchmarks/train_cifar.py``.

Usage::

    python benchmarks/kas_search.py sampler --backbone resnet34 --proposals 500 [--baseline ../main]
    python benchmarks/kas_search.py rediscover --backbone resnet34
    SYMNAS_DATA=../shared/data python benchmarks/kas_search.py search --backbone resnet34 --trials 40 --export runs/kas
    python benchmarks/kas_search.py networks --backbone resnet34 --kernel depthwise_separable --budget 0.125 \\
        --export runs/kas --compare benchmarks/networks/resnet34_original.json benchmarks/networks/resnet34_cold33.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import pyglove as pg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import symnas as sn  # noqa: E402  pylint: disable=wrong-import-position
from symnas.materialize import Materializer  # noqa: E402  pylint: disable=wrong-import-position


def _stamp() -> str:
    load = os.getloadavg()
    return (f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


_KERNELS = {"depthwise_separable": sn.kas.depthwise_separable, "bottleneck_separable": sn.kas.bottleneck_separable,
            "spatially_separable": sn.kas.spatially_separable, "involution": sn.kas.involution}


def _space(args) -> sn.kas.KernelSpace:
    targets = sn.kas.conv_targets(sn.nn.backbone(args.backbone), kernel_size=tuple(args.kernel_sizes))
    return sn.kas.KernelSpace(targets=targets, budget=sn.kas.Budget(flops=args.budget),
                              max_primitives=args.max_primitives, min_receptive=args.min_receptive)


def _describe(decoded, targets) -> str:
    t = max(targets, key=lambda t: t.count)
    lines = [decoded.kernel.describe(t, decoded.solution["values"][t.key]),
             f"  FLOPs {decoded.solution['flops'] / 1e6:.1f}M over all replaced convs "
             f"({decoded.flops_ratio:.3f} of their {decoded.solution['baseline_flops'] / 1e6:.1f}M multiply-adds); "
             f"weights {decoded.solution['params'] / 1e6:.3f}M ({decoded.params_ratio:.3f}); shapes shown for "
             f"{t.key} (x{t.count})"]
    return "\n".join(lines)


def _baseline_sampler(args) -> dict:
    """The same ``sampler`` command run by another checkout's benchmark (``--baseline DIR``), in a
    subprocess of its own (its CPU time is its own), before this one."""
    script = os.path.join(args.baseline, "benchmarks", "kas_search.py")
    if not os.path.isfile(script):
        raise SystemExit(f"--baseline {args.baseline}: no benchmarks/kas_search.py there (give a symnas checkout)")
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        cmd = [sys.executable, script, "sampler", "--backbone", args.backbone, "--budget", str(args.budget),
               "--max-primitives", str(args.max_primitives), "--kernel-sizes", *map(str, args.kernel_sizes),
               "--min-receptive", str(args.min_receptive), "--seed", str(args.seed),
               "--proposals", str(args.proposals), "--warmup", str(args.warmup), "--verify", str(args.verify),
               "--json", path]
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.baseline))
        subprocess.run(cmd, check=True, env=env, cwd=args.baseline)
        with open(path) as f:
            return json.load(f)
    finally:
        os.unlink(path)


def cmd_sampler(args) -> dict:
    if args.baseline:
        print(f"baseline ({args.baseline}):")
        base = _baseline_sampler(args)
        print("this checkout:")
        result = _sampler(args)
        result["baseline"] = base
        print(f"\n  {'':16s} {'per CPU-second':>15s} {'per second (wall)':>18s} {'samples kept':>13s}")
        for name, r in (("baseline", base), ("this checkout", result)):
            print(f"  {name:16s} {r['per_second_cpu']:15.1f} {r['per_second_wall']:18.1f} "
                  f"{r['proposals'] / r['samples']:13.1%}")
        print(f"  speed-up per CPU-second: {result['per_second_cpu'] / base['per_second_cpu']:.2f}x; "
              f"{_stamp()}")
        return result
    return _sampler(args)


def _sampler(args) -> dict:
    space = _space(args)
    hyper = space.search_space()
    algo = sn.algorithms.Canvas(seed=args.seed)
    algo.setup(pg.dna_spec(hyper))
    for _ in range(args.warmup):
        algo.propose()
    s0, b0 = algo.samples, algo.backtracks
    algo.rejections.clear()
    start, cpu = time.perf_counter(), time.process_time()
    dnas = [algo.propose() for _ in range(args.proposals)]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    # Proposals decode again (as sn.search's trials do) to distinct kernels.
    check = Materializer(hyper)
    hashes = {check.materialize(d).decode().hash for d in dnas[:args.verify]}
    result = {"when": _stamp(), "backbone": args.backbone, "targets": len(space.targets),
              "proposals": args.proposals, "wall_s": wall, "cpu_s": cpu,
              "per_second_wall": args.proposals / wall, "per_second_cpu": args.proposals / cpu,
              "samples": algo.samples - s0, "backtracks": algo.backtracks - b0,
              "verified_distinct": len(hashes), "verified": min(args.verify, args.proposals),
              "rejections": dict(algo.rejections.most_common(8))}
    print(f"kas sampler: {result['when']}")
    print(f"  {args.backbone}: {len(space.targets)} distinct 3x3 convs, budget {args.budget} of their FLOPs, "
          f"{space.min_primitives}-{space.max_primitives} primitives")
    print(f"  {args.proposals} valid, distinct, solved kernels in {wall:.2f} s wall ({result['per_second_wall']:.1f}/s), "
          f"{cpu:.2f} s CPU ({result['per_second_cpu']:.1f}/s of one core)")
    print(f"  {result['samples']} samples drawn ({args.proposals / result['samples']:.1%} kept), "
          f"{result['backtracks']} backtracks; decoded again: {len(hashes)} distinct of {result['verified']}")
    for reason, count in algo.rejections.most_common(6):
        print(f"    discarded {count:6d}: {reason}")
    return result


def cmd_rediscover(args) -> dict:
    space = _space(args)
    start = time.time()
    found = sn.kas.rediscover(space, seed=args.seed, max_samples=args.samples)
    out = {"when": _stamp(), "seconds": time.time() - start, "found": {}}
    print(f"kas rediscover: {out['when']}; {args.backbone}, budget {args.budget}")
    for family in sn.kas.patterns.FAMILIES:
        if family not in found:
            print(f"\n  {family}: not found in {args.samples} kernels")
            continue
        decoded, n = found[family]
        out["found"][family] = {"after": n, "primitives": decoded.names(), "flops_ratio": decoded.flops_ratio}
        print(f"\n  {family}: kernel {n} of the search\n{_describe(decoded, space.targets)}")
    print("\n  the space holds the hand-written designs (space.encode -> decode):")
    wide = sn.kas.KernelSpace(targets=space.targets, budget=sn.kas.Budget(flops=1.0), min_primitives=3,
                              max_primitives=space.max_primitives)
    for name, kernel in sn.kas.reference_kernels(space.out_channels).items():
        try:
            decoded = wide.encode(kernel).decode()
        except (ValueError, sn.TrialRejected) as e:
            print(f"    {name}: not encodable ({e})")
            continue
        print(f"    {name}: {' -> '.join(decoded.names())}; FLOPs {decoded.flops_ratio:.3f} of the convs'")
    print(f"\n  {out['seconds']:.0f} s")
    return out


def cmd_search(args) -> dict:
    space = _space(args)
    proxy_net = sn.nn.resnet((1, 1, 1, 1), width=args.proxy_width)
    trainer = sn.train.Trainer(model=proxy_net, data=sn.data.CIFAR10(), epochs=args.epochs, batch_size=128,
                               optimizer=sn.train.SGD(0.05, momentum=0.9), train_size=args.train_size,
                               eval_size=args.eval_size, weight_decay=5e-4, device="cpu")
    task = sn.kas.ProxyTask(net=proxy_net, trainer=trainer, budget=sn.kas.Budget(flops=args.budget),
                            screen=sn.kas.ProxyFilter(proxy=args.proxy, min_ratio=args.proxy_ratio))
    policy = sn.kas.CanvasPruning(max_step=args.epochs, theta=0.5, loss_milestones=[args.first_loss])
    start = time.time()
    baseline = trainer.train()
    print(f"kas search: {_stamp()}; {args.backbone} kernels, proxy task resnet(1,1,1,1) width {args.proxy_width}, "
          f"{args.train_size} CIFAR-10 images, {args.epochs} epochs; original convs: {baseline.accuracy:.4f}")
    study = sn.search(space.search_space(), task.evaluate, sn.algorithms.Canvas(seed=args.seed),
                      num_trials=args.trials, storage=args.storage, early_stopping=policy, progress=False)
    trials = study.trials
    done = trials[trials["status"] == "completed"].sort_values("accuracy", ascending=False)
    print(f"  {len(trials)} trials in {time.time() - start:.0f} s: {len(done)} trained, "
          f"{int((trials['status'] == 'rejected').sum())} rejected, {int((trials['status'] == 'failed').sum())} failed")
    for _, row in done.head(5).iterrows():
        print(f"    trial {int(_):3d}: accuracy {row['accuracy']:.4f}  FLOPs {row['flops_ratio']:.3f}")
    result = {"when": _stamp(), "baseline_accuracy": float(baseline.accuracy), "trials": len(trials),
              "trained": len(done)}
    if len(done):
        best = study.best
        decoded = best.decode()
        print("  best:\n" + _describe(decoded, space.targets))
        result.update(best_accuracy=float(done.iloc[0]["accuracy"]), best=decoded.names())
        if args.export:
            os.makedirs(args.export, exist_ok=True)
            path = os.path.join(args.export, f"kernel_{args.backbone}.json")
            with open(path, "w") as f:
                f.write(pg.to_json_str(decoded.kernel))
            print(f"  wrote {path}")
    return result


def _load(path: str):
    return sn.load(path)          # JSON only: nothing in the file runs


def cmd_networks(args) -> dict:
    net = sn.nn.backbone(args.backbone)
    targets = sn.kas.conv_targets(net, kernel_size=tuple(args.kernel_sizes))
    kernel = _KERNELS[args.kernel]() if args.kernel in _KERNELS else _load(args.kernel)
    solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=args.budget))
    ours = sn.kas.replace_convs(net, kernel, solution, targets)
    lowered, n_low, n_all = sn.kas.lower_network(ours)
    print(f"kas networks: {_stamp()}\n  {args.backbone} with {' -> '.join(kernel.names())} "
          f"(FLOPs {solution.flops / solution.baseline_flops:.3f} of the replaced convs'); "
          f"{n_low} of {n_all} kernels lower to TVM conv kernels")
    models = {"original": (net, "tvm"), "original ": (net, "inductor")}
    for path in args.compare:
        name = os.path.splitext(os.path.basename(path))[0]
        models[name] = (_load(path), "tvm")
    if n_low == n_all:
        models["ours"] = (lowered, "tvm")
    models["ours "] = (ours, "inductor")
    built, rows = {}, {}
    import torch  # pylint: disable=import-outside-toplevel
    if args.rounds == 0:
        models = {}
    for name, (symbolic, route) in models.items():
        torch.manual_seed(0)
        model = symbolic.build((3, 32, 32)).eval()
        built[name.strip() + "|" + route] = (symbolic, model, route)
    latencies = sn.kas.network_latencies(built, rounds=args.rounds) if built else {}
    base = min((v for k, v in latencies.items() if k.startswith("original|")), default=float("nan"))
    if latencies:
        print(f"  batch 1, min of {args.rounds} interleaved rounds (ms); speedup over the best original ({base:.2f} ms)")
    for key, ms in latencies.items():
        name, route = key.split("|")
        params = sn.nn.count_params(built[key][1])
        rows[key] = {"ms": ms, "speedup": base / ms, "params": params}
        print(f"  {name:28s} {route:9s} {ms:8.2f} {base / ms:7.2f}x   {params / 1e6:.2f}M params")
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        tag = args.kernel if args.kernel in _KERNELS else "searched"
        for name, value in ((f"{args.backbone}_original", net), (f"{args.backbone}_kas_{tag}", ours)):
            path = os.path.join(args.export, f"{name}.json")
            with open(path, "w") as f:
                f.write(pg.to_json_str(value))
            print(f"  wrote {path}")
    return {"when": _stamp(), "kernel": kernel.names(), "flops_ratio": solution.flops / solution.baseline_flops,
            "lowered": n_low, "kernels": n_all, "latency": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backbone", default="resnet34", choices=sorted(sn.nn.BACKBONES))
    common.add_argument("--budget", type=float, default=0.25, help="kernel FLOPs / replaced convs' multiply-adds")
    common.add_argument("--max-primitives", type=int, default=25)
    common.add_argument("--kernel-sizes", type=int, nargs="+", default=[3],
                        help="replace the convs of these kernel sizes (1 3: the 1x1 convs too)")
    common.add_argument("--min-receptive", type=int, default=1)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--json", default=None, help="write the results here")
    p = sub.add_parser("sampler", parents=[common])
    p.add_argument("--proposals", type=int, default=500)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--verify", type=int, default=100, help="proposals decoded again to check them")
    p.add_argument("--baseline", default=None,
                   help="another symnas checkout (e.g. `git worktree add /tmp/base main`): its sampler runs first, "
                        "with the same arguments, and both rates are printed side by side")
    p = sub.add_parser("rediscover", parents=[common])
    p.add_argument("--samples", type=int, default=20000)
    p = sub.add_parser("search", parents=[common])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--eval-size", type=int, default=2000)
    p.add_argument("--proxy-width", type=int, default=16)
    p.add_argument("--proxy", default="snip")
    p.add_argument("--proxy-ratio", type=float, default=0.3)
    p.add_argument("--first-loss", type=float, default=2.2, help="largest training loss after epoch 1")
    p.add_argument("--storage", default=None)
    p.add_argument("--export", default=None)
    p = sub.add_parser("networks", parents=[common])
    p.add_argument("--kernel", default="depthwise_separable",
                   help=f"one of {sorted(_KERNELS)} or a kernel JSON written by `search --export`")
    p.add_argument("--compare", nargs="*", default=[], help="other saved networks to time (NAS-PTE's)")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (0: only export the networks)")
    p.add_argument("--export", default=None)
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    for path in getattr(args, "compare", []):
        if not os.path.isfile(path):
            parser.error(f"no such network file: {path}")
    result = {"sampler": cmd_sampler, "rediscover": cmd_rediscover, "search": cmd_search,
              "networks": cmd_networks}[args.command](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
