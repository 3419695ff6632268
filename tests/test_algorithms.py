"""Every symnas algorithm over the same set of spaces: validity, seeding, recovery, quality, bad input."""
import math
import statistics

import pyglove as pg
import pytest

import symnas as sn
from symnas.algorithms._decisions import DecisionSpace, FloatDecision


def _mixed_space():
    """30 decision points: choices, log/linear floats, a distinct manyof and a conditional branch."""
    return pg.Dict(
        layers=[pg.oneof(range(4)) for _ in range(18)],
        lrs=[pg.floatv(1e-5, 1e-1, scale="log") for _ in range(4)],
        momentum=pg.floatv(0.0, 0.99),
        picks=pg.manyof(3, list(range(6)), distinct=True, sorted=True),
        opt=pg.oneof([pg.Dict(kind="sgd", nesterov=pg.oneof([True, False])),
                      pg.Dict(kind="adam", beta=pg.floatv(0.8, 0.999), eps=pg.floatv(1e-9, 1e-6,
                                                                                   scale="log"))]),
    )


SPACES = {
    "flat": lambda: pg.List([pg.oneof(range(5)) for _ in range(6)]),
    "nested": lambda: pg.Dict(a=pg.oneof([
        1,
        pg.Dict(b=pg.oneof([3, 4]), c=pg.oneof([pg.Dict(d=pg.oneof([5, 6, 7])), 8])),
        pg.Dict(e=pg.floatv(0.1, 1.0, scale="log"))])),
    "manyof": lambda: pg.Dict(m=pg.manyof(3, list(range(6)), distinct=True, sorted=True),
                              n=pg.manyof(2, ["x", "y", "z"], distinct=False),
                              o=pg.manyof(2, [1, pg.Dict(q=pg.oneof([2, 3]))], distinct=False)),
    "logfloat": lambda: pg.Dict(lr=pg.floatv(1e-6, 1e-1, scale="log"), wd=pg.floatv(0.0, 1.0),
                                t=pg.floatv(0.1, 1.0, scale="rlog")),
    "mixed30": _mixed_space,
}

ALGORITHMS = {
    "random": lambda seed: sn.algorithms.Random(seed=seed),
    "evolution": lambda seed: sn.algorithms.RegularizedEvolution(population_size=8, tournament_size=3,
                                                                 seed=seed),
    "reinforce": lambda seed: sn.algorithms.Reinforce(seed=seed),
    "bayesian": lambda seed: sn.algorithms.Bayesian(seed=seed),
    "nsga2": lambda seed: sn.algorithms.NSGA2(num_objectives=2, population_size=8, seed=seed),
}
EXACT_RECOVERY = ["random", "evolution", "reinforce"]


def _score(decisions: DecisionSpace, values) -> float:
    """A separable synthetic objective: each active decision adds its position in [0, 1]
    (choice index / (n - 1), a float's place in its own scale)."""
    total = 0.0
    for dec in decisions.decisions:
        v = values[dec.index]
        if v is None:
            continue
        if isinstance(dec, FloatDecision):
            total += dec.to_unit(v)
        elif dec.num_candidates > 1:
            total += v / (dec.num_candidates - 1)
    return total


def _run(algo, space, n, materialize_first=0):
    spec = pg.dna_spec(space)
    decisions = DecisionSpace(spec)
    algo.setup(spec)
    dnas, rewards = [], []
    for i in range(n):
        dna = algo.propose()
        if i < materialize_first:
            pg.materialize(space, dna)
        r = _score(decisions, decisions.decode(dna))
        reward = (r, -r / 2.0 + (i % 3)) if algo.multi_objective else r
        algo.feedback(dna, reward)
        dnas.append(dna)
        rewards.append(reward)
    return spec, dnas, rewards


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("algo_name", ALGORITHMS)
def test_every_proposal_is_valid_and_decodes_to_its_assignment(algo_name, space_name):
    space = SPACES[space_name]()
    spec, dnas, _ = _run(ALGORITHMS[algo_name](0), space, 30, materialize_first=3)
    decisions = DecisionSpace(spec)
    for dna in dnas:
        spec.validate(dna)
        values = decisions.decode(dna)
        assert decisions.assemble(values, None, None)[1] == dna


