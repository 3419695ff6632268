"""Multi-fidelity: the same training search with and without a scheduler (ASHA / Hyperband).

A real search: small CNNs trained on MNIST (from ``$SYMNAS_DATA``) on the CPU, with the width of
two convolutions, the optimizer and its learning rate (log scale) and the batch size searched.
For each seed, the same algorithm proposes trials with and without the scheduler; with Random
both arms train exactly the same configurations, so the question is only whether the scheduler
keeps the best one while it cuts the epochs. Each trial trains at most ``--epochs`` epochs and
reports its validation accuracy after each (``sn.train.Trainer`` does this); a trial the scheduler
stops ends there. Printed per seed and arm: the best validation accuracy reached (any trial), the
test accuracy of that trial, and the training epochs spent in total.

Usage::

    SYMNAS_DATA=/work/shared/data python benchmarks/multi_fidelity.py                     # ASHA, 3 seeds
    python benchmarks/multi_fidelity.py --scheduler hyperband --trials 27 --seeds 0 1 2 3 4
    python benchmarks/multi_fidelity.py --trials 4 --epochs 3 --seeds 0 --train-size 500   # smoke test
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import pyglove as pg

import symnas as sn


def make_space(epochs: int, train_size: int, eval_size: int):
    conv = sn.nn.Sequential([sn.nn.ConvBN(pg.oneof([4, 8, 16]), 3, stride=2),
                             sn.nn.ConvBN(pg.oneof([8, 16, 32]), 3, stride=2), sn.nn.Flatten()])
    return sn.train.Trainer(
        model=conv,
        optimizer=pg.oneof([sn.train.SGD(pg.floatv(1e-3, 0.5, scale="log"), momentum=0.9),
                            sn.train.Adam(pg.floatv(1e-4, 0.1, scale="log"))]),
        batch_size=pg.oneof([32, 128]),
        data=sn.data.MNIST(), epochs=epochs, train_size=train_size, validation_size=5000,
        eval_size=eval_size, device="cpu")


def make_algorithm(name: str, seed: int):
    if name == "random":
        return sn.algorithms.Random(seed=seed)
    if name == "evolution":
        return sn.algorithms.RegularizedEvolution(population_size=10, tournament_size=3, seed=seed)
    return sn.algorithms.Bayesian(seed=seed, n_startup_trials=8)


def make_scheduler(name: str, epochs: int, eta: int):
    if name == "asha":
        return sn.schedulers.ASHA(min_resource=1, max_resource=epochs, reduction_factor=eta)
    return sn.schedulers.Hyperband(min_resource=1, max_resource=epochs, reduction_factor=eta)


def run_arm(space, algorithm, scheduler, trials: int, storage: str, name: str) -> dict:
    start = time.time()
    study = sn.search(space, None, algorithm, num_trials=trials, storage=storage, name=name,
                      objectives="accuracy", progress=False, scheduler=scheduler)
    completed = study.completed
    best = max(completed, key=lambda r: r.metrics["accuracy"])
    return {"best": best.metrics["accuracy"], "test": best.metrics.get("test_accuracy", float("nan")),
            # every report is one epoch trained, also in trials that failed (diverged) later
            "best_epochs": best.metrics["epochs"], "epochs": sum(len(r.measurements) for r in study.records),
            "stopped": sum(r.metrics["epochs"] < space.epochs for r in completed),
            "failed": len(study.records) - len(completed), "time_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", choices=("asha", "hyperband"), default="asha")
    parser.add_argument("--algorithm", choices=("random", "evolution", "bayesian"), default="random")
    parser.add_argument("--trials", type=int, default=27, help="trials per search")
    parser.add_argument("--epochs", type=int, default=9, help="epochs a trial trains at most")
    parser.add_argument("--eta", type=int, default=3, help="the scheduler's reduction factor")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=4000, help="MNIST training images per epoch")
    parser.add_argument("--eval-size", type=int, default=2000, help="validation and test images")
    parser.add_argument("--storage", default=None, help="SQLite study file (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if not os.environ.get("SYMNAS_DATA"):
        parser.error("set SYMNAS_DATA to the folder holding mnist/mnist.npz")
    if args.trials < 1 or args.epochs < 2:
        parser.error("--trials must be >= 1 and --epochs >= 2 (a scheduler needs a rung below the last epoch)")
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    space = make_space(args.epochs, args.train_size, args.eval_size)
    folder = tempfile.mkdtemp(prefix="multi_fidelity_")
    storage = args.storage or os.path.join(folder, "runs.db")
    print(f"MNIST, {args.train_size} training / {args.eval_size} validation + test images, CPU; "
          f"{args.algorithm}, {args.trials} trials of at most {args.epochs} epochs; "
          f"{args.scheduler} (min 1, max {args.epochs}, eta {args.eta}); {args.threads} torch thread(s); "
          f"study file {storage}", flush=True)
    header = f"{'seed':>4}  {'arm':<10} {'best val acc':>12} {'its test acc':>12} {'epochs':>7} " \
             f"{'stopped':>7} {'time s':>7}"
    print(header)
    rows = {"full": [], args.scheduler: []}
    for seed in args.seeds:
        for arm in ("full", args.scheduler):
            scheduler = None if arm == "full" else make_scheduler(arm, args.epochs, args.eta)
            row = run_arm(space, make_algorithm(args.algorithm, seed), scheduler, args.trials, storage,
                          f"{args.algorithm}-{arm}-seed{seed}")
            rows[arm].append(row)
            print(f"{seed:>4}  {arm:<10} {row['best']:>12.4f} {row['test']:>12.4f} {row['epochs']:>7d} "
                  f"{row['stopped']:>7d} {row['time_s']:>7.1f}", flush=True)
    print()
    full, cut = rows["full"], rows[args.scheduler]

    def mean_sd(values):
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    for arm, arm_rows in (("full", full), (args.scheduler, cut)):
        best_m, best_s = mean_sd([r["best"] for r in arm_rows])
        test_m, test_s = mean_sd([r["test"] for r in arm_rows])
        print(f"{arm:<10} best val acc {best_m:.4f} ± {best_s:.4f}   its test acc {test_m:.4f} ± {test_s:.4f}   "
              f"epochs {sum(r['epochs'] for r in arm_rows)}")
    ratio = sum(r["epochs"] for r in cut) / sum(r["epochs"] for r in full)
    gaps = [f["best"] - c["best"] for f, c in zip(full, cut)]
    print(f"{args.scheduler} spent {ratio:.1%} of the epochs; best val acc lower by "
          f"{statistics.mean(gaps):+.4f} on average (per seed: {', '.join(f'{g:+.4f}' for g in gaps)})")


if __name__ == "__main__":
    main()
