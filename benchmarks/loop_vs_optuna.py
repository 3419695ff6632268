"""Per-trial cost of the ``sn.search`` loop beside Optuna's own ``study.optimize`` loop, and beside
other commits of symnas, on the 6-choice NAS-Bench-201 space (6 categorical decisions of 5 ops).

Each row is one loop with a constant objective, so everything timed is the loop: for symnas,
propose, DNA to JSON, materialise the ``NASBench201`` object, record its JSON, evaluate, feed
back, record the trial; for Optuna, ask, the six ``suggest_categorical`` calls, tell. The figure
is the median time between successive objective calls. Every (code, loop) runs in a fresh
process, and the rounds are interleaved, so a change of machine load hits all rows alike; the
table gives the median of the rounds' medians and their range.

``--baseline COMMIT`` (repeatable) measures that commit's symnas too (its code taken with
``git archive``, as ``benchmarks/resume_overhead.py`` does; nothing is installed).

Targets (issue 34): in memory, materialisation included, no slower than Optuna's in-memory loop;
with storage, >= 20x cheaper than Optuna's SQLite storage.

Run:  flock /work/bench.lock python benchmarks/loop_vs_optuna.py --baseline bcd7610 --rounds 3
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
LOOPS = ("symnas, in memory", "symnas, SQLite", "optuna, in memory", "optuna, SQLite")


def symnas_loop(trials: int, sqlite: bool) -> dict:
    import symnas as sn  # pylint: disable=import-outside-toplevel
    stamps = []

    def evaluate(_):
        stamps.append(time.perf_counter())
        return float(len(stamps) % 7)

    with tempfile.TemporaryDirectory() as folder:
        storage = os.path.join(folder, "loop.db") if sqlite else None
        sn.search(sn.spaces.NASBench201(), evaluate, sn.algorithms.Random(seed=0), num_trials=trials,
                  storage=storage, progress=False)
    deltas = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"median_ms": statistics.median(deltas) * 1e3, "code": os.path.dirname(sn.__file__)}


def optuna_loop(trials: int, sqlite: bool) -> dict:
    import optuna  # pylint: disable=import-outside-toplevel
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stamps = []

    def objective(trial):
        [trial.suggest_categorical(f"edge{i}", NB201_OPS) for i in range(6)]  # pylint: disable=expression-not-assigned
        stamps.append(time.perf_counter())
        return float(len(stamps) % 7)

    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{os.path.join(folder, 'optuna.db')}" if sqlite else None
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                    storage=storage)
        study.optimize(objective, n_trials=trials)
    deltas = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"median_ms": statistics.median(deltas) * 1e3, "code": f"optuna {optuna.__version__}"}


def baseline_tree(commit: str, folder: pathlib.Path) -> pathlib.Path:
    """``commit``'s symnas laid out as an importable package (algorithms/ and spaces/ inside it)."""
    import shutil  # pylint: disable=import-outside-toplevel
    source = folder / f"src-{commit}"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    package = folder / f"pkg-{commit}"
    shutil.copytree(source / "symnas", package / "symnas")
    for sub in ("algorithms", "spaces"):
        shutil.copytree(source / sub, package / "symnas" / sub)
    return package


def run_one(loop: str, trials: int, pythonpath=None) -> dict:
    env = dict(os.environ)
    command = [sys.executable]
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
        command.append("-P")   # the other commit's package first, not this checkout's
    command += [os.path.abspath(__file__), "--measure", loop, "--trials", str(trials)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2000, help="trials per loop (in memory and symnas SQLite)")
    parser.add_argument("--optuna-sqlite-trials", type=int, default=300,
                        help="trials of Optuna's SQLite loop (tens of ms each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", action="append", default=[], help="a commit to measure beside this checkout")
    parser.add_argument("--measure", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trials < 3 or args.rounds < 1:
        parser.error("--trials must be >= 3 and --rounds >= 1")
    if args.measure:
        sqlite = args.measure.endswith("SQLite")
        row = symnas_loop(args.trials, sqlite) if args.measure.startswith("symnas") else \
            optuna_loop(args.trials, sqlite)
        print(json.dumps(row), flush=True)
        return
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# sn.search loop vs Optuna's loop, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; load average {load}")
    print(f"# NAS-Bench-201 space (6 x 5 ops), Random, constant objective; {args.trials} trials "
          f"(Optuna SQLite {args.optuna_sqlite_trials}); {args.rounds} interleaved rounds, each in a fresh process\n")
    with tempfile.TemporaryDirectory() as folder:
        variants = [("this checkout", None)] + [(c, baseline_tree(c, pathlib.Path(folder))) for c in args.baseline]
        rows = [(label, path, loop) for label, path in variants for loop in LOOPS[:2]] + \
            [("optuna", None, loop) for loop in LOOPS[2:]]
        results = {(label, loop): [] for label, _, loop in rows}
        for _ in range(args.rounds):
            for label, path, loop in rows:
                trials = args.optuna_sqlite_trials if loop == "optuna, SQLite" else args.trials
                results[(label, loop)].append(run_one(loop, trials, path)["median_ms"])
    optuna_memory = statistics.median(results[("optuna", "optuna, in memory")])
    optuna_sqlite = statistics.median(results[("optuna", "optuna, SQLite")])
    print("| code | loop | ms per trial (median of rounds) | range | vs Optuna in memory | Optuna SQLite / this |")
    print("|---|---|---|---|---|---|")
    for (label, loop), values in results.items():
        mid = statistics.median(values)
        print(f"| {label} | {loop} | {mid:.3f} | {min(values):.3f}-{max(values):.3f} | "
              f"{mid / optuna_memory:.2f}x | {optuna_sqlite / mid:.0f}x |")
    print(f"\n# load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
