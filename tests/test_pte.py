"""sn.pte: the kernel table, the menu, the candidate evaluator and the one call, on a small ResNet."""
import json
import math

import pyglove as pg
import pytest
import torch

import symnas as sn

P = sn.program
OP = P.Conv2d(c_in=8, c_out=8, h=8, w=8, k=3, stride=1, padding=1)
OPTIONS = [[P.Group(2)], [P.Group(4)], [P.Bottleneck(2, axis="ci")]]


@pytest.fixture(scope="module")
def small_net():
    return sn.nn.resnet((1, 1, 1, 1), width=8)


@pytest.fixture(scope="module")
def data():
    return sn.data.Synthetic(image_shape=(3, 32, 32), train_size=64, test_size=8, seed=1)


def synthetic_table(net, options, max_templates=1) -> "sn.pte.KernelTable":
    """A table whose every kernel of ``net`` takes 1 ms per GFLOP (no compiling): the search's logic
    without TVM. The fastest template is the first."""
    table = sn.pte.KernelTable()
    for site in sn.nn.transformable_convs(net, include_all=True):
        op = site.operator()
        for neural in sn.spaces.neural_menu(op, candidates=options) + [[P.Group(2)]]:
            try:
                ms = P.Schedule(op, neural).kernel().flops() * 1e-6
            except (ValueError, P.IllegalTransformation):
                continue
            for i, program in enumerate(sn.spaces.program_templates(op)[:max_templates]):
                table.record(op, neural, program, ms * (1 + i))
    return table


@pytest.fixture(scope="module")
def menu(small_net):
    return sn.pte.LayerMenu(options=OPTIONS, max_templates=1).build(small_net, synthetic_table(small_net, OPTIONS))


@pytest.fixture(scope="module")
def result(small_net, data):
    return sn.pte.search(small_net, data=data, target_speedup=1.6, trials=24, batch_size=16,
                         menu=sn.pte.LayerMenu(options=OPTIONS, max_templates=1),
                         kernel_table=synthetic_table(small_net, OPTIONS), screening=sn.pte.ExactScreening(3),
                         fill=sn.pte.BudgetFill(checks=4), measure=False)


def test_kernel_table_saved_to_a_file_is_reused_without_compiling(tmp_path):
    table = sn.pte.KernelTable(path=str(tmp_path / "t.json"), repeat=1)
    ms = table.measure(OP, [P.Group(2)], [])
    assert math.isfinite(ms) and table.measure(OP, [], [P.Split(loop="oh", factor=16)]) == math.inf
    assert table.compiles == 2
    table.save()
    again = sn.pte.KernelTable(path=str(tmp_path / "t.json"), repeat=1)
    assert again.load() == 2
    assert again.measure(OP, [P.Group(2)], []) == ms and again.remeasure(OP, [P.Group(2)], []) == ms
    assert again.measure(OP, [], [P.Split(loop="oh", factor=16)]) == math.inf and again.compiles == 0


def test_kernel_table_of_the_other_timing_mode_or_not_a_table_is_refused_by_name(tmp_path):
    warm = sn.pte.KernelTable(path=str(tmp_path / "warm.json"), repeat=1, cold_weights=False)
    warm.measure(OP, [], [])
    warm.save()
    with pytest.raises(sn.pte.KernelTableError, match="timed with warm weights, this table times them with cold"):
        sn.pte.KernelTable(path=str(tmp_path / "warm.json")).load()
    (tmp_path / "bad.json").write_text('{"latency": 1}')
    with pytest.raises(sn.pte.KernelTableError, match="bad.json: not a kernel table"):
        sn.pte.KernelTable(path=str(tmp_path / "bad.json")).load()
    assert sn.pte.KernelTable(path=str(tmp_path / "absent.json")).load() == 0


def test_a_table_from_another_machine_is_used_with_a_warning(tmp_path):
    path = tmp_path / "other.json"
    table = sn.pte.KernelTable(path=str(path), repeat=1)
    table.measure(OP, [], [])
    table.save()
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "machine": "elsewhere"}))
    again = sn.pte.KernelTable(path=str(path))
    assert again.load() == 1 and "measured on 'elsewhere'" in again.warnings[0]


def test_menu_offers_the_original_first_and_each_option_with_its_fastest_template(menu, small_net):
    sites = sn.nn.transformable_convs(small_net)
    assert menu.sites == sites and menu.original_ms > menu.fixed_ms > 0
    for s in sites:
        options = menu.options[s.key]
        assert options[0].neural == [] and len(options) > 1
        assert all(math.isfinite(o.latency_ms) for o in options)
        assert menu.index(s.key, options[1].neural) == 1 and menu.find(s.key, [P.Group(64)]) is None
        assert menu.nas_only[s.key].neural == [P.Group(2)]
    assert menu.latency({s.path: menu.original_choice(s.path) for s in sites}) == pytest.approx(menu.original_ms)


