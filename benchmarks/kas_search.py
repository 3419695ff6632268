"""Kernel architecture search (Canvas, seed 003) with sn.kas: sampler rate, rediscovery, search, networks.

Sub-commands (each prints its table; ``--json`` keeps the figures):

- ``sampler``: valid, distinct, solved kernels per second of ``sn.algorithms.Canvas`` for a
  backbone's 3x3 convs (wall and CPU time, the load average beside them), and why samples were
  discarded.
- ``rediscover``: samples until depthwise-separable, spatially separable and involution-like
  kernels appear; prints each as a primitive list with its FLOPs, and shows the space holds the
  hand-written reference kernels (``space.encode``).
- ``search``: Canvas's search: kernels within the budget, screened by a zero-cost proxy, trained
  briefly with Canvas's pruning, either on a small ResNet and CIFAR-10 subset on the CPU (``--task
  proxy``) or as the whole backbone with ``train_cifar.py``'s recipe on a GPU (``--task backbone``),
  beside ``--reference`` families trained the same way; ``--algorithm`` swaps Canvas's sampler for any
  symnas algorithm (``kernel-evolution``: mutations of what a kernel uses), ``--initial`` starts the study
  from hand-written families; the best is written to ``--export``.
- ``mutations``: children bred from the hand-written families by ``RegularizedEvolution`` and
  ``KernelEvolution``: how many decode to new kernels (no training).
- ``networks``: candidate kernels (reference families or ``search`` exports, each at every
  ``--budgets`` value, plus with ``--per-layer`` a mix picking per conv shape the candidate that
  compiles fastest there) in place of a backbone's convs; whole-network latency at batch 1 beside
  the original and the NAS-PTE networks, each through the routes asked for (TVM via
  ``sn.nn.compile_network``, ONNX Runtime, ``torch.compile``), with zero-cost proxy scores beside the
  original's; the fastest candidate whose proxy stays above ``--min-proxy`` x the original's wins
  (``--save-winner``); the networks are written to ``--export`` as JSON for ``benchmarks/train_cifar.py``.
- ``layers``: per conv shape, the original conv and a kernel (``--kernel``, sized by ``--budget``) at
  batch 1 through each route (``sn.kas.layer_latencies``: TVM kernels of the lowered convs, ONNX
  Runtime, Inductor), interleaved, with the network-weighted total (each shape times its count).
- ``trainstep``: training-step time in torch of the original and a kernel's network, with the
  native ops (``sn.kas.KernelModule``'s default) and primitive by primitive.

Usage::

    python benchmarks/kas_search.py sampler --backbone resnet34 --proposals 500 [--baseline ../main]
    python benchmarks/kas_search.py rediscover --backbone resnet34
    SYMNAS_DATA=../shared/data python benchmarks/kas_search.py search --backbone resnet34 --trials 40 --export runs/kas
    python benchmarks/kas_search.py layers --backbone resnet34 --kernel spatially_separable --routes tvm ort
    python benchmarks/kas_search.py networks --backbone resnet34 --kernel depthwise_separable --budget 0.125 \\
        --export runs/kas --compare benchmarks/networks/resnet34_original.json benchmarks/networks/resnet34_cold33.json
"""
from __future__ import annotations

import argparse
import collections
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import pyglove as pg

import symnas as sn
from symnas.materialize import Materializer


