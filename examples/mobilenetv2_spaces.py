"""From a static MobileNetV2 to search space S1, and switching search algorithms (seed 004's table).

Prints how many lines turn the static network into S1 (counted with difflib on the two
functions below), then runs a few trials of S1 with Random, Bayesian and Reinforce; each
switch changes exactly one line (the ``algorithm=`` line, shown in ALGORITHM_LINES).

    python examples/mobilenetv2_spaces.py                 # 3 trials per algorithm, synthetic data
    python examples/mobilenetv2_spaces.py --trials 20 --data cifar10 --epochs 1
"""
import argparse
import difflib
import inspect

import pyglove as pg

import symnas as sn


def static_mobilenetv2():
    S = sn.nn.InvertedBottleneckStage
    return sn.nn.MobileNetV2(stages=[
        S(16, kernels=[3], expansions=[1]),
        S(24, kernels=[3, 3], expansions=[6, 6]),
        S(32, kernels=[3, 3, 3], expansions=[6, 6, 6], stride=2),
        S(64, kernels=[3, 3, 3, 3], expansions=[6, 6, 6, 6], stride=2),
        S(96, kernels=[3, 3, 3], expansions=[6, 6, 6]),
        S(160, kernels=[3, 3, 3], expansions=[6, 6, 6], stride=2),
        S(320, kernels=[3], expansions=[6]),
    ])


def mobilenetv2_s1():
    S = sn.nn.InvertedBottleneckStage
    K = lambda n: [pg.oneof([3, 5, 7]) for _ in range(n)]  # noqa: E731
    E = lambda n: [pg.oneof([3, 6]) for _ in range(n)]  # noqa: E731
    return sn.nn.MobileNetV2(stages=[
        S(16, kernels=K(1), expansions=E(1)),
        S(24, kernels=K(2), expansions=E(2)),
        S(32, kernels=K(3), expansions=E(3), stride=2),
        S(64, kernels=K(4), expansions=E(4), stride=2),
        S(96, kernels=K(3), expansions=E(3)),
        S(160, kernels=K(3), expansions=E(3), stride=2),
        S(320, kernels=K(1), expansions=E(1)),
    ])


ALGORITHM_LINES = {
    "Random": "algorithm=sn.algorithms.Random(seed=0),",
    "Bayesian": "algorithm=sn.algorithms.Bayesian(seed=0),",
    "Reinforce": "algorithm=sn.algorithms.Reinforce(seed=0),",
}


def added_lines(before, after) -> int:
    """Lines of ``after``'s body that are new or changed with respect to ``before``'s body."""
    body = lambda f: inspect.getsource(f).splitlines()[1:]  # noqa: E731
    return sum(1 for line in difflib.ndiff(body(before), body(after)) if line.startswith("+ "))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--data", choices=["synthetic", "cifar10"], default="synthetic")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier for CPU runs")
    args = parser.parse_args(argv)

    static, s1 = static_mobilenetv2(), mobilenetv2_s1()
    assert static == sn.nn.mobilenetv2(), "the static network above is the library's MobileNetV2"
    assert pg.eq(s1, sn.spaces.mobilenetv2_s1()), "and S1 equals sn.spaces.mobilenetv2_s1()"
    n_added = added_lines(static_mobilenetv2, mobilenetv2_s1)
    print(f"static MobileNetV2 -> S1: {n_added} added/changed lines "
          f"({len(pg.dna_spec(s1).decision_points)} decisions); seed 004 budget: <= 23")
    print("switching algorithms: 1 line each:")
    for line in ALGORITHM_LINES.values():
        print(f"    {line}")

    # The same S1, scaled down for a CPU run (the library builds it from the static network).
    space = sn.train.Trainer(
        model=sn.spaces.mobilenetv2_s1(sn.nn.mobilenetv2(args.width)),
        data=(sn.data.CIFAR10() if args.data == "cifar10" else
              sn.data.Synthetic(image_shape=(3, 8, 8), train_size=64, test_size=64)),
        optimizer=sn.train.SGD(0.05), epochs=args.epochs, train_size=2000, eval_size=1000)
    for name in ALGORITHM_LINES:
        study = sn.search(
            space,
            algorithm=getattr(sn.algorithms, name)(seed=0),
            num_trials=args.trials, storage=None, progress=False, name=f"s1-{name}")
        print(f"{name:9s}: best accuracy {study.best_trial.metrics['accuracy']:.3f} "
              f"over {len(study.completed)} trials")
    return n_added


if __name__ == "__main__":
    main()
