"""Warm start (queued points evaluated first, learnt from, kept across restarts) and constraints."""
import pyglove as pg
import pytest

import symnas as sn
from symnas.constraints import Constraints

SPACE = pg.Dict(a=pg.oneof(list(range(8))), b=pg.oneof(list(range(8))), c=pg.oneof(list(range(8))))
LATENCY = {"latency_ms": ("<=", 4.0)}
FEASIBLE_BEST = 11.0        # a + b = 4, c = 7; the unconstrained optimum (21) is infeasible


def evaluate(v):
    return {"reward": float(v.a + v.b + v.c), "latency_ms": float(v.a + v.b)}


def _dnas(study):
    return [r.to_dna().to_numbers() for r in study.records]


# -- warm start --------------------------------------------------------------------------------
def test_queued_points_are_evaluated_first_in_the_order_given():
    study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=5, storage=None,
                      progress=False, initial=[pg.Dict(a=1, b=2, c=3), {"a": 7, "b": 7, "c": 7}, pg.DNA([0, 0, 1])])
    assert _dnas(study)[:3] == [[1, 2, 3], [7, 7, 7], [0, 0, 1]]
    assert len(study) == 5


def test_evolution_population_contains_the_queued_points():
    algo = sn.algorithms.RegularizedEvolution(population_size=5, seed=0)
    sn.search(SPACE, evaluate, algo, num_trials=2, storage=None, progress=False,
              initial=[pg.Dict(a=1, b=2, c=3), pg.Dict(a=0, b=0, c=7)])
    population = [(values, reward) for values, reward, _ in algo._population]
    assert population == [([1, 2, 3], 6.0), ([0, 0, 7], 7.0)]


def test_tpe_study_has_the_queued_points_as_completed_trials():
    algo = sn.algorithms.Bayesian(seed=0, n_startup_trials=2)
    sn.search(SPACE, evaluate, algo, num_trials=4, storage=None, progress=False,
              initial=[pg.Dict(a=1, b=2, c=3), pg.Dict(a=0, b=0, c=7)])
    trials = algo._study.get_trials(deepcopy=False)
    completed = [(t.params, t.value) for t in trials if t.state.name == "COMPLETE"]
    assert ({"a": 1, "b": 2, "c": 3}, 6.0) in completed
    assert ({"a": 0, "b": 0, "c": 7}, 7.0) in completed


def test_reinforce_policy_and_baseline_learn_from_the_queued_points():
    algo = sn.algorithms.Reinforce(seed=0, learning_rate=0.5)
    sn.search(SPACE, evaluate, algo, num_trials=2, storage=None, progress=False,
              initial=[pg.Dict(a=0, b=0, c=0), pg.Dict(a=7, b=7, c=7)])
    assert algo._baseline == pytest.approx(0.95 * 0.0 + 0.05 * 21.0)
    a_logits = algo._logits[algo._space.slots[0].index]
    assert a_logits[7] > 0.0 and a_logits.index(max(a_logits)) == 7   # the better point's choice is favoured


def test_queued_points_survive_a_restart_and_each_is_evaluated_once(tmp_path):
    db = str(tmp_path / "runs.db")
    points = [pg.Dict(a=1, b=1, c=1), pg.Dict(a=2, b=2, c=2), pg.Dict(a=3, b=3, c=3)]
    first = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=1, storage=db, progress=False,
                      initial=points)
    assert _dnas(first) == [[1, 1, 1]]
    assert [d.to_numbers() for d in first.queued] == [[2, 2, 2], [3, 3, 3]]
    again = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=4, storage=db, progress=False,
                      initial=points)   # the same call run again: nothing is queued twice
    assert _dnas(again)[:3] == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    assert len(again) == 4 and again.queued == []


def test_study_enqueue_is_evaluated_by_the_next_search_of_the_study(tmp_path):
    db = str(tmp_path / "runs.db")
    study = sn.search(SPACE, evaluate, sn.algorithms.RegularizedEvolution(seed=0), num_trials=3, storage=db,
                      progress=False)
    loaded = sn.Study.load(db)
    assert loaded.enqueue(pg.Dict(a=7, b=7, c=7)).to_numbers() == [7, 7, 7]
    assert loaded.enqueue({"a": 7, "b": 7, "c": 7}) is None   # already queued
    resumed = sn.search(SPACE, evaluate, sn.algorithms.RegularizedEvolution(seed=0), num_trials=5, storage=db,
                        progress=False, name=study.name)
    assert _dnas(resumed)[3] == [7, 7, 7]
    assert resumed.best_trial.metrics["reward"] == 21.0


