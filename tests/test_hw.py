"""sn.hw: symbolic accelerators, their area, ZigZag costs, layers from networks, joint search."""
import os
import time

import pyglove as pg
import pytest
import yaml

pytest.importorskip("zigzag")

import symnas as sn  # noqa: E402
from symnas import program as P  # noqa: E402
from symnas.hw.cost import lpf_ordering  # noqa: E402

SMALL = sn.hw.Layer("small", K=16, C=16, OY=8, OX=8, FY=1, FX=1)
CONV = sn.hw.Layer("conv", K=32, C=32, OY=16, OX=16, FY=3, FX=3)


def _zigzag_inputs(kind):
    import zigzag
    return os.path.join(os.path.dirname(zigzag.__file__), "inputs", kind)


# ---------------------------------------------------------------------------------------- accelerator


@pytest.mark.parametrize("name", ["edge_tpu_like", "tpu_like", "eyeriss_like"])
def test_presets_reproduce_zigzags_shipped_accelerators(name):
    ours = sn.hw.preset(name).to_zigzag()
    with open(os.path.join(_zigzag_inputs("hardware"), f"{name}.yaml"), encoding="utf-8") as f:
        theirs = yaml.safe_load(f)
    assert list(ours["memories"]) == list(theirs["memories"])
    for memory, spec in theirs["memories"].items():
        mine = ours["memories"][memory]
        for field in ("size", "latency", "operands", "served_dimensions"):
            assert mine[field] == spec[field], (memory, field)
        for field in ("r_cost", "w_cost"):
            assert mine[field] == pytest.approx(spec[field], rel=1e-12), (memory, field)

        def ports(p):
            return sorted((x["type"], x["bandwidth_min"], x["bandwidth_max"], tuple(sorted(x["allocation"]))) for x in p)
        assert ports(mine["ports"]) == ports(spec["ports"]), memory
    for field in ("unit_energy", "dimensions", "sizes"):
        assert ours["operational_array"][field] == theirs["operational_array"][field]
    assert ours["operational_array"].get("systolic_dimensions", []) == \
        theirs["operational_array"].get("systolic_dimensions", [])


def test_preset_costs_equal_zigzags_own_api_on_its_shipped_yaml_and_on_ours(tmp_path):
    from zigzag.api import get_hardware_performance_zigzag
    acc = sn.hw.edge_tpu_like()
    shipped = get_hardware_performance_zigzag(
        [SMALL.zigzag(0, 8)], os.path.join(_zigzag_inputs("hardware"), "edge_tpu_like.yaml"),
        os.path.join(_zigzag_inputs("mapping"), "edge_tpu_like.yaml"), opt="EDP", dump_folder=str(tmp_path / "a"),
        loma_show_progress_bar=False)
    accelerator_yaml, mapping_yaml = acc.to_yaml(str(tmp_path / "yaml"))
    written = get_hardware_performance_zigzag([SMALL.zigzag(0, 8)], accelerator_yaml, mapping_yaml, opt="EDP",
                                              dump_folder=str(tmp_path / "b"), loma_show_progress_bar=False)
    ours = sn.hw.CostModel(mapping="loma").layer_cost(SMALL, acc)
    assert shipped[:2] == written[:2] == (ours.energy_pj, ours.latency_cycles)


def test_yaml_keeps_zigzags_key_order(tmp_path):
    path, _ = sn.hw.edge_tpu_like().to_yaml(str(tmp_path))
    text = open(path, encoding="utf-8").read()
    assert text.index("name:") < text.index("memories:") < text.index("operational_array:")
    assert text.index("rf_1B") < text.index("rf_2B") < text.index("sram_32KB") < text.index("sram_2MB")
    assert text.index("size:") < text.index("r_cost:") < text.index("served_dimensions:")


