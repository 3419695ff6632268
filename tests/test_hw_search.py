"""Searching a network x accelerator product space: alternating evolution and the exact legality check in the loop."""
import pyglove as pg
import pytest

import symnas as sn


def _product_space():
    return pg.Dict(network=pg.List([pg.oneof(range(6)) for _ in range(8)]),
                   accelerator=pg.List([pg.oneof(range(5)) for _ in range(4)]))


def _proposals(algorithm, space, n, reward):
    out = []
    for value, feedback in pg.sample(space, algorithm, num_examples=n):
        out.append(value)
        feedback(reward(value))
    return out


def test_alternating_evolution_on_one_part_proposes_what_regularized_evolution_does():
    space = pg.Dict(accelerator=pg.List([pg.oneof(range(5)) for _ in range(5)]))
    reward = lambda v: float(sum(v.accelerator))   # noqa: E731
    ours = _proposals(sn.algorithms.AlternatingEvolution(population_size=6, tournament_size=3, phase_length=4,
                                                         seed=3), space, 40, reward)
    theirs = _proposals(sn.algorithms.RegularizedEvolution(population_size=6, tournament_size=3, seed=3),
                        space, 40, reward)
    assert [pg.format(v, compact=True) for v in ours] == [pg.format(v, compact=True) for v in theirs]


def test_alternating_evolution_mutates_one_part_per_phase_in_turn():
    population, phase = 6, 5
    algo = sn.algorithms.AlternatingEvolution(population_size=population, tournament_size=2, phase_length=phase,
                                              seed=0)
    values = _proposals(algo, _product_space(), population + 4 * phase,
                        lambda v: -float(sum(v.network)) - float(sum(v.accelerator)))
    for i, child in enumerate(values[population:]):
        earlier = values[:population + i]
        mutated = ("network", "accelerator")[(i // phase) % 2]
        kept = "accelerator" if mutated == "network" else "network"
        # the child's other part is its parent's, an earlier proposal's; the mutated part is new for that parent
        parents = [v for v in earlier if list(v[kept]) == list(child[kept])]
        assert parents, (i, mutated)
        assert any(sum(a != b for a, b in zip(p[mutated], child[mutated])) == 1 for p in parents), (i, mutated)
    assert algo.state_dict()["children"] == 4 * phase


def test_alternating_evolution_rejects_bad_arguments():
    with pytest.raises(Exception, match="phase_length"):
        sn.algorithms.AlternatingEvolution(phase_length=0)
    with pytest.raises(Exception, match="parts"):
        sn.algorithms.AlternatingEvolution(parts=[])


@pytest.fixture(scope="module")
def synthetic_batch():
    return sn.hw.fisher_batch(8, synthetic=True)


def test_exact_check_in_the_loop_costs_the_network_that_passes_the_final_check(synthetic_batch):
    keep = [f"{b}.body.{i}" for b in range(3, 11) for i in (0, 3) if b != 8]    # two layers searched: fast
    space = sn.hw.cosearch_space("resnet18", sn.hw.edge_tpu_like(), keep=keep)
    evaluate = sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch, exact_batch=synthetic_batch)
    designs = list(pg.random_sample(space, seed=2, num_examples=4))
    first = evaluate(designs[0])
    assert first["feasible"] and first["exact_checked"]          # the first feasible design sets the bar
    repaired = evaluate.repaired(designs[0])
    assert evaluate.exact_legality(repaired, synthetic_batch).legal
    assert evaluate(repaired)["edp"] == pytest.approx(first["edp"])
    best = first["edp"]
    for design in designs[1:]:
        metrics = evaluate(design)
        if not metrics["feasible"]:
            continue
        if metrics["exact_checked"]:                              # within the margin of the best checked score
            assert metrics["exact_reverted"] >= 0
            best = min(best, metrics["edp"])
        else:                                                     # above the bar, or nothing transformed
            assert metrics["edp"] > best or not any(t.neural for t in evaluate.repaired(design).network.layers)
    plain = sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch)(designs[0])
    assert "exact_checked" not in plain
    assert plain["reverted_layers"] == first["reverted_layers"] - first["exact_reverted"]


def test_exact_check_in_the_loop_needs_per_layer_legality_with_repair(synthetic_batch):
    with pytest.raises(ValueError, match="exact_batch .* needs legality='per_layer' with repair"):
        sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch, legality="network", exact_batch=synthetic_batch)
    with pytest.raises(ValueError, match="exact_margin must be a non-negative number"):
        sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch, exact_batch=synthetic_batch, exact_margin=-1)
