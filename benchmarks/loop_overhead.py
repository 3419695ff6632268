"""Overhead of the search loop itself, beside PyGlove's own loop, measured in the same run.

For zero-cost proxies and tabular benchmarks the loop is the bottleneck. This script times,
per trial, over N trials on (a) the NAS-Bench-201 space (6 decisions x 5 ops) and (b) a
30-decision mixed space with log floats, nested choices and manyof:

- PyGlove ``pg.geno.Random`` propose+feedback and a plain ``pg.sample`` loop (the baselines);
- each symnas algorithm's propose+feedback;
- the whole ``sn.search`` loop (propose, materialise, evaluate a constant objective, feedback,
  record) in memory and with SQLite (Bayesian at ``--bayesian-trials``);
- Optuna's own ``study.optimize`` loop on the same spaces written define-by-run, in memory and with
  its SQLite storage, Random and TPE (TPE at ``--bayesian-trials``): what a user compares the loop with.

Targets: propose+feedback <= 1 ms median for Random/Evolution/Reinforce, <= 50 ms for Bayesian at
500 trials; the whole loop <= 2 ms per trial in memory and <= 5 ms with SQLite; in memory no slower
than Optuna's in-memory loop, with storage >= 20x cheaper than Optuna's SQLite storage.

``--versus-optuna`` instead times the whole loop on the NAS-Bench-201 space (Random) against
Optuna's, each (code, loop) in a fresh process, in interleaved rounds (so a change of machine load
hits all rows alike), giving the median of the rounds' medians and their range; ``--baseline
COMMIT`` (repeatable) times that commit's ``sn.search`` too (its code taken with ``git archive``;
nothing is installed).

Run:  python benchmarks/loop_overhead.py [--trials 1000] [--quick] [--profile NAS-Bench-201]
      flock /work/bench.lock python benchmarks/loop_overhead.py --versus-optuna --baseline bcd7610 \
          --rounds 3 --trials 2000 --optuna-sqlite-trials 100
"""
import argparse
import datetime
import json
import os
import pathlib
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


NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def nasbench201_objective(trial):
    """The NAS-Bench-201 space written for Optuna: 6 categorical decisions of 5 ops."""
    return [trial.suggest_categorical(f"edge{i}", NB201_OPS) for i in range(6)]


def mixed_objective(trial):
    """``mixed_space()`` written for Optuna (a manyof is one categorical over the ordered pairs of
    distinct candidates, as ``pg.manyof(2, ...)`` draws them; a conditional choice is suggested
    only on its path)."""
    pairs = [f"{a},{b}" for a in "abcd" for b in "abcd" if a != b]
    blocks = []
    for i in range(4):
        kind = trial.suggest_categorical(f"blocks{i}", ["mb", "plain"])
        blocks.append({"kind": kind, "expand": trial.suggest_categorical(f"expand{i}", [3, 6])} if kind == "mb"
                      else {"kind": kind})
    return dict(
        ops=[trial.suggest_categorical(f"ops{i}", ["conv3", "conv5", "sep3", "pool", "skip"]) for i in range(10)],
        lrs=[trial.suggest_float(f"lrs{i}", 1e-5, 1e-1, log=True) for i in range(4)],
        ratios=[trial.suggest_float(f"ratios{i}", 0.0, 1.0) for i in range(4)],
        sets=[trial.suggest_categorical(f"sets{i}", pairs).split(",") for i in range(4)],
        blocks=blocks,
        widths=[trial.suggest_categorical(f"widths{i}", [16, 32, 64]) for i in range(4)])


def time_optuna_loop(objective, sampler, trials, storage):
    """Median time between successive objective calls of Optuna's own ``study.optimize`` loop
    (ask, the define-by-run suggestions, tell; with ``storage`` every step goes to SQLite)."""
    import optuna  # pylint: disable=import-outside-toplevel
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stamps = []

    def evaluate(trial):
        objective(trial)
        stamps.append(time.perf_counter())
        return float(len(stamps) % 7)

    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage)
    study.optimize(evaluate, n_trials=trials)
    deltas = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(deltas) * 1e3


def optuna_samplers():
    import optuna  # pylint: disable=import-outside-toplevel
    return {"Random": lambda: optuna.samplers.RandomSampler(seed=0),
            "TPE": lambda: optuna.samplers.TPESampler(seed=0)}


def profile_symnas_loop(space, trials, top=25):
    """cProfile of the in-memory ``sn.search`` loop (Random): the functions with the most own time,
    and the cumulative time of the loop's main stages."""
    import cProfile  # pylint: disable=import-outside-toplevel
    import io  # pylint: disable=import-outside-toplevel
    import pstats  # pylint: disable=import-outside-toplevel
    profiler = cProfile.Profile()
    profiler.enable()
    sn.search(space, lambda _: 1.0, sn.algorithms.Random(seed=0), num_trials=trials, storage=None, progress=False)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


VERSUS_LOOPS = ("symnas, in memory", "symnas, SQLite", "optuna, in memory", "optuna, SQLite")


def measure_versus_loop(loop: str, trials: int) -> float:
    """One ``--versus-optuna`` row in this process (the symnas it imports): ms per trial, median."""
    with tempfile.TemporaryDirectory() as folder:
        if loop.startswith("symnas"):
            storage = os.path.join(folder, "loop.db") if loop.endswith("SQLite") else None
            return time_symnas_loop(nasbench201_space(), sn.algorithms.Random(seed=0), trials, storage)
        import optuna  # pylint: disable=import-outside-toplevel
        storage = f"sqlite:///{os.path.join(folder, 'optuna.db')}" if loop.endswith("SQLite") else None
        return time_optuna_loop(nasbench201_objective, optuna.samplers.RandomSampler(seed=0), trials, storage)