def test_any_accelerator_field_is_a_search_point():
    space = sn.hw.nahas_space()
    names = [str(p.location) for p in pg.dna_spec(space).decision_points]
    assert {"array[0]", "array[3]", "dataflow", "memories[3].size", "dram_bandwidth"} <= set(names)
    accs = list(pg.random_sample(space, seed=3, num_examples=5))
    assert all(pg.is_deterministic(a) for a in accs)
    assert len({sn.hw.area_mm2(a) for a in accs}) > 1
    assert sn.hw.area_mm2(accs[0]) > 0


def test_area_grows_with_pes_and_buffers_and_its_parts_add_up():
    acc = sn.hw.edge_tpu_like()
    parts = sn.hw.area_breakdown(acc)
    assert sum(parts.values()) == pytest.approx(sn.hw.area_mm2(acc))
    assert parts["sram_2MB"] == pytest.approx(3.66505)      # the CACTI 22 nm pool entry the fit passes through
    bigger_array = acc.clone(override={"array[0]": 16})
    bigger_buffer = acc.clone(override={"memories[3].size": 4 * 2 ** 20})
    assert sn.hw.area_mm2(bigger_array) > sn.hw.area_mm2(acc)
    assert sn.hw.area_mm2(bigger_buffer) > sn.hw.area_mm2(acc)