def _stamp() -> str:
    load = os.getloadavg()
    return (f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


_KERNELS = {"depthwise_separable": sn.kas.depthwise_separable, "bottleneck_separable": sn.kas.bottleneck_separable,
            "spatially_separable": sn.kas.spatially_separable, "involution": sn.kas.involution,
            "dilated_separable": lambda: sn.kas.depthwise_separable(dilation=2)}


def _space(args) -> sn.kas.KernelSpace:
    targets = sn.kas.conv_targets(sn.nn.backbone(args.backbone), kernel_size=tuple(args.kernel_sizes))
    return sn.kas.KernelSpace(targets=targets, budget=sn.kas.Budget(flops=args.budget),
                              min_primitives=args.min_primitives, max_primitives=args.max_primitives,
                              min_receptive=args.min_receptive)


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
               "--json", path] + (["--min-primitives", str(args.min_primitives)] if args.min_primitives != 5 else [])
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
    algo = sn.algorithms.Canvas(seed=args.seed, workers=args.workers)
    algo.setup(pg.dna_spec(hyper))
    children = sum(os.times()[2:4])
    for _ in range(args.warmup):
        algo.propose()
    s0, b0 = algo.samples, algo.backtracks
    algo.rejections.clear()
    start, cpu = time.perf_counter(), time.process_time()
    dnas = [algo.propose() for _ in range(args.proposals)]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    algo.close()
    workers_cpu = sum(os.times()[2:4]) - children    # the worker processes' CPU, warm-up included
    # Proposals decode again (as sn.search's trials do) to distinct kernels.
    check = Materializer(hyper)
    hashes = {check.materialize(d).decode().hash for d in dnas[:args.verify]}
    if args.workers > 1:
        cpu += workers_cpu          # every process's CPU: an upper bound (the workers ran during warm-up too)
    result = {"when": _stamp(), "backbone": args.backbone, "targets": len(space.targets), "workers": args.workers,
              "proposals": args.proposals, "wall_s": wall, "cpu_s": cpu,
              "per_second_wall": args.proposals / wall, "per_second_cpu": args.proposals / cpu,
              "samples": algo.samples - s0, "backtracks": algo.backtracks - b0,
              "verified_distinct": len(hashes), "verified": min(args.verify, args.proposals),
              "rejections": dict(algo.rejections.most_common(8))}
    print(f"kas sampler: {result['when']}")
    print(f"  {args.backbone}: {len(space.targets)} distinct 3x3 convs, budget {args.budget} of their FLOPs, "
          f"{space.min_primitives}-{space.max_primitives} primitives")
    where = "one process" if args.workers == 1 else f"{args.workers} worker processes + this one, warm-up included"
    print(f"  {args.proposals} valid, distinct, solved kernels in {wall:.2f} s wall ({result['per_second_wall']:.1f}/s), "
          f"{cpu:.2f} s CPU ({result['per_second_cpu']:.1f}/s of one core; {where})")
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


def _search_task(args):
    """(network the kernels replace convs of, its trainer, a one-line description): a small ResNet on a
    CIFAR-10 subset on the CPU (``--task proxy``), or the backbone itself with ``train_cifar.py``'s recipe
    (one-cycle SGD, crop and flip, bf16 and channels-last on a GPU: ``--task backbone``)."""
    data = sn.data.CIFAR10(root=args.data)
    subset = dict(train_size=args.train_size or None, eval_size=args.eval_size or None)
    if args.task == "proxy":
        net = sn.nn.resnet((1, 1, 1, 1), width=args.proxy_width)
        trainer = sn.train.Trainer(model=net, data=data, epochs=args.epochs, batch_size=128,
                                   optimizer=sn.train.SGD(0.05, momentum=0.9), weight_decay=5e-4,
                                   device=args.device or "cpu", **subset)
        return net, trainer, f"proxy task resnet(1,1,1,1) width {args.proxy_width}"
    net = sn.nn.backbone(args.backbone)
    gpu = (args.device or ("cuda" if _cuda() else "cpu")).startswith("cuda")
    trainer = sn.train.Trainer(
        model=net, data=data, epochs=args.epochs, batch_size=args.batch,
        optimizer=sn.train.SGD(args.lr, momentum=0.9, nesterov=True), weight_decay=5e-4, decay_1d_params=False,
        schedule=sn.train.OneCycle(pct_start=0.25, div_factor=10, final_div_factor=100),
        augmentation=[sn.train.RandomCrop(4, padding_mode="reflect"), sn.train.HorizontalFlip()],
        clip_grad_norm=2.0, mixed_precision=gpu, channels_last=gpu, init="by_name", seed=args.seed,
        validation_size=0, drop_last=True, device=args.device, **subset)
    return net, trainer, f"the whole {args.backbone} ({'GPU' if gpu else 'CPU'}, train_cifar.py's recipe)"


def _cuda() -> bool:
    import torch  # pylint: disable=import-outside-toplevel
    return torch.cuda.is_available()


