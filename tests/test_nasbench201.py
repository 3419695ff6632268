"""NAS-Bench-201 space: arch strings, table lookups against official NATS values, the torch network."""
import json
import random
import statistics

import pyglove as pg
import pytest

import symnas as sn
from symnas.spaces.nasbench201 import NB201_OPS, NASBench201, load_nasbench201_table

RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def test_space_is_six_edges_of_five_ops():
    spec = pg.dna_spec(NASBench201())
    assert len(spec.decision_points) == 6
    assert spec.space_size == 15625
    assert all(list(dp.literal_values) == [repr(op) for op in NB201_OPS] for dp in spec.decision_points)


def test_arch_string_round_trips_and_follows_nb201_edge_order():
    arch = NASBench201.from_arch_str(RESNET)
    assert list(arch.ops) == ["nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none",
                              "skip_connect"]
    assert arch.arch_str == RESNET
    assert arch.ops_code == "303101"


def test_bad_arch_string_is_rejected():
    with pytest.raises(ValueError, match="arch string"):
        NASBench201.from_arch_str("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="node 2"):
        NASBench201.from_arch_str("|none~0|+|none~0|+|none~0|none~1|none~2|")


def test_space_refuses_table_queries_until_materialised():
    with pytest.raises(ValueError, match="search space"):
        NASBench201().arch_str


def test_missing_table_names_the_file_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("SYMNAS_DATA", raising=False)
    arch = NASBench201.from_arch_str(RESNET)
    with pytest.raises(FileNotFoundError, match="SYMNAS_DATA"):
        arch.lookup()
    monkeypatch.setenv("SYMNAS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nb201_tss_all.csv.gz.*SYMNAS_DATA"):
        arch.lookup()
    with pytest.raises(FileNotFoundError, match="missing.csv.gz"):
        NASBench201.from_arch_str(RESNET, table=str(tmp_path / "missing.csv.gz")).lookup()


def test_table_matches_official_nats_values_for_arch_0_11_284(nasbench201_table):
    check = json.loads((nasbench201_table.parent / "nats_official_3arch_check.json").read_text())
    for index, info in check["archs"].items():
        arch = NASBench201.from_arch_str(info["arch"], table=str(nasbench201_table))
        assert arch.index == int(index)
        runs12 = [r for r in info["hp"]["12"] if r["dataset"] == "cifar10-valid"]
        runs200 = [r for r in info["hp"]["200"] if r["dataset"] == "cifar10"]
        assert arch.query("valid_12") == pytest.approx(
            statistics.mean(r["eval_acc"]["x-valid"] for r in runs12), abs=1e-6)
        assert arch.query("train_time_12") == pytest.approx(runs12[0]["train_all_time"], rel=1e-9)
        assert arch.query("test") == pytest.approx(
            statistics.mean(r["eval_acc"]["ori-test"] for r in runs200), abs=1e-6)
        assert arch.query("c10v_valid_12") == arch.query("valid_12")


def test_resnet_and_optimum_match_published_facts(nasbench201_table):
    resnet = NASBench201.from_arch_str(RESNET, table=str(nasbench201_table))
    assert resnet.index == 11472
    assert resnet.query("test") == pytest.approx(93.91, abs=0.005)
    table = load_nasbench201_table(nasbench201_table)
    test = table.column("c10_test_200")
    assert int(test.argmax()) == 6111 and test.max() == pytest.approx(94.37, abs=0.005)
    best = NASBench201.from_index(6111, table=str(nasbench201_table))
    assert best.query() == pytest.approx(94.3733, abs=1e-4)
    with pytest.raises(KeyError, match="no_such_metric"):
        best.query("no_such_metric")


def test_index_round_trips_through_arch_string(nasbench201_table):
    table = load_nasbench201_table(nasbench201_table)
    assert load_nasbench201_table(nasbench201_table) is table   # loaded once, then cached
    for index in random.Random(0).sample(range(15625), 50):
        arch = NASBench201.from_index(index, table=str(nasbench201_table))
        assert arch.index == index and arch.arch_str == table.rows[index]["arch"]


def test_search_with_evolution_queries_the_table(nasbench201_table):
    space = NASBench201(table=str(nasbench201_table))
    best = 0.0
    for arch, feedback in pg.sample(space, sn.algorithms.RegularizedEvolution(seed=0),
                                    num_examples=40):
        accuracy = arch.query("valid_12")
        feedback(accuracy)
        best = max(best, accuracy)
    assert best > 80.0


def _expected_parameters(ops, C=16, N=5, num_classes=10):
    """Parameter count of the NB201 network, counted by hand from its layer shapes."""
    def relu_conv_bn(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out
    per_op = {"nor_conv_3x3": lambda c: relu_conv_bn(c, c, 3),
              "nor_conv_1x1": lambda c: relu_conv_bn(c, c, 1)}
    total = 3 * C * 9 + 2 * C                                   # stem conv + BN
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage:
            c_in = c // 2                                        # ResNet reduction block
            total += relu_conv_bn(c_in, c, 3) + relu_conv_bn(c, c, 3) + c_in * c
        total += N * sum(per_op.get(op, lambda _: 0)(c) for op in ops)
    return total + 2 * 4 * C + 4 * C * num_classes + num_classes   # last BN, classifier


@pytest.mark.parametrize("arch_str", [
    RESNET,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
])
def test_network_parameter_count_matches_hand_count(arch_str):
    torch = pytest.importorskip("torch")
    arch = NASBench201.from_arch_str(arch_str)
    net = arch.build()
    count = sum(p.numel() for p in net.parameters())
    assert count == _expected_parameters(list(arch.ops))
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


def test_network_parameter_range_matches_nb201_paper():
    # NB201 reports 0.07 MB .. 1.53 MB of parameters on CIFAR-10 (none-only .. conv3x3-only cells).
    smallest = NASBench201(ops=["none"] * 6).build()
    largest = NASBench201(ops=["nor_conv_3x3"] * 6).build()
    assert sum(p.numel() for p in smallest.parameters()) == 73306
    assert sum(p.numel() for p in largest.parameters()) == 1531546