def test_smallest_area_of_a_space_takes_the_smallest_choices():
    space = sn.hw.nahas_space()
    smallest = sn.hw.smallest_area_mm2(space)
    samples = [sn.hw.area_mm2(a) for a in pg.random_sample(space, seed=0, num_examples=30)]
    assert smallest <= min(samples)
    assert smallest == pytest.approx(sn.hw.area_mm2(sn.hw.edge_tpu_like().clone(override={
        "array": [4, 2, 1, 1], "memories[2].size": 8192, "memories[3].size": 2 ** 19})))


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("override, message", [
    ({"memories[3].size": 0}, "size (bytes) must be a positive integer"),
    ({"memories[2].bandwidth": -8}, "bandwidth (bits per cycle) must be a positive integer"),
    ({"array[1]": 0}, "array[1] (PEs) must be a positive integer"),
    ({"dram_bandwidth": -64}, "dram_bandwidth"),
    ({"dataflow": ["K", "C", "OX", "Z"]}, "unknown loops ['Z']"),
    ({"dataflow": ["K", "C", "OX"]}, "names 3 loops for 4 array dimensions"),
    ({"dataflow": ["K", "K", "OX", "OY"]}, "unrolls a loop twice"),
])
def test_bad_accelerator_fields_raise_one_clear_line(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        sn.hw.edge_tpu_like().clone(override=override)


def test_buffers_that_hold_no_tile_raise_hardware_error_with_zigzags_reason():
    tiny = sn.hw.edge_tpu_like().clone(override={"memories[3].size": 64})
    with pytest.raises(sn.hw.HardwareError, match="buffers cannot hold one tile.*Memory capacity overflow"):
        sn.hw.CostModel().layer_cost(CONV, tiny)


def test_dataflow_unrolling_a_loop_the_layer_lacks_is_an_error():
    acc = sn.hw.edge_tpu_like().clone(override={"dataflow": ["K", "G", "OX", "OY"]})
    with pytest.raises(sn.hw.HardwareError, match="unrolls G, a loop this layer lacks"):
        sn.hw.CostModel().layer_cost(CONV, acc)
    with pytest.raises(sn.hw.HardwareError, match="unrolls G, a loop no layer of this network has"):
        sn.hw.CostModel().network_cost([CONV, SMALL], acc)
    grouped = sn.hw.Layer("grouped", K=16, C=16, OY=16, OX=16, FY=3, FX=3, G=2)
    cost = sn.hw.CostModel().network_cost([CONV, grouped], acc)       # CONV idles the G dimension
    assert cost.latency_cycles > 0


def test_bad_layers_and_cost_model_arguments_raise():
    with pytest.raises(ValueError, match="K must be a positive integer"):
        sn.hw.Layer("x", K=0, C=4)
    with pytest.raises(ValueError, match="mapping must be one of"):
        sn.hw.CostModel(mapping="exhaustive")
    with pytest.raises(ValueError, match="still holds search points"):
        sn.hw.CostModel().layer_cost(CONV, sn.hw.nahas_space())


def test_area_budget_no_configuration_meets_is_refused_at_once():
    space = sn.hw.cosearch_space("resnet18", network=False)
    with pytest.raises(ValueError, match="no accelerator of the space meets the area budget: the smallest has"):
        sn.hw.CoDesignEvaluator("resnet18", area_budget=0.1, legality=None, space=space)


def test_a_zigzag_failure_rejects_that_trial_and_the_search_goes_on():
    good = sn.hw.edge_tpu_like()
    bad = good.clone(override={"memories[3].size": 64, "name": "tiny"})
    space = sn.hw.CoDesign(network=sn.hw.original_transformation("resnet18"), accelerator=pg.oneof([good, bad]))
    evaluate = sn.hw.CoDesignEvaluator("resnet18", legality=None)
    study = sn.search(space, evaluate, sn.algorithms.Random(seed=0), num_trials=6, objectives={"score": "min"},
                      storage=None, progress=False)
    statuses = set(study.trials["status"])
    assert statuses == {"completed", "rejected"}
    errors = study.trials[study.trials["status"] == "rejected"]["error"]
    assert errors.str.contains("buffers cannot hold one tile").all()


# ---------------------------------------------------------------------------------------- cost model


def test_fast_mapping_is_close_to_lomas_search_and_much_faster():
    model_fast, model_full = sn.hw.CostModel(), sn.hw.CostModel(mapping="loma")
    acc = sn.hw.edge_tpu_like()
    start = time.perf_counter()
    fast = model_fast.layer_cost(SMALL, acc)
    fast_seconds = time.perf_counter() - start
    full = model_full.layer_cost(SMALL, acc)
    ratio = (fast.energy_pj * fast.latency_cycles) / (full.energy_pj * full.latency_cycles)
    assert 0.5 < ratio < 2.0
    assert fast_seconds < 2.0
    assert 0 < fast.utilization <= 1


def test_cache_serves_a_repeated_layer_and_a_whole_cached_network_quickly():
    model = sn.hw.CostModel()
    acc = sn.hw.edge_tpu_like()
    layers = sn.hw.network_layers(sn.nn.resnet((1, 1, 1, 1), width=8))
    first = model.network_cost(layers, acc)
    evaluations = model.evaluations
    start = time.perf_counter()
    second = model.network_cost(layers, acc)
    assert time.perf_counter() - start < 1.0
    assert model.evaluations == evaluations and model.hits >= len(layers)
    assert second.energy_pj == first.energy_pj and second.latency_ms == first.latency_ms
    assert first.edp == pytest.approx(first.energy_uj * first.latency_ms)


def test_grouping_adds_zigzags_g_loop_and_cuts_cycles():
    op = P.Conv2d(c_in=64, c_out=64, h=16, w=16)
    original, = sn.hw.schedule_layers(P.Schedule(op, []))
    grouped, = sn.hw.schedule_layers(P.Schedule(op, [P.Group(2)]))
    assert (grouped.G, grouped.K, grouped.C) == (2, 32, 32)
    assert "G" in grouped.loop_sizes and "G" not in original.loop_sizes
    assert grouped.zigzag(0, 8)["equation"].startswith("O[b][g][k]")
    model, acc = sn.hw.CostModel(), sn.hw.edge_tpu_like()
    assert model.layer_cost(grouped, acc.clone(override={"dataflow": ["K", "C", "OX", "OY"]})).latency_cycles < \
        model.layer_cost(original, acc).latency_cycles


def test_bottlenecks_shrink_a_loop_and_partitions_give_one_layer_per_part():
    op = P.Conv2d(c_in=64, c_out=64, h=16, w=16)
    out_b, = sn.hw.schedule_layers(P.Schedule(op, [P.Bottleneck(2, axis="co")]))
    in_b, = sn.hw.schedule_layers(P.Schedule(op, [P.Bottleneck(4, axis="ci")]))
    spatial, = sn.hw.schedule_layers(P.Schedule(op, [P.Bottleneck(2, axis="oh")]))
    assert (out_b.K, in_b.C, spatial.OY, spatial.stride) == (32, 16, 8, (2, 1))
    parts = sn.hw.schedule_layers(P.Schedule(op, [P.Partition("co", 2), P.Group(2, part=0), P.Group(4, part=1)]))
    assert [(l.G, l.K, l.C) for l in parts] == [(2, 16, 32), (4, 8, 16)]


def test_a_schedules_loop_order_is_the_temporal_ordering():
    op = P.Conv2d(c_in=16, c_out=32, h=8, w=8)
    steps = [P.Split("co", 8), P.Reorder(["co.0", "ci", "kh", "kw", "co.1"])]
    layer, = sn.hw.schedule_layers(P.Schedule(op, steps))
    # Reorder permutes the named loops within the places they hold: n, co.0, ci, oh, ow, kh, kw, co.1
    assert layer.order == (("B", 1), ("K", 4), ("C", 16), ("OY", 8), ("OX", 8), ("FY", 3), ("FX", 3), ("K", 8))
    assert sn.hw.schedule_layers(P.Schedule(op, []))[0].order is None
    # 8 of K's 32 unrolled spatially come out of its innermost piece; primes, innermost first
    ordering = lpf_ordering(layer.order, {"K": 4, "OY": 8, "OX": 8, "C": 16, "FY": 3, "FX": 3},
                            {"B": 1, "K": 32, "C": 16, "OY": 8, "OX": 8, "FY": 3, "FX": 3})
    assert ordering[:3] == [("FX", 3), ("FY", 3), ("OX", 2)]
    assert [d for d, _ in ordering][-6:] == ["C", "C", "C", "C", "K", "K"]
    model, acc = sn.hw.CostModel(), sn.hw.edge_tpu_like()
    ours = model.layer_cost(layer, acc)
    default = model.layer_cost(layer.with_order(None), acc)
    assert ours.mapping != default.mapping or ours.energy_pj != default.energy_pj or ours.energy_pj > 0


def test_loop_order_menu_steps_reorder_the_cpu_kernel_and_the_accelerator_mapping():
    op = P.Conv2d(c_in=16, c_out=16, h=8, w=8)
    menu = sn.hw.loop_order_menu(op)
    orders = [sn.hw.schedule_layers(P.Schedule(op, steps))[0].order for steps in menu]
    assert orders[0] is None
    assert [d for d, _ in orders[1]][-2:] == ["OY", "OX"]          # weight-stationary: pixels innermost
    assert [d for d, _ in orders[2]][-1] == "K"                    # input-stationary: output channels innermost
    P.Schedule(op, menu[1]).lower()                                # the same steps are a legal CPU schedule


# ---------------------------------------------------------------------------------------- workloads


def test_network_layers_cover_every_conv_and_the_classifier():
    layers = sn.hw.network_layers(sn.nn.resnet18())
    assert len(layers) == 21 and layers[-1].kind == "dense" and layers[-1].K == 10
    assert [l.name for l in layers if "shortcut" in l.name] == ["5.shortcut.0", "7.shortcut.0", "9.shortcut.0"]
    resnext = sn.hw.network_layers(sn.nn.resnext29_2x64d())
    assert {l.G for l in resnext} == {1, 2}
    mobilenet = sn.hw.network_layers(sn.nn.mobilenetv2(width_multiplier=0.5))
    depthwise = [l for l in mobilenet if l.G > 1]
    assert depthwise and all(l.K == 1 and l.C == 1 for l in depthwise)


def test_network_layers_of_a_transformed_network_and_of_a_torch_module_agree():
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    site = sn.nn.transformable_convs(net)[0]
    grouped = sn.nn.replace_convs(net, {site.path: P.Schedule(site.operator(), [P.Group(2)])})
    symbolic = sn.hw.network_layers(grouped)
    traced = sn.hw.torch_layers(grouped.build((3, 32, 32)))
    assert [l.loop_sizes for l in symbolic] == [l.loop_sizes for l in traced]
    assert any(l.G == 2 for l in symbolic)


def test_torch_layers_read_a_nasbench201_network():
    net = sn.nn.NASBench201Network(["nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3",
                                    "none", "nor_conv_3x3"], C=8, N=1)
    layers = sn.hw.torch_layers(net)
    assert layers[0].C == 3 and layers[-1].kind == "dense"
    assert sn.hw.CostModel().network_cost(layers, sn.hw.edge_tpu_like()).latency_cycles > 0


# ---------------------------------------------------------------------------------------- joint search


@pytest.fixture(scope="module")
def synthetic_batch():
    return sn.hw.fisher_batch(8, synthetic=True)


def test_algorithms_swap_in_one_line_and_find_designs_within_the_area_budget():
    space = sn.hw.cosearch_space("resnet18", network=False)
    budget = sn.hw.area_mm2(sn.hw.edge_tpu_like())
    evaluate = sn.hw.CoDesignEvaluator("resnet18", area_budget=budget, legality=None, space=space)
    found = 0
    for algorithm in (sn.algorithms.Random(seed=0), sn.algorithms.RegularizedEvolution(population_size=3, seed=0)):
        study = sn.search(space, evaluate, algorithm, num_trials=8, objectives={"score": "min"}, storage=None,
                          progress=False, record_objects=False)
        trials = study.trials
        assert len(trials) == 8
        rejected = trials[trials["status"] == "rejected"]        # a G-unrolling dataflow on a ResNet
        assert rejected["error"].str.contains("a loop no layer of this network has").all()
        trials = trials[trials["status"] == "completed"]
        feasible, infeasible = trials[trials["feasible"] == True], trials[trials["feasible"] == False]  # noqa: E712
        found += len(feasible)
        if len(feasible):
            assert (feasible["area_mm2"] <= budget).all() and (feasible["score"] == feasible["edp"]).all()
        assert (infeasible["score"] > evaluate.penalty).all() and (infeasible["area_mm2"] > budget).all()
    assert found


# every transformable ResNet-18 layer but two stays original: the legality tests score few layer options
TWO_LAYERS = [f"{b}.body.{i}" for b in range(3, 11) for i in (0, 3) if b != 8]


def test_joint_designs_breaking_legality_get_a_graded_penalty(synthetic_batch):
    space = sn.hw.cosearch_space("resnet18", keep=TWO_LAYERS)
    evaluate = sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch, space=space, legality="network")
    study = sn.search(space, evaluate, sn.algorithms.Random(seed=2), num_trials=4, objectives={"score": "min"},
                      storage=None, progress=False, record_objects=False)
    trials = study.trials
    assert (trials["status"] == "completed").all()
    assert set(trials["feasible"]) == {True, False}          # both kinds of design occur in these four
    for _, row in trials.iterrows():
        if row["feasible"]:
            assert row["legal"] and row["score"] == row["edp"]
        else:
            assert not row["legal"] and row["score"] == pytest.approx(evaluate.penalty * (1 + row["violation"]))
            assert row["fisher_candidate"] < row["fisher_original"]