def cmd_search(args) -> dict:
    space = _space(args)
    initial = [_encode(space, name) for name in args.initial]      # (a point outside the space: stop now)
    net, trainer, what = _search_task(args)
    task = sn.kas.ProxyTask(net=net, trainer=trainer, budget=sn.kas.Budget(flops=args.budget),
                            screen=sn.kas.ProxyFilter(proxy=args.proxy, min_ratio=args.proxy_ratio))
    policy = sn.kas.CanvasPruning(max_step=args.epochs, theta=0.5, loss_milestones=[args.first_loss])
    start = time.time()
    baseline = trainer.train()
    images = f"{args.train_size} CIFAR-10 images" if args.train_size else "CIFAR-10"
    print(f"kas search: {_stamp()}; {args.backbone} kernels, {what}, {images}, {args.epochs} epochs; "
          f"original convs: {baseline.accuracy:.4f} ({time.time() - start:.0f} s)")
    references = {}
    for name in args.reference:
        # a hand-written family under the same task, budget and training: what the search has to beat
        try:
            reference = space.clone(override={"min_primitives": 1})   # the families are short
            decoded = reference.encode(_KERNELS[name]()).decode()
            accuracy = float(task.clone(override={"screen": None}).evaluate(decoded)["accuracy"])
        except Exception as error:  # pylint: disable=broad-except
            print(f"    reference {name}: not evaluated ({error})")
            continue
        references[name] = {"accuracy": accuracy, "flops_ratio": decoded.flops_ratio}
        print(f"    reference {name}: accuracy {accuracy:.4f}  FLOPs {decoded.flops_ratio:.3f}")
    study = sn.search(space.search_space(), task.evaluate, _ALGORITHMS[args.algorithm](args),
                      num_trials=args.trials, storage=args.storage, early_stopping=policy, progress=False,
                      initial=initial or None, workers=args.workers)
    records = study.records          # (not study.trials: the GPU machine may have no pandas)
    statuses = collections.Counter(r.status for r in records)
    done = sorted((r for r in records if r.status == "completed" and "accuracy" in r.metrics),
                  key=lambda r: -r.metrics["accuracy"])
    print(f"  {len(records)} trials in {time.time() - start:.0f} s: {len(done)} trained, "
          f"{statuses['rejected']} rejected, {statuses['failed']} failed")
    for r in done[:5]:
        print(f"    trial {r.id:3d}: accuracy {r.metrics['accuracy']:.4f}  FLOPs {r.metrics['flops_ratio']:.3f}")
    result = {"when": _stamp(), "task": what, "algorithm": args.algorithm, "initial": list(args.initial),
              "baseline_accuracy": float(baseline.accuracy), "trials": len(records), "trained": len(done),
              "references": references}
    if args.initial:
        print(f"  trials 1-{len(args.initial)} were {', '.join(args.initial)} (--initial)")
    if len(done):
        best = study.best
        decoded = best.decode()
        print("  best:\n" + _describe(decoded, space.targets))
        result.update(best_accuracy=float(done[0].metrics["accuracy"]), best=decoded.names())
        if args.export:
            os.makedirs(args.export, exist_ok=True)
            path = os.path.join(args.export, f"kernel_{args.backbone}.json")
            with open(path, "w") as f:
                f.write(pg.to_json_str(decoded.kernel))
            print(f"  wrote {path}")
    print(f"  {time.time() - start:.0f} s in all")
    return result


_ALGORITHMS = {"canvas": lambda args: sn.algorithms.Canvas(seed=args.seed),
               "evolution": lambda args: sn.algorithms.RegularizedEvolution(
                   population_size=args.population, tournament_size=min(4, args.population), seed=args.seed),
               "kernel-evolution": lambda args: sn.algorithms.KernelEvolution(
                   population_size=args.population, tournament_size=min(4, args.population), seed=args.seed),
               "random": lambda args: sn.algorithms.Random(seed=args.seed),
               "reinforce": lambda args: sn.algorithms.Reinforce(seed=args.seed)}


def _encode(space, name: str):
    """The hand-written kernel ``name`` as a point of ``space`` (for ``--initial``), or one clear error."""
    try:
        return space.encode(_KERNELS[name]())
    except Exception as error:  # pylint: disable=broad-except
        raise SystemExit(f"kas_search: --initial {name} is outside the search space ({error}); "
                         f"lower --min-primitives or raise --budget") from None


