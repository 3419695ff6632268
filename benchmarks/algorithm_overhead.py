"""Per-trial overhead of the search algorithms: median time of ``propose()`` + ``feedback()``.

Measured on the 6-decision NAS-Bench-201 space and on a 30-decision mixed space (choices, log and
linear floats, a distinct manyof, a conditional branch), beside PyGlove's own ``pg.geno.Random``
and ``pg.evolution.regularized_evolution`` measured in the same run. The objective is computed
outside the timed region. Targets: Random, RegularizedEvolution, Reinforce <= 1 ms median;
Bayesian (TPE) <= 50 ms median over 500 trials.

    python benchmarks/algorithm_overhead.py            # 1000 trials (Bayesian 500)
    python benchmarks/algorithm_overhead.py --quick    # 200 trials (Bayesian 100)
"""
import argparse
import datetime
import os
import platform
import statistics
import time

import pyglove as pg

import symnas as sn


def mixed_space():
    """30 decision points, 6 of them log-scale floats."""
    return pg.Dict(
        layers=[pg.oneof(range(4)) for _ in range(18)],
        lrs=[pg.floatv(1e-5, 1e-1, scale="log") for _ in range(4)],
        momentum=pg.floatv(0.0, 0.99),
        picks=pg.manyof(3, list(range(6)), distinct=True, sorted=True),
        opt=pg.oneof([pg.Dict(kind="sgd", nesterov=pg.oneof([True, False])),
                      pg.Dict(kind="adam", beta=pg.floatv(0.8, 0.999),
                              eps=pg.floatv(1e-9, 1e-6, scale="log"))]),
    )


def algorithms():
    return {
        "symnas Random": lambda: sn.algorithms.Random(seed=0),
        "symnas RegularizedEvolution": lambda: sn.algorithms.RegularizedEvolution(seed=0),
        "symnas Reinforce": lambda: sn.algorithms.Reinforce(seed=0),
        "symnas Bayesian (TPE)": lambda: sn.algorithms.Bayesian(seed=0),
        "pyglove pg.geno.Random": lambda: pg.geno.Random(seed=0),
        "pyglove regularized_evolution": lambda: pg.evolution.regularized_evolution(
            population_size=10, tournament_size=3, seed=0),
    }


def reward_of(dna) -> float:
    return float(sum(v for v in dna.to_numbers() if isinstance(v, (int, float))))


def time_trials(make, spec, trials: int):
    algo = make()
    algo.setup(spec)
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        dna = algo.propose()
        mid = time.perf_counter()
        reward = reward_of(dna)
        resume = time.perf_counter()
        algo.feedback(dna, reward)
        times.append((mid - start) + (time.perf_counter() - resume))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--bayesian-trials", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="200 trials (Bayesian 100)")
    args = parser.parse_args()
    trials = 200 if args.quick else args.trials
    bayes_trials = 100 if args.quick else args.bayesian_trials

    spaces = {"NB201 (6 choices)": sn.spaces.NASBench201(),
              "mixed (30 decisions)": mixed_space()}
    print("# median propose+feedback per trial (ms); p90 in brackets")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, pyglove {pg.__version__}")
    header = f"{'algorithm':<32}{'trials':>7}" + "".join(f"{name:>24}" for name in spaces)
    print(header)
    for name, make in algorithms().items():
        n = bayes_trials if "Bayesian" in name else trials
        cells = []
        for space in spaces.values():
            times = sorted(time_trials(make, pg.dna_spec(space), n))
            cells.append(f"{statistics.median(times) * 1e3:.3f} [{times[int(0.9 * len(times))] * 1e3:.2f}]")
        print(f"{name:<32}{n:>7}" + "".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