@pytest.mark.parametrize("space_name", ["nested", "manyof", "mixed30"])
@pytest.mark.parametrize("algo_name", ALGORITHMS)
def test_same_seed_gives_same_proposals(algo_name, space_name):
    _, first, _ = _run(ALGORITHMS[algo_name](3), SPACES[space_name](), 25)
    _, second, _ = _run(ALGORITHMS[algo_name](3), SPACES[space_name](), 25)
    assert first == second
    _, other, _ = _run(ALGORITHMS[algo_name](4), SPACES[space_name](), 25)
    assert other != first


@pytest.mark.parametrize("space_name", ["flat", "nested", "manyof", "mixed30"])
@pytest.mark.parametrize("algo_name", EXACT_RECOVERY)
def test_recovered_instance_proposes_what_an_uninterrupted_one_would(algo_name, space_name):
    space = SPACES[space_name]()
    _, dnas, rewards = _run(ALGORITHMS[algo_name](7), space, 40)
    resumed = ALGORITHMS[algo_name](7)
    resumed.setup(pg.dna_spec(space))
    k = 23
    # History as storage gives it back: DNA objects rebuilt from JSON, not the proposed ones.
    resumed.recover([(pg.from_json(d.to_json()), r) for d, r in zip(dnas[:k], rewards[:k])])
    assert resumed.num_proposals == k and resumed.num_feedbacks == k
    for dna, reward in zip(dnas[k:], rewards[k:]):
        proposed = resumed.propose()
        assert proposed == dna
        resumed.feedback(proposed, reward)


@pytest.mark.parametrize("algo_name", ["bayesian", "nsga2"])
def test_optuna_algorithms_recover_history_into_their_study(algo_name):
    space = SPACES["mixed30"]()
    _, dnas, rewards = _run(ALGORITHMS[algo_name](1), space, 15)
    resumed = ALGORITHMS[algo_name](1)
    spec = pg.dna_spec(space)
    resumed.setup(spec)
    resumed.recover(list(zip(dnas, rewards)) + [(dnas[0], None)])
    assert len(resumed._study.trials) == 15
    for _ in range(5):
        dna = resumed.propose()
        spec.validate(dna)
        resumed.feedback(dna, (1.0, 2.0) if resumed.multi_objective else 1.0)


@pytest.mark.parametrize("algo_name", ["evolution", "reinforce", "bayesian"])
def test_beats_random_on_a_separable_objective(algo_name):
    space = SPACES["mixed30"]()
    means = {}
    for name in ("random", algo_name):
        runs = [statistics.mean(_run(ALGORITHMS[name](seed), space, 150)[2]) for seed in (0, 1)]
        means[name] = statistics.mean(runs)
    assert means[algo_name] > means["random"] + 1.0, means


def _hypervolume(points, ref):
    """Area dominated by 2-D points (both objectives minimised) up to the reference point."""
    front = sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1])
    area, best_y = 0.0, ref[1]
    for x, y in front:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def test_nsga2_finds_a_better_pareto_front_than_random():
    space = pg.List([pg.oneof(range(10)) for _ in range(4)])

    def zdt1(x):   # minimise both; the front needs x[1:] == 0
        f1 = x[0] / 9.0
        g = 1.0 + 9.0 * sum(x[1:]) / 27.0
        return f1, g * (1.0 - math.sqrt(f1 / g))

    def hv(algo):
        algo.setup(pg.dna_spec(space))
        points = []
        for _ in range(150):
            dna = algo.propose()
            f = zdt1(dna.to_numbers())
            algo.feedback(dna, (-f[0], -f[1]) if algo.multi_objective else -f[0] - f[1])
            points.append(f)
        return _hypervolume(points, (1.1, 11.0))

    for seed in (0, 1):
        assert hv(sn.algorithms.NSGA2(population_size=20, seed=seed)) > \
            hv(sn.algorithms.Random(seed=seed))


def test_nsga2_takes_objective_count_from_first_feedback_and_is_multi_objective():
    algo = sn.algorithms.NSGA2(population_size=4, seed=0)
    assert algo.multi_objective
    algo.setup(pg.dna_spec(SPACES["flat"]()))
    for i in range(10):
        algo.feedback(algo.propose(), (float(i), 1.0, -1.0))
    with pytest.raises(ValueError, match="expected 3 objective value.*got 2"):
        algo.feedback(algo.propose(), (1.0, 2.0))