def cmd_mutations(args) -> dict:
    """Children bred from the hand-written families by each evolution: how many decode to new kernels."""
    space = _space(args)
    hyper = space.search_space()
    spec = pg.dna_spec(hyper)
    parents = [space.encode(_KERNELS[name]()) for name in args.parents]
    print(f"kas mutations: {_stamp()}; {args.backbone}, budget {args.budget}, {args.min_primitives}-"
          f"{args.max_primitives} primitives; {args.children} children of {', '.join(args.parents)} (one population)")
    result = {"when": _stamp(), "children": args.children, "parents": list(args.parents), "algorithms": {}}
    one_generation = argparse.Namespace(**{**vars(args), "population": len(parents)})   # the parents
    for name in ("evolution", "kernel-evolution"):
        algo = _ALGORITHMS[name](one_generation)
        algo.setup(spec)
        for design in parents:
            dna = pg.template(hyper).encode(design)
            dna.use_spec(spec)
            algo.feedback(dna, 1.0)
        known = {design.decode().hash for design in parents}
        valid, new, start = 0, set(), time.time()
        for _ in range(args.children):
            try:
                decoded = pg.materialize(hyper, algo.propose()).decode()
            except sn.kas.KernelRejected:
                continue
            valid += 1
            if decoded.hash not in known:
                new.add(decoded.hash)
        result["algorithms"][name] = {"valid": valid, "new": len(new)}
        print(f"  {name:17s} {valid:5d} children decode to solved kernels, {len(new):5d} distinct new kernels "
              f"({time.time() - start:.1f} s)")
    return result


def _load(path: str):
    return sn.load(path)          # JSON only: nothing in the file runs


def _kernel(spec: str):
    """A named reference kernel (``_KERNELS``) or a kernel JSON written by ``search --export``."""
    return _KERNELS[spec]() if spec in _KERNELS else _load(spec)


def _proxy_batch(size: int):
    """CIFAR-10 images for the proxy (random ones when the data set is not there)."""
    import torch  # pylint: disable=import-outside-toplevel
    try:
        splits = sn.data.CIFAR10().load()
        return splits.x_train[:size], splits.y_train[:size], "CIFAR-10"
    except Exception:  # pylint: disable=broad-except
        g = torch.Generator().manual_seed(0)
        return torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g), "random"


def _candidates(args, net, targets):
    """[(name, kernel spec, symbolic network, FLOPs ratio)]: every kernel at every budget, plus the
    per-layer mix (each conv shape gets the candidate kernel whose compiled kernel is fastest there)."""
    out, solved = [], []
    for spec in args.kernel:
        kernel = _kernel(spec)
        tag = spec if spec in _KERNELS else os.path.splitext(os.path.basename(spec))[0]
        for budget in args.budgets:
            try:
                solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=budget))
            except sn.TrialRejected as e:
                print(f"  {tag} at budget {budget}: rejected ({e})")
                continue
            ratio = solution.flops / solution.baseline_flops
            if any(r[3] == ratio and r[1] == tag for r in out):
                continue                      # a kernel without free sizes is the same at every budget
            name = f"{tag}@{ratio:.3f}"
            out.append((name, tag, sn.kas.replace_convs(net, kernel, solution, targets), ratio))
            solved.append((name, kernel, solution))
    if args.per_layer and len(solved) > 1:
        out.append(_per_layer(net, targets, solved))
    return out


def _per_layer(net, targets, solved):
    """The per-conv-shape mix (``sn.kas.fastest_per_shape``) as one more candidate."""
    network, ratio, choices = sn.kas.fastest_per_shape(net, targets, solved)
    for c in choices:
        print(f"  per conv shape: {c['target']} (x{c['count']}) <- {c['choice'] or 'the original conv'} "
              f"({c['route']}, {c['ms']:.3f} ms; the conv {c['conv_ms']:.3f} ms)")
    return (f"per_layer@{ratio:.3f}", "per_layer", network, ratio)


