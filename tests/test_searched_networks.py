"""The searched networks the README reports, shipped in ``benchmarks/networks/`` so anyone can retrain them."""
import pathlib

import pyglove as pg
import pytest
import torch

import symnas as sn

NETWORKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "networks"


@pytest.fixture(scope="module")
def resnet34_pair():
    return pg.load(str(NETWORKS / "resnet34_original.json")), pg.load(str(NETWORKS / "resnet34_cold33.json"))


def test_the_cold_timed_resnet34_loads_builds_and_has_the_reported_size(resnet34_pair):
    original, ours = resnet34_pair
    assert pg.eq(original, sn.nn.resnet34())
    sites = {s.torch_name for s in sn.nn.transformable_convs(original)}
    assert {s.torch_name for s in sn.nn.transformable_convs(ours)} == sites
    assert round(sn.nn.count_params(original.build((3, 32, 32))) / 1e6, 2) == 21.28
    model = ours.build((3, 32, 32)).eval()
    assert round(sn.nn.count_params(model) / 1e6, 2) == 3.67
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_cold_timed_resnet34_is_fisher_legal_as_a_network_on_the_search_batch(
        resnet34_pair, cifar10_file, monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    x, y = load_script("benchmarks/nas_pte.py").cifar_batch(128, 0)     # the search's batch and seed
    original, ours = resnet34_pair
    result = sn.proxies.LegalityCheck(mode="network", seed=0).check(original, ours, x, y)
    assert result.legal, result.reason
    # the search's log: network 0.0007197 vs 0.0007167 (0.4% above the original)
    assert result.original_score == pytest.approx(7.167e-4, rel=1e-3)
    assert result.candidate_score == pytest.approx(7.197e-4, rel=1e-3)
    assert not sn.proxies.LegalityCheck(mode="per_layer", seed=0).check(original, ours, x, y).legal
