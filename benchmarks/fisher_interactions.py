"""How grouping some convolutions moves every layer's Fisher Potential in the whole network.

The search judges a layer's transformation alone (the rest of the network original); the legality the
issue defines judges the whole candidate. This prints, for each change, what the exact check sees: the
network's Fisher sum over the original's, how many layers' scores fell, and the changed layers' own
ratios. On DenseNet-161 a single grouped conv raises its own score but lowers the network's sum, and
grouped together about half of the grouped layers fall below the original (``docs/results_nas_pte.md``).

A change is ``KERNEL:INDEX`` (group the INDEX-th transformable conv of that kernel size, counting from 0)
or ``KERNEL:all`` (every transformable conv of that kernel size), each grouped by ``--groups``.

Usage::

    SYMNAS_DATA=../shared/data python benchmarks/fisher_interactions.py --backbone densenet161 \\
        --change 1:20 3:20 3:all 1:all
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List

import numpy as np
import torch

import symnas as sn
from symnas.proxies.legality import LegalityCheck


def grouped_sites(net, change: str, groups: int) -> Dict[str, object]:
    """The replacements of one ``KERNEL:INDEX`` / ``KERNEL:all`` change: site path -> grouped conv."""
    kernel, _, which = change.partition(":")
    if not kernel.isdigit() or not (which == "all" or which.isdigit()):
        raise ValueError(f"a change is KERNEL:INDEX or KERNEL:all (e.g. 1:20, 3:all), got {change!r}")
    sites = [s for s in sn.nn.transformable_convs(net) if s.layer.kernel == int(kernel)]
    if not sites:
        raise ValueError(f"{change!r}: the network has no transformable {kernel}x{kernel} conv")
    if which != "all":
        if int(which) >= len(sites):
            raise ValueError(f"{change!r}: the network has {len(sites)} transformable {kernel}x{kernel} convs")
        sites = [sites[int(which)]]
    for site in sites:
        if site.layer.groups != 1 or site.in_shape[0] % groups or site.out_shape[0] % groups:
            raise ValueError(f"{change!r}: {site.path} cannot be grouped by {groups}")
    return {s.path: s.layer.clone(override={"groups": groups}) for s in sites}


def interactions(net, changes: List[str], inputs: torch.Tensor, targets: torch.Tensor, groups: int = 2,
                 seed: int = 0) -> List[dict]:
    """One row per change: the network's Fisher ratio, the layers that fell, the changed layers' ratios."""
    check = LegalityCheck(seed=seed)
    original = check.layer_scores(net, inputs, targets)
    names = list(original)
    torch_name = {s.path: s.torch_name for s in sn.nn.transformable_convs(net)}
    rows = []
    for change in changes:
        replacements = grouped_sites(net, change, groups)
        start = time.time()
        scores = check.layer_scores(sn.nn.replace_convs(net, replacements), inputs, targets)
        changed = [torch_name[p] for p in replacements]
        ratio = {n: scores[n] / original[n] for n in names}
        rows.append({"change": change, "changed": len(changed),
                     "network_ratio": sum(scores.values()) / sum(original.values()),
                     "layers_fallen": sum(1 for n in names if ratio[n] < 1), "layers": len(names),
                     "changed_ratios": [ratio[n] for n in changed],
                     "changed_fallen": sum(1 for n in changed if ratio[n] < 1),
                     "unchanged_median_ratio": float(np.median([ratio[n] for n in names if n not in changed])),
                     "seconds": time.time() - start})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="densenet161", choices=sorted(sn.nn.backbones.BACKBONES))
    parser.add_argument("--change", nargs="+", default=["1:20", "3:20", "3:all"], metavar="KERNEL:INDEX|all")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128, help="CIFAR-10 training images (the search's batch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.groups < 2:
        parser.error(f"--groups must be >= 2, got {args.groups}")
    net = sn.nn.backbone(args.backbone)
    try:
        for change in args.change:
            grouped_sites(net, change, args.groups)    # a bad change fails before 40 s of scoring
        inputs, targets = sn.data.CIFAR10().batch(args.batch, seed=args.seed)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    rows = interactions(net, args.change, inputs, targets, args.groups, args.seed)
    print(f"{args.backbone}, grouped by {args.groups}, Fisher on {args.batch} CIFAR-10 images (seed {args.seed})")
    print(f"{'change':>10} {'convs':>5} {'network / original':>18} {'layers fallen':>14} "
          f"{'changed layers fallen':>21} {'changed layers own ratio':>26} {'median unchanged':>16}")
    for r in rows:
        own = r["changed_ratios"]
        own_text = f"{own[0]:.3f}" if len(own) == 1 else f"{min(own):.3f}-{max(own):.3f} (median {np.median(own):.3f})"
        print(f"{r['change']:>10} {r['changed']:>5} {r['network_ratio']:>18.4f} "
              f"{r['layers_fallen']:>6} of {r['layers']:<5} {r['changed_fallen']:>12} of {r['changed']:<5} "
              f"{own_text:>26} {r['unchanged_median_ratio']:>16.4f}")
    return rows


if __name__ == "__main__":
    main()
