"""Joint architecture + hyperparameter search (AutoHAS-style, seed 004) vs searching only one.

Three searches with the same trial budget and the same algorithm, repeated over seeds:
  joint      architecture + learning rate (log) + weight decay (log) + mixup
  arch-only  architecture; hyperparameters fixed at common defaults (SGD lr 0.1, wd 5e-4, no mixup)
  hp-only    hyperparameters; architecture fixed at a hand-written CNN
Each trial trains from scratch; the search maximises validation accuracy (held out from the
training set); the table gives the best trial's validation accuracy and that trial's test
accuracy, mean +- std over seeds.

    python benchmarks/joint_search.py --quick                  # digits, ~2-4 min on 2 CPU cores
    python benchmarks/joint_search.py --dataset cifar10 --train-size 5000 --epochs 3 --trials 12
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import pyglove as pg
import torch

import symnas as sn


def architecture_space():
    """A small CNN family: stem width/kernel, 1-2 searchable blocks, a pooling choice, head width."""
    return sn.nn.Sequential([
        sn.nn.ConvBN(pg.oneof([8, 16, 32]), kernel=pg.oneof([3, 5])),
        sn.nn.Stacked(op=pg.oneof([
            sn.nn.Identity(),
            sn.nn.ConvBN(pg.oneof([16, 32]), 3),
            sn.nn.Residual(sn.nn.ConvBN(pg.oneof([16, 32]), 3, activation=None),
                           post=sn.nn.ReLU()),
            sn.nn.MBConv(pg.oneof([16, 32]), kernel=3, expansion=pg.oneof([2, 4])),
        ]), repeats=pg.oneof([1, 2])),
        pg.oneof([sn.nn.MaxPool(2, stride=2, padding=0), sn.nn.AvgPool(2, stride=2, padding=0),
                  sn.nn.Identity()]),
        sn.nn.ConvBN(pg.oneof([32, 64]), 3),
    ])


def default_architecture():
    """The hand-written network hyperparameter-only search trains."""
    return sn.nn.Sequential([sn.nn.ConvBN(16, 3), sn.nn.ConvBN(32, 3),
                             sn.nn.MaxPool(2, stride=2, padding=0), sn.nn.ConvBN(64, 3)])


def make_spaces(data, epochs, train_size, validation_size, batch_size):
    def trainer(model):
        return sn.train.Trainer(model=model, optimizer=sn.train.SGD(0.1, momentum=0.9),
                                weight_decay=5e-4, data=data, epochs=epochs, batch_size=batch_size,
                                schedule=sn.train.Cosine(), train_size=train_size,
                                validation_size=validation_size)

    hp = dict(lr=(1e-3, 1.0), decay=(1e-6, 1e-2), mixup=(0.0, 0.2, 0.4))
    return {
        "joint": sn.spaces.hyperparameter_space(trainer(architecture_space()), **hp),
        "arch-only": trainer(architecture_space()),
        "hp-only": sn.spaces.hyperparameter_space(trainer(default_architecture()), **hp),
    }


ALGORITHMS = {
    "random": lambda seed: sn.algorithms.Random(seed=seed),
    "evolution": lambda seed: sn.algorithms.RegularizedEvolution(seed=seed),
    "reinforce": lambda seed: sn.algorithms.Reinforce(seed=seed),
    "bayesian": lambda seed: sn.algorithms.Bayesian(seed=seed),
}


def run(args):
    torch.set_num_threads(args.threads)
    if args.dataset == "digits":
        data = sn.data.Digits()
    elif args.dataset == "cifar10":
        data = sn.data.CIFAR10(root=args.data_root)
    else:
        data = sn.data.MNIST(root=args.data_root)
    data.load()  # Loading/decoding is not part of any search's time.
    spaces = make_spaces(data, args.epochs, args.train_size, args.validation_size, args.batch_size)
    rows = {}
    for mode, space in spaces.items():
        val, test, secs, failed = [], [], [], 0
        for seed in range(args.seeds):
            start = time.time()
            study = sn.search(space, algorithm=ALGORITHMS[args.algorithm](seed),
                              num_trials=args.trials, storage=None, progress=False,
                              name=f"{mode}-{seed}")
            secs.append(time.time() - start)
            best = study.best_trial
            val.append(best.metrics["accuracy"])
            test.append(best.metrics["test_accuracy"])
            failed += len(study.records) - len(study.completed)
            print(f"  {mode:9s} seed {seed}: best val {val[-1]:.4f} test {test[-1]:.4f} "
                  f"({secs[-1]:.0f} s, {len(study.completed)} completed)", flush=True)
        rows[mode] = (val, test, secs, failed)
    return rows


def _fmt(values):
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["digits", "cifar10", "mnist"], default="digits")
    parser.add_argument("--data-root", default=None, help="default: $SYMNAS_DATA")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (16)")
    parser.add_argument("--seeds", type=int, default=None, help="(3)")
    parser.add_argument("--epochs", type=int, default=None, help="(3)")
    parser.add_argument("--train-size", type=int, default=None, help="training subset size")
    parser.add_argument("--validation-size", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="random")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--quick", action="store_true",
                        help="600 training examples, 2 epochs, 8 trials, 3 seeds (~10 min on 2 busy cores)")
    args = parser.parse_args(argv)
    # --quick only fills what was not given explicitly.
    defaults = dict(train_size=600, epochs=2, trials=8, seeds=3) if args.quick else dict(
        train_size=None, epochs=3, trials=16, seeds=3)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# Joint architecture + hyperparameter search, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {device}, {args.threads} threads)")
    print(f"# {args.dataset}, train_size={args.train_size}, validation={args.validation_size}, "
          f"epochs={args.epochs}, algorithm={args.algorithm}, {args.trials} trials x {args.seeds} seeds",
          flush=True)
    rows = run(args)
    print()
    print("| search space | best val acc (%) | its test acc (%) | search time (s) | failed trials |")
    print("| --- | --- | --- | --- | --- |")
    for mode, (val, test, secs, failed) in rows.items():
        print(f"| {mode} | {_fmt(val)} | {_fmt(test)} | {statistics.mean(secs):.0f} | {failed} |")


if __name__ == "__main__":
    main()
