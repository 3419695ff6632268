"""The accelerator cost model's fast path: its speed, and how well it ranks against ZigZag's full search.

1. Speed: the distinct layers of a backbone on ``--accelerators`` random accelerators of
   ``sn.hw.nahas_space()``, each layer costed once (a cache miss: "cold"), the accelerator parsed
   once per accelerator; then the whole network again from the cache.
2. Rank agreement: ``--pairs`` random (layer, accelerator) pairs (``sn.hw.random_pairs``: layers of
   ResNet-18 and ResNeXt-29, original and transformed), costed by the fast mapping and by ZigZag's
   LOMA search (``lpf_limit`` 6); Spearman and Kendall over all pairs and Spearman per layer.

Usage::

    python benchmarks/hw_cost_model.py --pairs 60            # ~10 min on 2 cores (LOMA dominates)
    python benchmarks/hw_cost_model.py --pairs 0             # speed only
    python benchmarks/hw_cost_model.py --accelerators 0      # rank agreement only
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import pyglove as pg

import symnas as sn


def speed(backbone: str, accelerators: int, seed: int) -> None:
    layers = sn.hw.network_layers(sn.nn.backbone(backbone))
    distinct = list({l.key(): l for l in layers}.values())
    accs = list(pg.random_sample(sn.hw.nahas_space(), seed=seed, num_examples=accelerators))
    model = sn.hw.CostModel()
    model.network_cost(layers[:1], sn.hw.edge_tpu_like())          # imports ZigZag once
    per_layer, parse, network_cached, rejected = [], [], [], 0
    for acc in accs:
        start = time.perf_counter()
        try:
            model._entry(acc)  # pylint: disable=protected-access
        except sn.hw.HardwareError:
            rejected += 1
            continue
        parse.append(time.perf_counter() - start)
        for layer in distinct:
            try:
                cost = model._cost(layer, acc, model._entry(acc), "fast")  # pylint: disable=protected-access
            except sn.hw.HardwareError:
                continue
            per_layer.append(cost.seconds)
        start = time.perf_counter()
        try:
            model.network_cost(layers, acc)
        except sn.hw.HardwareError:
            continue
        network_cached.append(time.perf_counter() - start)
    print(f"\n== fast path speed: {backbone} ({len(layers)} layers, {len(distinct)} distinct) on {len(accs)} random "
          f"accelerators ({rejected} rejected by ZigZag's validation)")
    print(f"one layer, cold (cache miss, 3 canonical orders): median {statistics.median(per_layer) * 1e3:.1f} ms, "
          f"max {max(per_layer) * 1e3:.1f} ms over {len(per_layer)} evaluations (target <= 50 ms median)")
    print(f"parsing an accelerator (once per accelerator): median {statistics.median(parse) * 1e3:.1f} ms")
    print(f"whole network, distinct layers cached: median {statistics.median(network_cached) * 1e3:.2f} ms, "
          f"max {max(network_cached) * 1e3:.2f} ms (target <= 1 s)")


def ranks(pairs: int, seed: int) -> None:
    print(f"\n== fast vs full (LOMA) on {pairs} random (layer, accelerator) pairs, seed {seed}")
    report = sn.hw.fast_vs_full(sn.hw.random_pairs(pairs, seed=seed), log=print)
    ratios = sorted(report.ratios)
    print(f"pairs mapped both ways: {len(ratios)} (skipped {len(report.skipped)})")
    print(f"Spearman (EDP, all pairs): {report.spearman:.4f} (target >= 0.9); Kendall {report.kendall:.4f}")
    print(f"Spearman per layer across its accelerators, mean: {report.within_layer_spearman:.4f}")
    print(f"fast/full EDP ratio: median {report.median_ratio:.3f}, 90th percentile "
          f"{ratios[int(0.9 * (len(ratios) - 1))]:.3f}, max {ratios[-1]:.3f}, min {ratios[0]:.3f}")
    print(f"time per pair: fast median {statistics.median(report.fast_seconds) * 1e3:.1f} ms, "
          f"LOMA median {statistics.median(report.full_seconds):.2f} s (total {sum(report.full_seconds):.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--accelerators", type=int, default=20, help="random accelerators for the speed test; 0: skip")
    parser.add_argument("--pairs", type=int, default=60, help="(layer, accelerator) pairs for the rank test; 0: skip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.accelerators < 0 or args.pairs < 0:
        parser.error("--accelerators and --pairs must be >= 0")
    load = os.getloadavg()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.accelerators:
        speed(args.backbone, args.accelerators, args.seed)
    if args.pairs:
        ranks(args.pairs, args.seed)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