def test_per_layer_legality_reverts_illegal_layers_and_costs_the_rest(synthetic_batch):
    space = sn.hw.cosearch_space("resnet18", sn.hw.edge_tpu_like(), keep=TWO_LAYERS)
    evaluate = sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch)
    design = next(pg.random_sample(space, seed=0))
    illegal = evaluate.illegal_layers(design.network)
    metrics = evaluate(design)
    assert metrics["feasible"] and metrics["legal"] and metrics["reverted_layers"] == len(illegal) > 0
    repaired = evaluate.repaired(design)
    assert not evaluate.illegal_layers(repaired.network)
    assert any(t.neural for t in repaired.network.layers)     # the legal layer keeps its transformation
    assert [t.path for t in repaired.network.layers if not t.neural] == \
        sorted(set(illegal) | {t.path for t in design.network.layers if not t.neural},
               key=[t.path for t in design.network.layers].index)
    assert evaluate(repaired)["edp"] == pytest.approx(metrics["edp"])


def test_illegal_or_over_budget_designs_are_rejected_without_penalty(synthetic_batch):
    space = sn.hw.cosearch_space("resnet18", sn.hw.edge_tpu_like())
    evaluate = sn.hw.CoDesignEvaluator("resnet18", area_budget=1.0, penalize=False, legality=None)
    study = sn.search(space, evaluate, sn.algorithms.Random(seed=0), num_trials=2, objectives={"score": "min"},
                      storage=None, progress=False)
    assert (study.trials["status"] == "rejected").all()
    assert study.trials["error"].str.contains("exceeds the budget of 1.000 mm²").all()