def cmd_networks(args) -> dict:
    import torch  # pylint: disable=import-outside-toplevel
    net = sn.nn.backbone(args.backbone)
    targets = sn.kas.conv_targets(net, kernel_size=tuple(args.kernel_sizes))
    print(f"kas networks: {_stamp()}\n  {args.backbone}: {sum(t.count for t in targets)} convs "
          f"({len(targets)} shapes) replaced; kernels {args.kernel} at budgets {args.budgets}")
    candidates = _candidates(args, net, targets)
    x, y, source = _proxy_batch(args.proxy_batch)
    scores = {"original": {p: sn.kas.network_proxy(net, x, y, p) for p in args.proxy}}
    models = {f"original|{route}": net for route in args.routes if route != "tvm_unfused"}   # (no chains to fuse)
    for path in args.compare:
        models[f"{os.path.splitext(os.path.basename(path))[0]}|tvm"] = _load(path)
    lowering = {}
    for name, _, ours, ratio in candidates:
        scores[name] = {p: sn.kas.network_proxy(ours, x, y, p) for p in args.proxy}
        lowered, n_low, n_all = sn.kas.lower_network(ours)
        lowering[name] = (n_low, n_all)
        print(f"  {name}: FLOPs {ratio:.3f} of the replaced convs'; {n_low} of {n_all} kernels lower to TVM; "
              + ", ".join(f"{p} {scores[name][p]:.4g} ({scores[name][p] / scores['original'][p]:.3f} x the original's)"
                          for p in args.proxy))
        for route in args.routes:      # a network whose kernels all lower runs as conv layers on every route
            if n_low == n_all:
                models[f"{name}|{route}"] = lowered
            elif not route.startswith("tvm"):
                models[f"{name}|{route}"] = ours
    print(f"  proxies: {', '.join(args.proxy)} on {args.proxy_batch} {source} images, the same seed for every "
          f"network; the original's: " + ", ".join(f"{p} {v:.4g}" for p, v in scores["original"].items()))
    first = args.proxy[0]
    score = {name: v[first] for name, v in scores.items()}
    built = {}
    for key, symbolic in (models.items() if args.rounds else ()):
        torch.manual_seed(0)
        built[key] = (symbolic, symbolic.build((3, 32, 32)).eval(), key.split("|")[1])
    if built:
        print(f"  {_stamp()}: compiling {len(built)} network/route pairs, then timing")
    latencies = sn.kas.network_latencies(built, rounds=args.rounds) if built else {}
    base = min((v for k, v in latencies.items() if k.startswith("original|")), default=float("nan"))
    rows = {}
    if latencies:
        print(f"  {_stamp()}: batch 1, min of {args.rounds} interleaved rounds (ms); speedup over the best "
              f"original ({base:.2f} ms)")
    for key, ms in latencies.items():
        name, route = key.split("|")
        params = sn.nn.count_params(built[key][1])
        ratio = score.get(name, 0.0) / score["original"] if name in score else None
        rows[key] = {"ms": ms, "speedup": base / ms, "params": params, "proxy_ratio": ratio}
        proxy = f"{first} {ratio:.3f}" if ratio is not None else ""
        print(f"  {name:34s} {route:9s} {ms:8.2f} {base / ms:7.2f}x   {params / 1e6:6.2f}M params   {proxy}")
    by_name = {c[0]: c for c in candidates}
    admitted = [(ms, key) for key, ms in latencies.items()
                if key.split("|")[0] in by_name and rows[key]["proxy_ratio"] >= args.min_proxy]
    winner = None
    if admitted:
        ms, key = min(admitted)
        winner = key.split("|")[0]
        print(f"  winner ({first} >= {args.min_proxy} x the original's): {winner} via {key.split('|')[1]}, "
              f"{base / ms:.2f}x")
    elif not latencies and candidates:
        winner = candidates[0][0]
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        exports = [(f"{args.backbone}_original", net)] + \
            [(f"{args.backbone}_kas_{c[1]}" if len(candidates) == 1 else
              f"{args.backbone}_kas_{c[0].replace('@', '_')}", c[2]) for c in candidates]
        for name, value in exports:
            path = os.path.join(args.export, f"{name}.json")
            sn.save(value, path)
            print(f"  wrote {path}")
    if args.save_winner and winner is not None:
        sn.save(by_name[winner][2], args.save_winner)
        print(f"  wrote {args.save_winner} ({winner})")
    return {"when": _stamp(), "candidates": {c[0]: c[3] for c in candidates}, "lowered": lowering, "proxy": scores,
            "latency": rows, "winner": winner, "baseline_ms": base}