def test_a_point_outside_the_space_is_one_clear_error_before_any_trial():
    with pytest.raises(ValueError, match=r"outside the search space.*no candidates matches with the value"):
        sn.search(SPACE, evaluate, num_trials=3, storage=None, progress=False,
                  initial=[pg.Dict(a=1, b=2, c=3), pg.Dict(a=9, b=0, c=0)])
    with pytest.raises(ValueError, match=r"outside the search space.*no decision named 'd'"):
        sn.search(pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2])), lambda v: v.x, num_trials=1,
                  storage=None, progress=False, initial=[{"d": 1}])
    with pytest.raises(ValueError, match=r"outside the search space.*no greater than 1.0"):
        sn.search(pg.List([pg.floatv(0.0, 1.0)]), lambda v: v[0], num_trials=1, storage=None, progress=False,
                  initial=[[2.0]])


# -- constraints -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: sn.algorithms.RegularizedEvolution(population_size=10, seed=0),
    lambda: sn.algorithms.Bayesian(seed=0, n_startup_trials=10),
    lambda: sn.algorithms.Reinforce(seed=1, learning_rate=0.2),
    lambda: sn.algorithms.Random(seed=0),
], ids=["evolution", "tpe", "reinforce", "random"])
def test_each_algorithm_finds_the_feasible_optimum_and_best_ignores_infeasible(make):
    study = sn.search(SPACE, evaluate, make(), num_trials=100, storage=None, progress=False, constraints=LATENCY)
    assert study.best_trial.metrics["reward"] == FEASIBLE_BEST
    assert study.best_trial.metrics["latency_ms"] <= 4.0 and study.best_trial.metrics["feasible"] is True
    assert max(r.metrics["reward"] for r in study.completed) > FEASIBLE_BEST   # it did see infeasible better ones
    assert all(r.metrics["feasible"] is False and r.metrics["constraint_violations"][0] > 0 for r in study.infeasible)


@pytest.mark.parametrize("make", [
    lambda: sn.algorithms.RegularizedEvolution(population_size=10, seed=0),
    lambda: sn.algorithms.Bayesian(seed=0, n_startup_trials=10),
    lambda: sn.algorithms.Reinforce(seed=1, learning_rate=0.2),
], ids=["evolution", "tpe", "reinforce"])
def test_algorithms_told_the_constraints_propose_fewer_infeasible_points(make):
    told = sn.search(SPACE, evaluate, make(), num_trials=60, storage=None, progress=False, constraints=LATENCY)
    blind = sn.search(SPACE, evaluate, make(), num_trials=60, storage=None, progress=False)
    blind_infeasible = sum(r.metrics["latency_ms"] > 4.0 for r in blind.completed)
    assert len(told.infeasible) < blind_infeasible


def test_nsga2_pareto_front_holds_only_feasible_trials_under_constraint_domination():
    space = pg.Dict(a=pg.oneof(list(range(8))), c=pg.oneof(list(range(8))))

    def two(v):
        return {"reward": float(v.a + v.c), "cost": float(v.c), "latency_ms": float(v.a)}

    study = sn.search(space, two, sn.algorithms.NSGA2(population_size=10, seed=0), num_trials=120, storage=None,
                      progress=False, objectives={"reward": "max", "cost": "min"}, constraints={"latency_ms": ("<=", 3.0)})
    front = {(r.metrics["reward"], r.metrics["cost"]) for r in study.pareto_front()}
    assert all(r.metrics["latency_ms"] <= 3.0 for r in study.pareto_front())
    assert (10.0, 7.0) in front                                  # the feasible maximum: a = 3, c = 7
    assert front <= {(3.0 + c, float(c)) for c in range(8)}      # every front point is a = 3 (feasible-optimal)
    assert study.infeasible


def test_a_callable_constraint_returning_bool_filters_best():
    study = sn.search(SPACE, evaluate, sn.algorithms.RegularizedEvolution(seed=0), num_trials=100, storage=None,
                      progress=False, constraints=lambda m: m["latency_ms"] <= 4.0)
    assert study.best_trial.metrics["reward"] == FEASIBLE_BEST
    assert study.constraints["callable"].endswith("<lambda>")


def test_a_constraint_on_a_metric_never_reported_stops_at_the_first_trial():
    with pytest.raises(ValueError, match=r"Constraint power_w <= 2: the evaluator's result has no metric 'power_w'"):
        sn.search(SPACE, evaluate, num_trials=10, storage=None, progress=False, constraints={"power_w": ("<=", 2)})
    with pytest.raises(ValueError, match=r"constraints function looked up metric 'power_w'"):
        sn.search(SPACE, evaluate, num_trials=10, storage=None, progress=False,
                  constraints=lambda m: m["power_w"] <= 2)


