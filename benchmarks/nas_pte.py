"""NAS as program transformation on CIFAR-10 backbones, on this CPU: ``sn.pte.search`` and its baselines.

For each backbone it runs ``sn.pte.search`` (kernel table, search, exact check, repair, budget fill;
see ``symnas/pte``) and prints: the kernel table and the search, per-layer latencies (torch, the TVM
original, NAS-only = group by 2 then compile, ours) and proxy scores, the whole networks at batch 1 in
one process (torch eager, torch jit-opt, every conv a TVM kernel on the flat plan; the original also
through TVM Relax untuned), parameters, the conv FLOPs spent on channels no conv reads, and the exact
legality of the network found. Records of every run: ``docs/results_nas_pte.md``.

Usage::

    python benchmarks/nas_pte.py --backbone resnet34 --trials 1000
    python benchmarks/nas_pte.py --quick            # resnet18, 100 trials, small proxy batch
    python benchmarks/nas_pte.py --backbone resnet34 --mode network --channel-shuffle --fill-budget \\
        --fill-by snip --exact-candidates 40 --target-speedup 3.3 --fill-checks 100 --no-relax \\
        --kernel-table benchmarks/networks/kt_r34_cold.json --export models    # the shipped network
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import pyglove as pg
import torch

import symnas as sn
from symnas.pte import end_to_end_timings, kernel_share  # noqa: F401  (relax_baseline.py imports them from here)

ALGORITHMS = {"evolution": lambda seed: sn.algorithms.RegularizedEvolution(population_size=20, tournament_size=5,
                                                                           seed=seed),
              "random": lambda seed: sn.algorithms.Random(seed=seed),
              "reinforce": lambda seed: sn.algorithms.Reinforce(seed=seed)}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--backbone", nargs="+", default=["resnet34"], choices=["resnet18", "resnet34", "resnext29_2x64d", "densenet161"])
    a("--trials", type=int, default=1000)
    a("--algorithm", default="evolution", choices=sorted(ALGORITHMS))
    a("--fisher-batch", type=int, default=128, help="training images that judge legality")
    a("--proxy", default="fisher", choices=sn.proxies.available(),
      help="the zero-cost proxy that judges legality; other proxies than fisher need --context tail")
    a("--context", default="block", choices=["block", "tail"],
      help="a layer scored alone: inside its block with the original's output gradient (fast), or with "
           "the whole rest of the network (exact)")
    a("--mode", default="per_layer", choices=["per_layer", "network"],
      help="legality: every transformed layer, or the network's sum")
    a("--rejection", default="layer", choices=["layer", "network"],
      help="an illegal layer transformation is rejected alone (the layer keeps the original) or rejects the network")
    a("--objective", default="latency", choices=["latency", "fisher", "params"],
      help="the fastest legal network, or the legal network of highest Fisher Potential / most conv weights "
           "within the budget (--target-speedup)")
    a("--target-speedup", type=float, default=3.0,
      help="latency budget of --objective fisher|params and --fill-budget, over the original's kernel sum")
    a("--fill-budget", action="store_true", help="after the exact check, spend the budget left on capacity")
    a("--fill-by", default="weights", choices=["weights", "snip"], help="what --fill-budget buys per ms")
    a("--fill-images", type=int, default=None, help="images that --fill-by snip ranks options on (default: all)")
    a("--fill-checks", type=int, default=40, help="exact checks --fill-budget may spend")
    a("--exact-candidates", type=int, default=10, help="the search's best legal candidates checked exactly")
    a("--repair-rounds", type=int, default=4,
      help="rounds in which a failing layer tries its next-fastest legal option before the original")
    a("--channel-shuffle", action="store_true", help="groupings read interleaved input channels")
    a("--no-dead-channels", action="store_true",
      help="offer no input bottleneck to a conv that alone reads the conv before it")
    a("--keep", nargs="+", default=[], metavar="LAYER", help="layers left original (torch names, e.g. 3.body.0)")
    a("--kernel-table", default=None, metavar="FILE",
      help="read kernel latencies from FILE (when it exists) and write this run's there")
    a("--repeat", type=int, default=5, help="timing repeats per kernel")
    a("--kernel-timing", choices=["cold", "warm"], default="cold",
      help="cold (default): each kernel timed with its weights flushed from the caches, as inside a network at "
           "batch 1; warm: back-to-back calls")
    a("--max-templates", type=int, default=6, help="program templates per kernel")
    a("--rounds", type=int, default=5, help="interleaved rounds of the whole-network timings")
    a("--no-relax", dest="relax", action="store_false", help="skip the original through TVM Relax (untuned)")
    a("--seed", type=int, default=0)
    a("--quick", action="store_true", help="resnet18, 100 trials, proxy batch 32, one template")
    a("--json", default=None, help="write the results here")
    a("--export", default=None, help="save the original, ours and the NAS-only network (JSON) here")
    args = p.parse_args(argv)
    for name, low in (("exact_candidates", 0), ("fill_images", 1), ("fill_checks", 0), ("trials", 1),
                      ("fisher_batch", 1), ("repeat", 1), ("max_templates", 1), ("rounds", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if not args.target_speedup > 0:
        p.error(f"--target-speedup must be positive, got {args.target_speedup}")
    if args.proxy != "fisher" and args.context == "block":
        p.error(f"--proxy {args.proxy}: the block context reuses output gradients and is defined for fisher; "
                "add --context tail")
    if args.quick:
        args.backbone, args.trials, args.fisher_batch, args.max_templates = ["resnet18"], 100, 32, 1
    try:     # a missing data set or an unusable table fail now, before minutes of kernel compiles
        sn.data.CIFAR10().batch(1)
        table(args).load()
    except (FileNotFoundError, ValueError) as e:
        other = "warm" if "timed with warm" in str(e) else "cold" if "timed with cold" in str(e) else None
        p.error(str(e) + (f" (--kernel-timing {other} reads it)" if other else ""))
    return args


def table(args) -> sn.pte.KernelTable:
    return sn.pte.KernelTable(path=args.kernel_table, repeat=args.repeat, cold_weights=args.kernel_timing == "cold")


def run(name: str, args) -> sn.pte.PTEResult:
    """``sn.pte.search`` of one backbone with the options given."""
    budget = args.objective != "latency" or args.fill_budget
    return sn.pte.search(
        sn.nn.backbone(name), data=sn.data.CIFAR10(), target_speedup=args.target_speedup if budget else None,
        legality=args.mode, trials=args.trials, algorithm=ALGORITHMS[args.algorithm](args.seed),
        objective=args.objective, rejection=args.rejection, kernel_table=table(args),
        menu=sn.pte.LayerMenu(channel_shuffle=args.channel_shuffle, no_dead_channels=args.no_dead_channels,
                              keep=args.keep, max_templates=args.max_templates),
        screening=sn.pte.ExactScreening(args.exact_candidates), repair=sn.pte.Repair(args.repair_rounds),
        fill=sn.pte.BudgetFill(args.fill_by, args.fill_images, args.fill_checks) if args.fill_budget else None,
        batch_size=args.fisher_batch, proxy=args.proxy, context=args.context, seed=args.seed, measure=False,
        log=lambda line: print(f"  {line}", flush=True))


def print_layers(result: sn.pte.PTEResult) -> dict:
    """The per-layer table, with each conv alone in torch (oneDNN) as a baseline."""
    sites = {s.torch_name: s for s in sn.nn.transformable_convs(result.original)}
    torch_ms = dict(zip(sites, sn.pte.torch_conv_timings([s.operator() for s in sites.values()])))
    print("\n  per-layer latency (ms, batch 1; TVM = the original's fastest template; NAS = G2 then compile)")
    print(f"  {'layer':28s} {'shape':22s} {'torch':>7s} {'TVM':>7s} {'NAS':>7s} {'ours':>7s} {'x':>5s}  "
          f"ours (+template)             score original->ours")
    for row in result.layers:
        row["torch_ms"] = torch_ms[row["layer"]]
        speed = min(row["torch_ms"], row["original_ms"]) / row["ours_ms"]
        print(f"  {row['layer']:28s} {row['shape']:22s} {row['torch_ms']:7.3f} {row['original_ms']:7.3f} "
              f"{row['nas_only_ms']:7.3f} {row['ours_ms']:7.3f} {speed:5.2f}  "
              f"{row['neural'] + ' ' + row['template']:28s} {row['score_original']:.3g}->{row['score_ours']:.3g}")
    return torch_ms


def print_networks(result: sn.pte.PTEResult, details: dict, torch_conv_sum: float) -> None:
    t, k = result.timings_ms, result.kernel_ms
    print(f"\n  kernel sums (ms): original {k['original']:.2f} (torch per conv {torch_conv_sum:.2f}); NAS-only "
          f"{k['nas_only']:.2f}; ours {k['ours']:.2f} ({result.legality.chosen_from}; search best "
          f"{k['search_best']:.2f}); {result.kernel_speedup:.2f}x")
    print(f"\n  whole network, batch 1, one process (ms; min of {len(details['runs']['ours'])} interleaved rounds; "
          f"jit-opt = torch.jit.optimize_for_inference; TVM = every conv a TVM kernel, batch norm, ReLU and "
          f"residual add fused, the rest torch on 1 thread, flat plan; compiled in {details['compile_seconds']:.0f} s)")
    print(f"  {'':14s} {'torch eager':>12s} {'torch jit-opt':>14s} {'TVM':>10s}  max |TVM - torch|   TVM kernels inside")
    for label in ("original", "nas_only", "ours"):
        share = details["shares"][label]
        print(f"  {label:14s} {t[label + '_torch']:12.2f} {t[label + '_jit']:14.2f} {t[label]:10.2f}  "
              f"{details['errors'][label]:.1e}            {share['kernels']:.2f} of {share['total']:.2f} ms")
    relax = details["relax"] or {"error": "not run (--no-relax)"}
    print("  original through TVM Relax (untuned): " + (f"{relax['ms']:.1f} ms" if "ms" in relax else relax["error"]))
    best = min(v for key, v in t.items() if key.startswith("original"))
    print(f"  speedup of ours over the best original ({best:.2f} ms): {result.speedup:.2f}x; NAS-only "
          f"{best / t['nas_only']:.2f}x; ours over torch eager original {t['original_torch'] / t['ours']:.2f}x")


def report(name: str, result: sn.pte.PTEResult, args) -> dict:
    """Times the networks, prints the tables, returns the JSON record."""
    search, legal = result.search, result.legality
    print(f"  search: {search['trials']} candidates ({args.algorithm}), {legal.candidates_rejected} illegal "
          f"({legal.rejection_rate:.1%}); {legal.layer_transformations_illegal} of "
          f"{legal.layer_transformations_scored} distinct layer transformations illegal; "
          f"{search['seconds']['search']:.1f} s ({search['layer_scorings']} layer scorings, "
          f"{search['scoring_seconds']:.0f} s)", flush=True)
    torch_ms = print_layers(result)
    baselines = ("torch", "jit", "nas_only") + (("relax",) if args.relax else ())
    details = result.measure(rounds=args.rounds, baselines=baselines, seed=args.seed)
    print_networks(result, details, sum(torch_ms[s.torch_name] for s in sn.nn.transformable_convs(
        result.original, include_all=True) if s.torch_name in torch_ms))
    unread = sn.nn.unread_channel_flops(result.network)
    flops = sum(s.kernel().flops() for s in sn.nn.transformable_convs(result.network, include_all=True))
    share = sum(u for u, _ in unread.values()) / flops
    print(f"  params: original {result.params['original'] / 1e6:.2f}M, ours {result.params['ours'] / 1e6:.2f}M; "
          f"{share:.1%} of ours' conv FLOPs compute channels that the next conv does not read")
    exact = legal.exact
    print(f"  exact legality of ours: per layer {exact['per_layer']['legal']}; network {exact['network']['legal']} "
          f"({exact['network'][args.proxy + '_candidate']:.4g} vs "
          f"{legal.original_score:.4g}); moves {len(legal.moves)}, fill upgrades {len(legal.fill_upgrades)}")
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        for label, net in (("original", result.original), ("ours", result.network),
                           ("nas_g2", result.nas_only_network())):
            with open(os.path.join(args.export, f"{name}_{label}.json"), "w") as f:
                f.write(pg.to_json_str(net))
    options = {k: v for k, v in vars(args).items() if k not in ("json", "export", "quick")}
    return {"backbone": name, "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "options": options, **result.to_json(), "unread_channel_share": share, "relax_untuned": details["relax"],
            "end_to_end_runs": details["runs"], "end_to_end_max_abs_error": details["errors"],
            "kernels_inside_network": details["shares"], "programs_compiled": details["schedules"]}


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(sn.program.measure.num_threads())
    print(f"nas_pte: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), TVM threads "
          f"{os.environ.get('TVM_NUM_THREADS')}; other processes share this CPU", flush=True)
    results = []
    for name in args.backbone:
        print(f"\n=== {name} ===", flush=True)
        results.append(report(name, run(name, args), args))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
