"""Network x transformations x accelerator: separate versus joint search (NAHAS's question), costed by ZigZag.

For each backbone (CIFAR-10, batch 1), the area budget is the ``--preset`` accelerator's area and every
search runs ``--trials`` trials of the same algorithm (``sn.hw.compare_searches``):
(a) the original network on the preset; (b) hardware only; (c) network only (Fisher-legal transformation
sequences, per-layer legality, channel shuffle); (d) sequential: (c)'s network, then a hardware search (2N trials in
all); (s) sequential at N trials (N/2 network, N/2 hardware); (e) joint.
Printed per arm: EDP (fast mapping, and the winner again with ZigZag's full LOMA search), latency, energy,
area, weights, exact whole-network legality, trials and search time. ``--export DIR`` writes each
searched winner's network as JSON (``sn.save`` of the ``sn.nn`` tree, what
``benchmarks/train_cifar.py --models`` trains) and its accelerator.

Usage::

    python benchmarks/hw_cosearch.py --backbones resnet18 resnext29_2x64d --trials 1000 --lock /work/bench.lock
    python benchmarks/hw_cosearch.py --backbones resnet18 --trials 50 --fisher-batch 32 --loma none   # quick
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import time

import symnas as sn

ALGORITHMS = {
    "evolution": lambda seed: sn.algorithms.RegularizedEvolution(population_size=20, tournament_size=5, seed=seed),
    "alternating": lambda seed: sn.algorithms.AlternatingEvolution(population_size=20, tournament_size=5,
                                                                   phase_length=50, seed=seed),
    "random": lambda seed: sn.algorithms.Random(seed=seed),
    "reinforce": lambda seed: sn.algorithms.Reinforce(seed=seed),
    "bayesian": lambda seed: sn.algorithms.Bayesian(seed=seed),
}


@contextlib.contextmanager
def locked(path):
    """Holds an exclusive flock on ``path`` (waiting for it), or nothing when ``path`` is None."""
    if path is None:
        yield
        return
    with open(path, "a", encoding="utf-8") as f:
        start = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"  lock {path} held (waited {time.perf_counter() - start:.0f} s)", flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnext29_2x64d"])
    parser.add_argument("--trials", type=int, default=1000, help="trials per search")
    parser.add_argument("--arms", default="abcdse", help="a b c d s e (see sn.hw.compare_searches)")
    parser.add_argument("--algorithm", default="evolution", choices=sorted(ALGORITHMS))
    parser.add_argument("--preset", default="edge_tpu_like", choices=sorted(sn.hw.PRESETS))
    parser.add_argument("--objective", default="edp", choices=["edp", "latency_ms", "energy_uj"])
    parser.add_argument("--fisher-batch", type=int, default=128, help="CIFAR-10 images for Fisher legality")
    parser.add_argument("--legality", default="per_layer", choices=["per_layer", "network"],
                        help="Fisher legality per layer (LegalityCheck's default) or of the network's sum")
    parser.add_argument("--finalists", type=int, default=10, help="best trials checked exactly, in order, per search")
    parser.add_argument("--repair-rounds", type=int, default=3,
                        help="rounds of reverting the layers the exact check finds illegal, per finalist")
    parser.add_argument("--loma", default="targets", choices=["all", "targets", "none"],
                        help="winners re-costed by ZigZag's LOMA search: all, (a) + (e) + the best of (b)-(d), none")
    parser.add_argument("--exact-in-loop", action="store_true",
                        help="whole-network legality check inside each network search on its best designs")
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="groupings without channel shuffle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", default=None, help="write the winners' networks and accelerators here")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--lock", default=None, metavar="FILE",
                        help="hold this lock file (flock) during the searches only, not the LOMA re-costing")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"{started:%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.algorithm}, seed {args.seed}", flush=True)
    batch = sn.hw.fisher_batch(args.fisher_batch, args.seed)
    summary = {"started": f"{started:%Y-%m-%d %H:%M} UTC", "args": vars(args), "backbones": {}}
    for backbone in args.backbones:
        print(f"\n=== {backbone} ===", flush=True)
        with locked(args.lock):
            results = sn.hw.compare_searches(backbone, args.trials, preset=args.preset,
                                             algorithm=ALGORITHMS[args.algorithm], seed=args.seed, batch=batch,
                                             legality=args.legality, objective=args.objective,
                                             finalists=args.finalists, repair_rounds=args.repair_rounds,
                                             loma="none", arms=args.arms,
                                             channel_shuffle=args.shuffle, exact_in_loop=args.exact_in_loop,
                                             log=lambda s: print(s, flush=True))
            load = os.getloadavg()
            print(f"  searches done, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        sn.hw.recost_with_loma(results, backbone, which=args.loma, objective=args.objective, preset=args.preset,
                               log=lambda s: print(s, flush=True))
        print()
        print(sn.hw.format_table(results))
        for r in results:
            print(f"  ({r.arm}) {r.design.describe() if r.design is not None else 'no feasible design'}")
        summary["backbones"][backbone] = [
            {"arm": r.arm, "label": r.label, "metrics": r.metrics, "loma": r.loma, "trials": r.trials,
             "seconds": r.seconds, "feasible": r.feasible, "exact_legal": r.exact_legal, "checked": r.checked,
             "design": r.design.describe() if r.design is not None else None} for r in results]
        if args.export:
            os.makedirs(args.export, exist_ok=True)
            for r in (r for r in results if r.design is not None):
                stem = os.path.join(args.export, f"{backbone}_hw_{r.arm}")
                sn.save(r.design.network.network(), f"{stem}.json")          # sn.load reads them back safely
                sn.save(r.design.accelerator, f"{stem}_accelerator.json")
                r.design.accelerator.to_yaml(os.path.join(args.export, f"{backbone}_hw_{r.arm}_zigzag"))
            print(f"  networks and accelerators written to {args.export}/{backbone}_hw_<arm>*.json")
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds():.0f} s in all")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, default=str)


if __name__ == "__main__":
    main()