def test_bad_constraint_specs_are_one_clear_line():
    with pytest.raises(ValueError, match=r"unknown operator '=<'"):
        Constraints.parse({"latency_ms": ("=<", 5.0)})
    with pytest.raises(ValueError, match=r"must be \(operator, bound\)"):
        Constraints.parse({"latency_ms": 5.0})
    with pytest.raises(ValueError, match=r"bound must be a finite number"):
        sn.search(SPACE, evaluate, num_trials=1, storage=None, progress=False,
                  constraints={"latency_ms": ("<=", float("nan"))})


def test_violations_measure_how_far_each_constraint_is_missed():
    c = Constraints.parse({"latency_ms": ("<=", 5.0), "accuracy": (">=", 0.9), "params": ("<", 10)})
    assert c.violations({"latency_ms": 7.0, "accuracy": 0.95, "params": 10}) == pytest.approx((2.0, -0.05, 1e-12))


def test_show_marks_infeasible_trials(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=20, storage=db, progress=False,
              constraints=LATENCY)
    from symnas import cli
    assert cli.main(["show", db]) == 0
    out = capsys.readouterr().out
    assert "infeasible" in out and "completed trials are infeasible" in out


def test_the_docs_example_runs_and_its_best_is_feasible():
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "warm_start_constraints.md").read_text()
    scope = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), scope)   # pylint: disable=exec-used
    study = scope["study"]
    assert study.best_trial.metrics["latency_ms"] <= 5.0 and study.infeasible
    assert [r.to_dna().to_numbers()[:2] for r in study.records[:2]] == [[1, 1], [2, 0]]


def test_the_dashboard_view_carries_violations_as_optuna_constraints(tmp_path):
    optuna = pytest.importorskip("optuna")
    from symnas.dashboard import OptunaStorageView
    db = str(tmp_path / "runs.db")
    study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=15, storage=db, progress=False,
                      constraints=LATENCY)
    trials = optuna.load_study(study_name=study.name, storage=OptunaStorageView(db)).trials
    for record, trial in zip(study.records, trials):
        assert trial.constraints == {"0": record.metrics["constraint_violations"][0]}


def test_a_point_given_twice_or_already_evaluated_is_queued_once_unless_asked(tmp_path):
    db = str(tmp_path / "runs.db")
    point = pg.Dict(a=1, b=1, c=1)
    study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=0, storage=db, progress=False,
                      initial=[point, {"a": 1, "b": 1, "c": 1}, pg.DNA([1, 1, 1])])
    assert [d.to_numbers() for d in study.queued] == [[1, 1, 1]]
    assert study.enqueue(point) is None
    assert study.enqueue(point, skip_if_exists=False).to_numbers() == [1, 1, 1]   # a repeat on purpose
    assert len(study.queued) == 2


@pytest.mark.parametrize("make", [
    lambda: sn.algorithms.RegularizedEvolution(population_size=30, seed=0),
    lambda: sn.algorithms.Bayesian(seed=0, n_startup_trials=5),
], ids=["evolution", "tpe"])
def test_a_resumed_study_tells_the_algorithm_each_trials_violations_again(tmp_path, make):
    db = str(tmp_path / "runs.db")
    first = sn.search(SPACE, evaluate, make(), num_trials=12, storage=db, progress=False, constraints=LATENCY)
    expected = sorted(r.metrics["constraint_violations"][0] for r in first.completed)
    algo = make()
    sn.search(SPACE, evaluate, algo, num_trials=12, storage=db, progress=False, constraints=LATENCY)
    if isinstance(algo, sn.algorithms.RegularizedEvolution):
        told = sorted(violation for _, _, violation in algo._population)
        assert told == [max(v, 0.0) for v in expected]          # the population ranks by total violation
    else:
        told = sorted(t.constraints["0"] for t in algo._study.get_trials(deepcopy=False))
        assert told == pytest.approx(expected)


def test_a_point_queued_on_a_pg_sample_study_comes_first_there_too(tmp_path):
    db = str(tmp_path / "runs.db")
    space = pg.Dict(a=pg.oneof(list(range(8))))
    for value, feedback in pg.sample(space, sn.algorithms.Random(seed=0), num_examples=2, name="s",
                                     backend="symnas", storage=db):
        feedback(float(value.a))
    sn.Study.load(db, "s").enqueue(pg.Dict(a=7))
    for value, feedback in pg.sample(space, sn.algorithms.Random(seed=0), num_examples=3, name="s",
                                     backend="symnas", storage=db):
        assert value.a == 7
        feedback(float(value.a))
    assert sn.Study.load(db, "s").best_trial.to_dna().to_numbers() == [7]