def test_random_log_float_is_uniform_in_log_space():
    space = pg.Dict(lr=pg.floatv(1e-6, 1e-1, scale="log"))
    _, dnas, _ = _run(sn.algorithms.Random(seed=0), space, 2000)
    median = statistics.median(float(d.value) for d in dnas)
    assert all(1e-6 <= float(d.value) <= 1e-1 for d in dnas)
    geometric_mean = math.sqrt(1e-6 * 1e-1)
    assert geometric_mean / 1.5 < median < geometric_mean * 1.5
    # A linear-scale sampler would put the median near the arithmetic mean, 0.05.
    linear = pg.Dict(lr=pg.floatv(1e-6, 1e-1))
    _, dnas, _ = _run(sn.algorithms.Random(seed=0), linear, 2000)
    assert statistics.median(float(d.value) for d in dnas) > 0.03


def test_every_algorithm_works_with_plain_pg_sample():
    space = SPACES["nested"]()
    for name, make in ALGORITHMS.items():
        if name == "nsga2":
            continue
        seen = 0
        for value, feedback in pg.sample(space, make(0), num_examples=8):
            feedback(float(value.a == 1))
            seen += 1
        assert seen == 8, name


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("algo_name", ALGORITHMS)
def test_nan_reward_raises_value_error(algo_name):
    algo = ALGORITHMS[algo_name](0)
    algo.setup(pg.dna_spec(SPACES["flat"]()))
    dna = algo.propose()
    reward = (float("nan"), 1.0) if algo.multi_objective else float("nan")
    with pytest.raises(ValueError, match="finite"):
        algo.feedback(dna, reward)


@pytest.mark.parametrize("algo_name", ALGORITHMS)
def test_space_without_decisions_is_rejected(algo_name):
    algo = ALGORITHMS[algo_name](0)
    with pytest.raises(ValueError, match="no decision points"):
        algo.setup(pg.dna_spec(pg.Dict(a=1)))


def test_float_with_empty_range_is_rejected():
    with pytest.raises(ValueError, match="min_value .* must be smaller"):
        sn.algorithms.Random(seed=0).setup(pg.dna_spec(pg.Dict(x=pg.floatv(1.0, 1.0))))


def test_log_float_with_non_positive_min_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        pg.dna_spec(pg.Dict(x=pg.floatv(0.0, 1.0, scale="log")))
    spec = pg.geno.Space([pg.geno.floatv(0.5, 1.0, scale="log")])
    spec.elements[0].rebind(min_value=-1.0, skip_notification=True)
    with pytest.raises(ValueError, match="positive min_value"):
        DecisionSpace(spec)


def test_empty_oneof_is_rejected():
    # PyGlove already refuses these when the space is written; nothing empty reaches an algorithm.
    with pytest.raises(ValueError, match="0 candidates"):
        pg.oneof([])
    with pytest.raises(ValueError, match="0 candidates"):
        pg.manyof(2, [])


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="learnig_rate"):
        sn.algorithms.Reinforce(learnig_rate=0.1)
    with pytest.raises(TypeError, match="popsize"):
        sn.algorithms.RegularizedEvolution(popsize=10)
    with pytest.raises(ValueError, match="tournament_size"):
        sn.algorithms.RegularizedEvolution(population_size=3, tournament_size=5)


def test_wrong_feedback_arity_names_expected_and_got():
    algo = sn.algorithms.NSGA2(num_objectives=2, seed=0)
    algo.setup(pg.dna_spec(SPACES["flat"]()))
    with pytest.raises(ValueError, match="expected 2 objective value.*got 3"):
        algo.feedback(algo.propose(), (1.0, 2.0, 3.0))
    single = sn.algorithms.Reinforce(seed=0)
    single.setup(pg.dna_spec(SPACES["flat"]()))
    with pytest.raises(ValueError, match="single objective|single reward"):
        single.feedback(single.propose(), (1.0, 2.0))


def test_foreign_dna_is_rejected_with_the_decision_named():
    algo = sn.algorithms.Reinforce(seed=0)
    algo.setup(pg.dna_spec(SPACES["flat"]()))
    with pytest.raises(ValueError, match="does not match|expected an index"):
        algo.feedback(pg.DNA([9, 9, 9, 9, 9, 9]), 1.0)


@pytest.mark.parametrize("algo_name", ["evolution", "bayesian"])
def test_deduplicating_algorithms_propose_each_point_once(algo_name):
    space = pg.List([pg.oneof(range(3)), pg.oneof(range(3))])   # 9 points
    algo = ALGORITHMS[algo_name](0)
    spec = pg.dna_spec(space)
    algo.setup(spec)
    seen = set()
    for _ in range(9):
        dna = algo.propose()
        key = tuple(dna.to_numbers())
        assert key not in seen
        seen.add(key)
        algo.feedback(dna, float(sum(key)))
    assert len(seen) == 9