def test_pareto_front_and_plot_over_score_and_area(synthetic_batch):
    space = sn.hw.cosearch_space("resnet18", network=False)
    evaluate = sn.hw.CoDesignEvaluator("resnet18", legality=None)
    study = sn.search(space, evaluate, sn.algorithms.NSGA2(seed=0), num_trials=8,
                      objectives={"score": "min", "area_mm2": "min"}, storage=None, progress=False)
    front = study.pareto_front()
    assert front and all(r.status == "completed" for r in front)
    assert study.plot() is not None


def test_learning_rate_and_accuracy_flow_through_the_same_object():
    seen = []

    def train(network, lr):
        seen.append(lr)
        return 0.5 + lr

    space = sn.hw.cosearch_space("resnet18", sn.hw.edge_tpu_like(), network=False,
                                 learning_rate=pg.floatv(0.01, 0.1))
    evaluate = sn.hw.CoDesignEvaluator("resnet18", legality=None, train=train)
    study = sn.search(space, evaluate, sn.algorithms.NSGA2(seed=1), num_trials=2,
                      objectives={"score": "min", "accuracy": "max"}, storage=None, progress=False)
    assert len(seen) == 2 and all(0.01 <= lr <= 0.1 for lr in seen)
    assert (study.trials["accuracy"] > 0.5).all()


