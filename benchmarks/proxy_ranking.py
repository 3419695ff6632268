"""Every zero-cost proxy's whole-network score of exported networks, relative to the first (the original).

Networks are the JSON files ``nas_pte.py --export DIR`` writes (any symbolic ``sn.nn`` network works);
scores are summed over the transformable layers on one batch of CIFAR-10 training images from
``$SYMNAS_DATA``, each layer's weights drawn from (seed, its name) as in the legality check. Use it to ask
which measure orders candidates the way their trained accuracy does.

Usage::

    python benchmarks/proxy_ranking.py --models DIR/resnet34_original.json A.json B.json
"""
from __future__ import annotations

import argparse
import os
import sys

import pyglove as pg

import symnas as sn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nas_pte import cifar_batch  # noqa: E402  pylint: disable=wrong-import-position

PROXIES = ("fisher", "snip", "grad_norm", "synflow", "naswot")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="the original first, then candidates")
    parser.add_argument("--proxies", nargs="+", default=list(PROXIES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(set(args.models)) < 2:
        parser.error("give the original network and at least one other candidate")
    nets = {}
    for path in args.models:
        with open(path) as f:
            nets[path] = pg.from_json_str(f.read())
    x, y = cifar_batch(args.batch, args.seed)
    names = list(nets)
    print(f"{'proxy':10s} " + " ".join(f"{n[-24:]:>24s}" for n in names[1:]) + "   (score / the original's)")
    table = {}
    for proxy in args.proxies:
        check = sn.proxies.LegalityCheck(seed=args.seed, mode="network", proxy=proxy)
        scores = {n: sum(check.layer_scores(net, x, y).values()) for n, net in nets.items()}
        table[proxy] = {n: scores[n] / scores[names[0]] for n in names[1:]}
        print(f"{proxy:10s} " + " ".join(f"{table[proxy][n]:24.3f}" for n in names[1:]), flush=True)
    return table


if __name__ == "__main__":
    main()