def versus_optuna_table(args) -> None:
    """The ``--versus-optuna`` table: this checkout and ``--baseline`` commits beside Optuna."""
    from _commits import baseline_tree, run_fresh  # pylint: disable=import-outside-toplevel
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# sn.search loop vs Optuna's loop, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; load average {load}")
    print(f"# NAS-Bench-201 space (6 x 5 ops), Random, constant objective; {args.trials} trials "
          f"(Optuna SQLite {args.optuna_sqlite_trials}); {args.rounds} interleaved rounds, each in a fresh process\n")
    with tempfile.TemporaryDirectory() as folder:
        variants = [("this checkout", None)] + [(c, baseline_tree(c, pathlib.Path(folder))) for c in args.baseline]
        rows = [(label, path, loop) for label, path in variants for loop in VERSUS_LOOPS[:2]] + \
            [("optuna", None, loop) for loop in VERSUS_LOOPS[2:]]
        results = {(label, loop): [] for label, _, loop in rows}
        for _ in range(args.rounds):
            for label, path, loop in rows:
                trials = args.optuna_sqlite_trials if loop == "optuna, SQLite" else args.trials
                row, = run_fresh(__file__, ["--measure", loop, "--trials", str(trials)], path)
                results[(label, loop)].append(row["median_ms"])
    optuna_memory = statistics.median(results[("optuna", "optuna, in memory")])
    optuna_sqlite = statistics.median(results[("optuna", "optuna, SQLite")])
    print("| code | loop | ms per trial (median of rounds) | range | vs Optuna in memory | Optuna SQLite / this |")
    print("|---|---|---|---|---|---|")
    for (label, loop), values in results.items():
        mid = statistics.median(values)
        print(f"| {label} | {loop} | {mid:.3f} | {min(values):.3f}-{max(values):.3f} | "
              f"{mid / optuna_memory:.2f}x | {optuna_sqlite / mid:.0f}x |")
    print(f"\n# load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--bayesian-trials", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="100 trials, for a smoke run")
    parser.add_argument("--profile", choices=["NAS-Bench-201", "mixed-30"],
                        help="instead of the table: cProfile the in-memory sn.search loop (Random) on this space")
    parser.add_argument("--versus-optuna", action="store_true",
                        help="instead of the table: the loop against Optuna's (and --baseline commits'), fresh processes")
    parser.add_argument("--baseline", action="append", default=[],
                        help="with --versus-optuna: a commit to time beside this checkout (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="with --versus-optuna: interleaved rounds")
    parser.add_argument("--optuna-sqlite-trials", type=int, default=300,
                        help="with --versus-optuna: trials of Optuna's SQLite loop (tens of ms each)")
    parser.add_argument("--measure", choices=VERSUS_LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trials < 3 or args.rounds < 1:
        parser.error("--trials must be >= 3 and --rounds >= 1")
    if args.baseline and not args.versus_optuna:
        parser.error("--baseline goes with --versus-optuna")
    if args.measure:
        print(json.dumps({"loop": args.measure, "median_ms": measure_versus_loop(args.measure, args.trials)}))
        return
    if args.versus_optuna:
        versus_optuna_table(args)
        return
    trials = 100 if args.quick else args.trials
    bayes_trials = 50 if args.quick else args.bayesian_trials
    if args.profile:
        space = nasbench201_space() if args.profile == "NAS-Bench-201" else mixed_space()
        print(profile_symnas_loop(space, trials))
        return
    algorithms = {name: getattr(sn.algorithms, name) for name in
                  ("Random", "RegularizedEvolution", "Reinforce", "Bayesian") if hasattr(sn.algorithms, name)}
    load = os.getloadavg()
    print(f"# loop overhead, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}, pyglove {pg.__version__ if hasattr(pg, '__version__') else ''}")
    print(f"# {trials} trials (Bayesian {bayes_trials}); times are medians per trial in ms\n")
    print(f"| space | measurement | algorithm | ms/trial | target |")
    print(f"|---|---|---|---|---|")
    spaces = (("NAS-Bench-201", nasbench201_space(), nasbench201_objective),
              ("mixed-30", mixed_space(), mixed_objective))
    for space_name, space, objective in spaces:
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
            n = bayes_trials if name == "Bayesian" else trials
            print(f"| {space_name} | sn.search loop, in memory | {name} | "
                  f"{time_symnas_loop(space, cls(seed=0), n, None):.3f} | <= 2 |")
            with tempfile.TemporaryDirectory() as folder:
                print(f"| {space_name} | sn.search loop, SQLite | {name} | "
                      f"{time_symnas_loop(space, cls(seed=0), n, os.path.join(folder, 'b.db')):.3f} | <= 5 |")
        for name, sampler in optuna_samplers().items():     # Optuna's own loop (the baseline users know)
            n = bayes_trials if name == "TPE" else trials
            print(f"| {space_name} | optuna study.optimize, in memory (baseline) | {name} | "
                  f"{time_optuna_loop(objective, sampler(), n, None):.3f} | |")
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite:///{os.path.join(folder, 'o.db')}"
                print(f"| {space_name} | optuna study.optimize, SQLite (baseline) | {name} | "
                      f"{time_optuna_loop(objective, sampler(), n, url):.3f} | |")


if __name__ == "__main__":
    main()