def test_menu_with_no_dead_channels_drops_input_bottlenecks_of_private_input_convs_only():
    net = sn.nn.resnext29_2x64d()
    sites = sn.nn.transformable_convs(net)
    private = set(sn.nn.private_input_convs(net))
    menus = {s.key: sn.spaces.neural_menu(s.operator(), channel_shuffle=True) for s in sites}
    from symnas.pte.menu import drop_input_bottlenecks
    assert drop_input_bottlenecks(menus, sites, private) == []

    def bottleneck(steps):
        return any(isinstance(s, P.Bottleneck) and s.axis == "ci" for s in steps)
    for site in sites:
        assert menus[site.key][0] == [] and len(menus[site.key]) > 1
        assert not (site.path in private and any(bottleneck(steps) for steps in menus[site.key])), site.path
    assert any(bottleneck(steps) for s in sites if s.path not in private for steps in menus[s.key])
    # ResNet-18: a block's two 3x3 convs share a shape; the shared-input one keeps B(ci), and it is named
    net = sn.nn.resnet18()
    sites = sn.nn.transformable_convs(net)
    menus = {s.key: sn.spaces.neural_menu(s.operator()) for s in sites}
    assert drop_input_bottlenecks(menus, sites, sn.nn.private_input_convs(net))
    assert all(any(bottleneck(steps) for steps in m) for m in menus.values())


def test_evaluator_options_are_checked_when_constructed():
    with pytest.raises(ValueError, match="legality must be one of"):
        sn.pte.CandidateEvaluator(legality="layer")
    with pytest.raises(ValueError, match="needs context='tail'"):
        sn.pte.CandidateEvaluator(proxy="snip")
    with pytest.raises(ValueError, match="target_speedup must be positive"):
        sn.pte.CandidateEvaluator(target_speedup=0)


def _candidate(menu, option_of):
    """A candidate that runs option ``option_of(site)`` at each searched layer."""
    layers = [sn.spaces.LayerTransformation(s.path, menu.options[s.key][option_of(s)].neural,
                                            menu.options[s.key][option_of(s)].program) for s in menu.sites]
    return sn.spaces.NetworkTransformation(backbone=None, layers=layers)


def test_per_layer_rejection_gives_an_illegal_layer_its_original_and_keeps_the_rest(menu, small_net, data):
    x, y = data.batch(16)
    evaluator = sn.pte.CandidateEvaluator(legality="per_layer", rejection="layer").bind(small_net, menu, x, y)
    grouped = _candidate(menu, lambda s: 1)
    scores = [evaluator.layer(s.path, 1) for s in menu.sites]
    metrics = evaluator(grouped)
    legal_ms = menu.fixed_ms + sum(menu.options[s.key][1 if ok[0] else 0].latency_ms
                                   for s, ok in zip(menu.sites, scores))
    assert metrics["legal"] and metrics["latency_ms"] == pytest.approx(legal_ms)
    assert metrics["rejected_layers"] == sum(1 for ok in scores if not ok[0])
    assert metrics["reward"] == pytest.approx(-legal_ms)
    choice = evaluator.choice(grouped)
    assert all((choice[s.path][0] == []) != ok[0] for s, ok in zip(menu.sites, scores))
    network_wide = sn.pte.CandidateEvaluator(legality="per_layer", rejection="network").bind(small_net, menu, x, y)
    if any(not ok[0] for ok in scores):
        rejected = network_wide(grouped)
        assert not rejected["legal"] and rejected["latency_ms"] is None and rejected["reward"] < -menu.original_ms


def test_network_legality_compares_the_sum_of_layer_scores(menu, small_net, data):
    x, y = data.batch(16)
    evaluator = sn.pte.CandidateEvaluator(legality="network").bind(small_net, menu, x, y)
    original = evaluator(_candidate(menu, lambda s: 0))
    assert original["legal"] and original["fisher_candidate"] == pytest.approx(evaluator.fisher_original)
    assert original["latency_ms"] == pytest.approx(menu.original_ms)
    grouped = evaluator(_candidate(menu, lambda s: 1))
    total = evaluator.fisher_original + sum(evaluator.layer(s.path, 1)[1] - evaluator.layer(s.path, 1)[2]
                                            for s in menu.sites)
    assert grouped["fisher_candidate"] == pytest.approx(total)
    assert grouped["legal"] == (total >= evaluator.fisher_original)


