"""Resume time and per-trial overhead of ``sn.search`` at 20,000 trials, beside another commit's.

For each algorithm it records a study of N trials in a SQLite file (a constant objective, so
everything timed is the loop: propose, materialise, record, feed back), then times:

- per trial: the median time between successive evaluator calls, and the mean (wall / N);
- resume: running the same ``sn.search`` call again on the finished study (it opens the file,
  rebuilds the algorithm and returns);
- ``sn.Study.load`` + ``len(study)`` + ``study.best``.

``--baseline COMMIT`` measures that commit's code too, in a fresh process per commit, in the same
run (the code is taken with ``git archive`` into a temporary folder; nothing is installed).

Run:  flock /work/bench.lock python benchmarks/resume_overhead.py --trials 20000 --baseline 6f80b97
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

ALGORITHMS = ("Random", "RegularizedEvolution")


def space():
    import pyglove as pg
    return pg.Dict(ops=[pg.oneof(["conv3", "conv5", "sep3", "pool", "skip"]) for _ in range(8)],
                   lr=pg.floatv(1e-4, 1e-1, scale="log"), width=pg.oneof([16, 32, 64]))


def measure(trials: int, algorithm: str, folder: str) -> dict:
    """Times one algorithm with the symnas this interpreter imports; returns the figures."""
    import symnas as sn
    stamps = []

    def evaluate(value):
        stamps.append(time.perf_counter())
        return float(len(stamps) % 7)

    db = os.path.join(folder, f"{algorithm}.db")
    start = time.perf_counter()
    sn.search(space(), evaluate, getattr(sn.algorithms, algorithm)(seed=0), num_trials=trials, storage=db,
              name="bench", progress=False)
    wall = time.perf_counter() - start
    deltas = [b - a for a, b in zip(stamps, stamps[1:])]
    start = time.perf_counter()
    sn.search(space(), evaluate, getattr(sn.algorithms, algorithm)(seed=0), num_trials=trials, storage=db,
              name="bench", progress=False)
    resume = time.perf_counter() - start
    start = time.perf_counter()
    study = sn.Study.load(db, "bench")
    count, best = len(study), study.best
    read = time.perf_counter() - start
    assert count == trials and best is not None
    return {"symnas": os.path.dirname(sn.__file__), "algorithm": algorithm, "trials": trials,
            "median_ms": statistics.median(deltas) * 1e3, "mean_ms": wall / trials * 1e3,
            "resume_s": resume, "load_len_best_s": read}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--baseline", default=None, help="a commit to measure beside this checkout")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        with tempfile.TemporaryDirectory() as folder:
            for algorithm in args.algorithms:
                print(json.dumps(measure(args.trials, algorithm, folder)), flush=True)
        return
    print(f"# resume overhead, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {args.trials} trials, SQLite, 10-decision space, constant objective\n")
    print("| code | algorithm | per trial, median (ms) | per trial, mean (ms) | resume (s) | "
          "Study.load + len + best (s) |")
    print("|---|---|---|---|---|---|")
    from _commits import baseline_tree, run_fresh  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as folder:
        package = baseline_tree(args.baseline, pathlib.Path(folder)) if args.baseline else None
        for algorithm in args.algorithms:
            variants = [("this checkout", None)] + ([(args.baseline, package)] if package else [])
            for label, pythonpath in variants:
                row, = run_fresh(__file__, ["--measure", "--trials", str(args.trials), "--algorithms", algorithm],
                                 pythonpath)
                print(f"| {label} | {algorithm} | {row['median_ms']:.3f} | {row['mean_ms']:.3f} | "
                      f"{row['resume_s']:.2f} | {row['load_len_best_s']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
