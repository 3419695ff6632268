"""Every zero-cost proxy's whole-network score of exported networks, relative to the first (the original).

Networks are the JSON files ``nas_pte.py --export DIR`` writes (any symbolic ``sn.nn`` network works);
scores are summed over the transformable layers on one batch of CIFAR-10 training images from
``$SYMNAS_DATA``, each layer's weights drawn from (seed, its name) as in the legality check. Use it to ask
which measure orders candidates the way their trained accuracy does: give each network's measured accuracy
(``--accuracy``, same order as ``--models``) and it prints each proxy's Kendall rank correlation with it.

Usage::

    python benchmarks/proxy_ranking.py --models DIR/resnet34_original.json A.json B.json \\
        --accuracy 86.5 85.6 84.9 --json ranking.json
"""
from __future__ import annotations

import argparse
import json
import pathlib

from scipy import stats

import symnas as sn

PROXIES = ("fisher", "snip", "grad_norm", "synflow", "naswot")


def labels(paths):
    """Short column names: file stems, with the parent folder where two stems collide."""
    stems = [pathlib.Path(p).stem for p in paths]
    return [f"{pathlib.Path(p).parent.name}/{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def kendall_tau(scores, accuracy) -> float:
    """Kendall's tau-b of two equally long sequences (nan when either is constant)."""
    return float(stats.kendalltau(scores, accuracy).statistic)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="the original first, then candidates")
    parser.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=sn.proxies.available())
    parser.add_argument("--accuracy", nargs="+", type=float,
                        help="measured test accuracy of each network, in --models order")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the scores (and rank correlations) here")
    args = parser.parse_args(argv)
    if len(set(args.models)) < 2:
        parser.error("give the original network and at least one other candidate")
    if args.accuracy is not None and len(args.accuracy) != len(args.models):
        parser.error(f"--accuracy has {len(args.accuracy)} values for {len(args.models)} --models")
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    nets = []
    for path in args.models:
        try:
            nets.append(sn.load(path))   # JSON only: nothing in the file runs
        except (OSError, ValueError, TypeError, KeyError) as e:
            parser.error(f"cannot load a network from {path}: {e}")
    names = labels(args.models)
    try:
        x, y = sn.data.CIFAR10().batch(args.batch, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    width = max(10, *(len(n) for n in names[1:]))

    def row(label, cells):
        return f"{label:10s} " + " ".join(f"{c:>{width}s}" for c in cells)

    print(f"score / the original's ({names[0]}), {args.batch} CIFAR-10 training images, seed {args.seed}")
    print(row("proxy", names[1:]) + ("   Kendall tau vs accuracy" if args.accuracy else ""))
    params = [sn.nn.count_params(net.build((3, 32, 32))) for net in nets]
    result = {"models": dict(zip(names, args.models)), "params": dict(zip(names, params)),
              "ratio": {}, "kendall_tau": {}}
    line = row("params", [f"{p / 1e6:.2f}M" for p in params[1:]])
    if args.accuracy:
        result["accuracy"] = dict(zip(names, args.accuracy))
        result["kendall_tau"]["params"] = kendall_tau(params, args.accuracy)   # the baseline a proxy must beat
        line += f"   {result['kendall_tau']['params']:+.2f} (parameter count)"
        print(row("accuracy", [f"{a:.2f}" for a in args.accuracy[1:]]) + f"   (original {args.accuracy[0]:.2f})")
    print(line)
    for proxy in args.proxies:
        check = sn.proxies.LegalityCheck(seed=args.seed, mode="network", proxy=proxy)
        scores = [sum(check.layer_scores(net, x, y).values()) for net in nets]
        ratios = [s / scores[0] for s in scores]
        result["ratio"][proxy] = dict(zip(names[1:], ratios[1:]))
        line = row(proxy, [f"{r:.3f}" if abs(r) >= 0.01 else f"{r:.2e}" for r in ratios[1:]])
        if args.accuracy:
            tau = kendall_tau(ratios, args.accuracy)    # the original (ratio 1) ranks with the others
            result["kendall_tau"][proxy] = tau
            line += f"   {tau:+.2f}"
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