def cmd_combine(args) -> dict:
    """A kernel's network, lowered to conv layers, then NAS-PTE's transformations (``sn.pte.search``:
    grouping with channel shuffle, input bottlenecks) on its convs, legal by the proxy against the
    kernel's network; the result is saved for ``networks --compare``."""
    net = sn.nn.backbone(args.backbone) if args.depth is None else sn.nn.resnet(tuple(args.depth), width=args.width)
    targets = sn.kas.conv_targets(net, kernel_size=tuple(args.kernel_sizes))
    kernel = _kernel(args.kernel[0])
    solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=args.budget))
    lowered, n_low, n_all = sn.kas.lower_network(sn.kas.replace_convs(net, kernel, solution, targets))
    if n_low != n_all:
        raise SystemExit(f"combine: {n_all - n_low} of {n_all} kernels do not lower to conv layers")
    P = sn.program
    steps = {"group2": P.Group(2), "group4": P.Group(4), "bottleneck2": P.Bottleneck(2, axis="ci")}
    menu = sn.pte.LayerMenu(options=[[steps[name]] for name in args.menu], channel_shuffle=True, max_templates=1)
    print(f"kas combine: {_stamp()}\n  {args.backbone}, {' -> '.join(kernel.names())} (FLOPs "
          f"{solution.flops / solution.baseline_flops:.3f}), lowered; sn.pte.search, {args.trials} candidates, "
          f"menu {' | '.join(args.menu)} (groups with channel shuffle)")
    result = sn.pte.search(lowered, data=sn.data.CIFAR10(), legality="network", trials=args.trials, menu=menu,
                           kernel_table=sn.pte.KernelTable(repeat=2), fill=None, batch_size=args.batch,
                           measure=False, seed=args.seed, log=lambda line: print("  " + line))
    print(f"  {result}")
    if args.save:
        sn.save(result.network, args.save)
        print(f"  wrote {args.save}")
    return {"when": _stamp(), "choice": {k: str(v) for k, v in result.choice.items()}}


def cmd_layers(args) -> dict:
    """Per conv shape: the original conv and the kernel through each route (``sn.kas.layer_latencies``)."""
    net = sn.nn.backbone(args.backbone)
    targets = sn.kas.conv_targets(net, kernel_size=tuple(args.kernel_sizes))
    kernel = _kernel(args.kernel[0])
    solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=args.budget))
    print(f"kas layers: {_stamp()}\n  {args.backbone}, {' -> '.join(kernel.names())} at budget {args.budget} "
          f"(FLOPs {solution.flops / solution.baseline_flops:.3f} of the replaced convs'); batch 1, min of "
          f"{args.rounds} interleaved rounds of {args.number} calls (ms)")
    rows = sn.kas.layer_latencies(targets, kernel, solution, routes=args.routes, rounds=args.rounds,
                                  number=args.number)
    print(f"  {_stamp()}: timed")
    head = "".join(f"{'conv ' + r:>11s}" for r in args.routes) + "".join(f"{'kernel ' + r:>13s}" for r in args.routes)
    print(f"  {'conv shape':22s} {'count':>5s}{head}   sizes")
    totals = {("conv", r): 0.0 for r in args.routes}
    totals.update({("kernel", r): 0.0 for r in args.routes})
    for t, row in zip(targets, rows):
        cells = "".join(f"{row['conv'][r]:11.3f}" for r in args.routes) + "".join(
            f"{row['kernel'][r]:13.3f}" if row["kernel"][r] is not None else f"{'-':>13s}" for r in args.routes)
        print(f"  {row['target']:22s} {row['count']:5d}{cells}   {solution.for_target(t)}")
        for r in args.routes:
            totals[("conv", r)] += row["conv"][r] * row["count"]
            if row["kernel"][r] is not None:
                totals[("kernel", r)] += row["kernel"][r] * row["count"]
    cells = "".join(f"{totals[('conv', r)]:11.2f}" for r in args.routes) + "".join(
        f"{totals[('kernel', r)]:13.2f}" for r in args.routes)
    print(f"  {'weighted by count':22s} {sum(t.count for t in targets):5d}{cells}")
    best_conv = min(totals[("conv", r)] for r in args.routes)
    for r in args.routes:
        if totals[("kernel", r)]:
            print(f"  kernel via {r}: {best_conv / totals[('kernel', r)]:.2f}x the best original route's "
                  f"sum ({best_conv:.2f} ms), {totals[('conv', r)] / totals[('kernel', r)]:.2f}x the conv via {r}")
    for row in rows:
        for r, why in row["why"].items():
            print(f"  {row['target']}: no {r} kernel ({why})")
    return {"when": _stamp(), "rows": rows, "totals": {f"{a}|{r}": v for (a, r), v in totals.items()}}