def test_search_returns_a_faster_network_legal_by_the_exact_check(result, small_net):
    legality = result.legality
    assert legality.legal and legality.mode == "network"
    assert legality.candidate_score >= legality.original_score
    assert legality.exact["network"]["legal"] and legality.exact["network"]["legality_mode"] == "network"
    assert result.kernel_ms["ours"] < result.kernel_ms["original"]
    assert result.kernel_ms["ours"] <= result.kernel_ms["original"] / 1.6 + 1e-9 or not legality.fill_upgrades
    assert result.search["trials"] == 24 and legality.candidates == 24
    assert 0 < legality.fill_checks <= 4 and len(legality.fill_upgrades) <= legality.fill_checks
    assert result.params["ours"] < result.params["original"]
    assert result.speedup is None and result.timings_ms == {}          # measure=False
    assert [row["layer"] for row in result.layers] == [s.torch_name for s in sn.nn.transformable_convs(small_net)]
    assert sum(row["ours_ms"] for row in result.layers) < sum(row["original_ms"] for row in result.layers)
    with torch.no_grad():
        assert result.network.build((3, 32, 32))(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_network_found_is_legal_when_checked_again_from_scratch(result, data):
    x, y = data.batch(16)
    verdict = sn.proxies.LegalityCheck(mode="network").check(result.original, result.network, x, y)
    assert verdict.legal and verdict.candidate_score == pytest.approx(result.legality.candidate_score)


def test_per_layer_legality_finds_a_network_legal_in_every_layer_from_a_saved_table(small_net, data, tmp_path):
    synthetic_table(small_net, OPTIONS).save(str(tmp_path / "table.json"))
    found = sn.pte.search(small_net, data=data, legality="per_layer", trials=16, batch_size=16,
                          menu=sn.pte.LayerMenu(options=OPTIONS, max_templates=1),
                          kernel_table=sn.pte.KernelTable(path=str(tmp_path / "table.json")), measure=False)
    assert found.search["kernel_compiles"] == 0          # the saved table (empty until loaded) was used
    assert found.legality.legal and found.legality.exact["per_layer"]["failing"] == []
    assert found.kernel_ms["ours"] <= found.kernel_ms["original"]
    assert found.legality.fill_checks == 0          # no target_speedup: the fastest legal network


@pytest.mark.slow
def test_search_with_measured_kernels_is_faster_when_compiled(small_net, data, tmp_path):
    table = sn.pte.KernelTable(path=str(tmp_path / "table.json"), repeat=2)
    found = sn.pte.search(small_net, data=data, trials=24, batch_size=16, kernel_table=table,
                          menu=sn.pte.LayerMenu(options=OPTIONS, max_templates=1), rounds=3)
    assert (tmp_path / "table.json").exists() and found.search["kernel_compiles"] > 0
    assert found.legality.legal and found.speedup > 1.0
    assert {"original", "ours", "original_torch", "ours_torch"} <= set(found.timings_ms)


def test_a_saved_result_loads_back_equal_without_running_code(result, tmp_path):
    path = tmp_path / "result.json"
    result.save(str(path))
    again = sn.pte.load(str(path))
    assert pg.eq(again.network, result.network) and pg.eq(again.original, result.original)
    assert again.speedup == pytest.approx(result.speedup) and again.params == result.params
    assert again.legality == result.legality and again.choice.keys() == result.choice.keys()
    saved = json.loads(path.read_text())
    saved["network"]["_type"] = "os.system"
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="unknown type 'os.system'"):
        sn.pte.load(str(path))


def test_search_refuses_bad_arguments_by_name(small_net, data):
    with pytest.raises(ValueError, match="needs data="):
        sn.pte.search(small_net)
    with pytest.raises(ValueError, match="target_speedup must be positive"):
        sn.pte.search(small_net, data=data, target_speedup=-1)
    with pytest.raises(ValueError, match="objective='params' searches within a latency budget"):
        sn.pte.search(small_net, data=data, objective="params")
    with pytest.raises(ValueError, match="images are \\(1, 8, 8\\)"):
        sn.pte.search(small_net, data=sn.data.Digits(), batch_size=4)
    with pytest.raises(FileNotFoundError, match="CIFAR10"):
        sn.pte.search(small_net, data=sn.data.CIFAR10(root="/nonexistent/cifar"))


def test_space_over_a_network_object_shares_it_among_candidates(small_net):
    space = sn.spaces.network_transformations(small_net, menu={s.key: [[], [P.Group(2)]] for s in
                                                                 sn.nn.transformable_convs(small_net)})
    a, b = (next(pg.random_sample(space, seed=seed)) for seed in (1, 2))
    assert a.base_network is b.base_network and a.base_network.is_sealed      # shared, not copied
    assert pg.eq(a.network(), sn.nn.replace_convs(small_net, a.replacements()))
    copy = a.original()
    assert copy is not a.original() and pg.eq(copy, small_net) and not copy.is_sealed
