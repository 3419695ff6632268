"""Overhead of the search loop itself, beside PyGlove's own loop, measured in the same run.

For zero-cost proxies and tabular benchmarks the loop is the bottleneck. This script times,
per trial, over N trials on (a) the NAS-Bench-201 space (6 decisions x 5 ops) and (b) a
30-decision mixed space with log floats, nested choices and manyof:

- PyGlove ``pg.geno.Random`` propose+feedback and a plain ``pg.sample`` loop (the baselines);
- each symnas algorithm's propose+feedback;
- the whole ``sn.search`` loop (propose, materialise, evaluate a constant objective, feedback,
  record) in memory and with SQLite.

Targets (issue 2): propose+feedback <= 1 ms median for Random/Evolution/Reinforce, <= 50 ms for
Bayesian at 500 trials; the whole loop <= 2 ms per trial in memory and <= 5 ms with SQLite.

Run:  python benchmarks/loop_overhead.py [--trials 1000] [--quick]
"""
import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time

import pyglove as pg

import symnas as sn


def nasbench201_space():
    return sn.spaces.NASBench201() if hasattr(sn.spaces, "NASBench201") else pg.List(
        [pg.oneof(["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]) for _ in range(6)])


def mixed_space():
    """30 decision points: 10 categorical, 8 floats (4 log), 4 manyof, 4 conditional, 4 ints."""
    return pg.Dict(
        ops=[pg.oneof(["conv3", "conv5", "sep3", "pool", "skip"]) for _ in range(10)],
        lrs=[pg.floatv(1e-5, 1e-1, scale="log") for _ in range(4)],
        ratios=[pg.floatv(0.0, 1.0) for _ in range(4)],
        sets=[pg.manyof(2, ["a", "b", "c", "d"]) for _ in range(4)],
        blocks=[pg.oneof([pg.Dict(kind="mb", expand=pg.oneof([3, 6])), pg.Dict(kind="plain")]) for _ in range(4)],
        widths=[pg.oneof([16, 32, 64]) for _ in range(4)],
    )


def time_propose_feedback(algorithm, space, trials):
    algorithm.setup(pg.hyper.template(space).dna_spec())
    times = []
    for i in range(trials):
        start = time.perf_counter()
        dna = algorithm.propose()
        algorithm.feedback(dna, float(i % 7))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_pg_sample(space, trials):
    times, last = [], None
    for i, (_, feedback) in enumerate(pg.sample(space, pg.geno.Random(seed=0), num_examples=trials)):
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        feedback(float(i % 7))
        last = time.perf_counter() if last is None else now
    return statistics.median(times) * 1e3


def time_symnas_loop(space, algorithm, trials, storage):
    """Median time between successive evaluator calls = everything the loop does per trial."""
    stamps = []

    def evaluate(_):
        stamps.append(time.perf_counter())
        return float(len(stamps) % 7)

    sn.search(space, evaluate, algorithm, num_trials=trials, storage=storage, progress=False)
    deltas = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(deltas) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--bayesian-trials", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="100 trials, for a smoke run")
    args = parser.parse_args()
    trials = 100 if args.quick else args.trials
    bayes_trials = 50 if args.quick else args.bayesian_trials
    algorithms = {name: getattr(sn.algorithms, name) for name in
                  ("Random", "RegularizedEvolution", "Reinforce", "Bayesian") if hasattr(sn.algorithms, name)}
    print(f"# loop overhead, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}, pyglove {pg.__version__ if hasattr(pg, '__version__') else ''}")
    print(f"# {trials} trials (Bayesian {bayes_trials}); times are medians per trial in ms\n")
    print(f"| space | measurement | algorithm | ms/trial | target |")
    print(f"|---|---|---|---|---|")
    for space_name, space in (("NAS-Bench-201", nasbench201_space()), ("mixed-30", mixed_space())):
        print(f"| {space_name} | propose+feedback (baseline) | pg.geno.Random | "
              f"{time_propose_feedback(pg.geno.Random(seed=0), space, trials):.3f} | |")
        print(f"| {space_name} | pg.sample loop (baseline) | pg.geno.Random | "
              f"{time_pg_sample(space, trials):.3f} | |")
        for name, cls in algorithms.items():
            n = bayes_trials if name == "Bayesian" else trials
            target = "<= 50" if name == "Bayesian" else "<= 1"
            print(f"| {space_name} | propose+feedback | {name} | "
                  f"{time_propose_feedback(cls(seed=0), space, n):.3f} | {target} |")
        for name, cls in algorithms.items():
            if name == "Bayesian":
                continue
            print(f"| {space_name} | sn.search loop, in memory | {name} | "
                  f"{time_symnas_loop(space, cls(seed=0), trials, None):.3f} | <= 2 |")
            with tempfile.TemporaryDirectory() as folder:
                print(f"| {space_name} | sn.search loop, SQLite | {name} | "
                      f"{time_symnas_loop(space, cls(seed=0), trials, os.path.join(folder, 'b.db')):.3f} | <= 5 |")


if __name__ == "__main__":
    main()