def cmd_trainstep(args) -> dict:
    """Training-step time in torch: the original, a kernel's network with native ops, the same network
    run primitive by primitive (``native=False``), all in one process, interleaved."""
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    net = sn.nn.backbone(args.backbone)
    targets = sn.kas.conv_targets(net, kernel_size=tuple(args.kernel_sizes))
    kernel = _kernel(args.kernel[0])
    solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=args.budget))
    ours = sn.kas.replace_convs(net, kernel, solution, targets)
    torch.manual_seed(0)
    models = {"original": net.build((3, 32, 32)), "ours, native ops": ours.build((3, 32, 32))}
    models["ours, primitive by primitive"] = sn.kas.set_native(copy.deepcopy(models["ours, native ops"]), False)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
    with torch.no_grad():
        a, b = models["ours, native ops"].eval()(x), models["ours, primitive by primitive"].eval()(x)
    error = float((a - b).abs().max())
    times = sn.kas.train_step_times(models, x, y, rounds=args.rounds, steps=args.steps)
    print(f"kas trainstep: {_stamp()}\n  {args.backbone}, {' -> '.join(kernel.names())} at budget {args.budget}; "
          f"batch {args.batch}, {args.threads} threads, min of {args.rounds} interleaved rounds of {args.steps} "
          f"steps; native vs generic outputs differ by at most {error:.2g}")
    base = times["original"]
    for name, ms in times.items():
        print(f"  {name:30s} {ms:9.1f} ms/step  {ms / base:5.2f}x the original's")
    return {"when": _stamp(), "ms": times, "max_abs_difference": error}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backbone", default="resnet34", choices=sorted(sn.nn.BACKBONES))
    common.add_argument("--budget", type=float, default=0.25, help="kernel FLOPs / replaced convs' multiply-adds")
    common.add_argument("--min-primitives", type=int, default=5)
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
    p.add_argument("--workers", type=int, default=1, help="sampling processes (sn.algorithms.Canvas(workers=...))")
    p.add_argument("--baseline", default=None,
                   help="another symnas checkout (e.g. `git worktree add /tmp/base main`): its sampler runs first, "
                        "with the same arguments, and both rates are printed side by side")
    p = sub.add_parser("rediscover", parents=[common])
    p.add_argument("--samples", type=int, default=20000)
    p = sub.add_parser("search", parents=[common])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--task", choices=["proxy", "backbone"], default="proxy",
                   help="proxy: a small ResNet on a CIFAR-10 subset (CPU); backbone: the backbone itself with "
                        "train_cifar.py's recipe (a GPU)")
    p.add_argument("--device", default=None, help="torch device (default: proxy cpu, backbone cuda if present)")
    p.add_argument("--data", default=None, help="cifar10_jpeg.npz (default: $SYMNAS_DATA)")
    p.add_argument("--batch", type=int, default=512, help="--task backbone's batch size")
    p.add_argument("--lr", type=float, default=0.2, help="--task backbone's peak learning rate")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=5000, help="training images (0: all)")
    p.add_argument("--eval-size", type=int, default=2000, help="test images (0: all)")
    p.add_argument("--reference", nargs="*", default=[], choices=sorted(_KERNELS),
                   help="hand-written kernels trained the same way before the search, for comparison")
    p.add_argument("--algorithm", choices=sorted(_ALGORITHMS), default="canvas",
                   help="what proposes the kernels (every symnas algorithm searches the same space)")
    p.add_argument("--workers", type=int, default=1,
                   help="candidates trained at once, each in its own process (several fit on one GPU)")
    p.add_argument("--population", type=int, default=16,
                   help="the evolutions' population (after --initial, evolution fills it with random points, "
                        "kernel-evolution with Canvas's samples)")
    p.add_argument("--initial", nargs="*", default=[], choices=sorted(_KERNELS),
                   help="hand-written kernels evaluated as the study's first trials (warm start: evolution "
                        "mutates from them); they must fit the space (their primitive count >= --min-primitives)")
    p.add_argument("--proxy-width", type=int, default=16)
    p.add_argument("--proxy", default="snip")
    p.add_argument("--proxy-ratio", type=float, default=0.3)
    p.add_argument("--first-loss", type=float, default=2.2, help="largest training loss after epoch 1")
    p.add_argument("--storage", default=None)
    p.add_argument("--export", default=None)
    p = sub.add_parser("mutations", parents=[common])
    p.add_argument("--parents", nargs="+", default=["depthwise_separable", "bottleneck_separable",
                                                     "spatially_separable"], choices=sorted(_KERNELS))
    p.add_argument("--children", type=int, default=300)
    p = sub.add_parser("networks", parents=[common])
    p.add_argument("--kernel", nargs="+", default=["depthwise_separable"],
                   help=f"candidates: names of {sorted(_KERNELS)} or kernel JSONs written by `search --export`")
    p.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="budgets each candidate kernel is solved for (default: --budget)")
    p.add_argument("--per-layer", action="store_true",
                   help="one more candidate: per conv shape, the candidate kernel that compiles fastest there")
    p.add_argument("--routes", nargs="+", default=["tvm", "ort"],
                   choices=["tvm", "tvm_unfused", "ort", "inductor", "eager"],
                   help="how the original and the candidates run (the NAS-PTE networks: tvm); tvm_unfused: TVM "
                        "without fusing a kernel's two convs into one function")
    p.add_argument("--proxy", nargs="+", default=["naswot", "fisher"],
                   help="zero-cost proxies (sn.proxies) compared with the original's; the first admits the winner")
    p.add_argument("--proxy-batch", type=int, default=64)
    p.add_argument("--min-proxy", type=float, default=0.0,
                   help="the winner's proxy score must be at least this fraction of the original's")
    p.add_argument("--compare", nargs="*", default=[], help="other saved networks to time (NAS-PTE's)")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (0: only export the networks)")
    p.add_argument("--export", default=None)
    p.add_argument("--save-winner", default=None, help="write the fastest admitted network here (sn.save)")
    p = sub.add_parser("combine", parents=[common])
    p.add_argument("--kernel", nargs=1, default=["depthwise_separable"])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--batch", type=int, default=32, help="the proxy's minibatch")
    p.add_argument("--depth", type=int, nargs=4, default=None, help="a small resnet instead of --backbone")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--save", default=None)
    p.add_argument("--menu", nargs="+", default=["group2", "group4", "bottleneck2"],
                   choices=["group2", "group4", "bottleneck2"], help="NAS-PTE's steps offered per conv")
    p = sub.add_parser("layers", parents=[common])
    p.add_argument("--kernel", nargs=1, default=["spatially_separable"])
    p.add_argument("--routes", nargs="+", default=["tvm", "ort"], choices=["tvm", "ort", "inductor"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--number", type=int, default=10)
    p = sub.add_parser("trainstep", parents=[common])
    p.add_argument("--kernel", nargs=1, default=["depthwise_separable"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    if args.command == "networks" and args.budgets is None:
        args.budgets = [args.budget]
    for path in getattr(args, "compare", []):
        if not os.path.isfile(path):
            parser.error(f"no such network file: {path}")
    result = {"sampler": cmd_sampler, "rediscover": cmd_rediscover, "search": cmd_search, "mutations": cmd_mutations,
              "networks": cmd_networks, "combine": cmd_combine, "layers": cmd_layers, "trainstep": cmd_trainstep}[args.command](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