def test_exact_legality_of_the_original_network_holds(synthetic_batch):
    evaluate = sn.hw.CoDesignEvaluator("resnet18", batch=synthetic_batch)
    design = sn.hw.CoDesign(network=sn.hw.original_transformation("resnet18"), accelerator=sn.hw.edge_tpu_like())
    assert evaluate.exact_legality(design, synthetic_batch).legal
    assert evaluate(design)["legal"] is True


# ---------------------------------------------------------------------------------------- comparison, validation


def test_compare_searches_reports_each_arm_with_its_trials_and_time():
    results = sn.hw.compare_searches("resnet18", trials=4, arms="ab", loma="none", log=lambda s: None)
    assert [r.arm for r in results] == ["a", "b"]
    original = results[0]
    assert original.trials == 1 and original.exact_legal and original.metrics["edp"] > 0
    assert results[1].trials == 4 and results[1].seconds > 0
    table = sn.hw.format_table(results)
    assert "| (a) original on the preset | " in table and "1.00x" in table
    with pytest.raises(ValueError, match="unknown arms"):
        sn.hw.compare_searches("resnet18", trials=4, arms="az")
    with pytest.raises(ValueError, match="loma must be"):
        sn.hw.recost_with_loma(results, "resnet18", which="some")


def test_fast_vs_full_reports_rank_correlations_over_random_pairs():
    pairs = sn.hw.random_pairs(6, seed=1, backbones=("resnet18",), transformed=1, per_layer=3)
    assert len(pairs) == 6 and len({p[0].key() for p in pairs}) == 2
    stand_in = sn.hw.CostModel(orders=["output_stationary"])      # the plumbing, without minutes of LOMA
    report = sn.hw.fast_vs_full(pairs, full=stand_in)
    assert len(report.ratios) == 6 and all(r <= 1.0 + 1e-9 for r in report.ratios)   # best of 3 orders <= one
    assert -1 <= report.spearman <= 1 and -1 <= report.within_layer_spearman <= 1


def test_importing_symnas_does_not_import_zigzag():
    import subprocess
    import sys
    code = "import sys, symnas; print('zigzag' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
