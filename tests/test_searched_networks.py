"""The searched networks the README reports, shipped in ``benchmarks/networks/`` so anyone can retrain them."""
import pathlib
from typing import NamedTuple

import pyglove as pg
import pytest
import torch

import symnas as sn

NETWORKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "networks"


class Shipped(NamedTuple):
    backbone: str          # the sn.nn constructor of the original
    original: str          # file names in benchmarks/networks
    ours: str
    params: tuple          # (original, ours), millions, as the README reports them
    scores: tuple          # network Fisher Potential (original, ours) on the search's batch, from its log


SHIPPED = [
    Shipped("resnet34", "resnet34_original.json", "resnet34_cold33.json", (21.28, 3.67), (7.167e-4, 7.197e-4)),
    Shipped("resnet18", "resnet18_original.json", "resnet18_warm36.json", (11.17, 2.89), (8.849e-5, 9.577e-5)),
    Shipped("resnext29_2x64d", "resnext29_original.json", "resnext29_cold36.json", (9.13, 1.91),
            (2.313e-4, 2.531e-4)),
]


@pytest.fixture(scope="module", params=SHIPPED, ids=lambda s: s.ours)
def shipped(request):
    s = request.param
    return s, sn.load(NETWORKS / s.original), sn.load(NETWORKS / s.ours)


def test_a_shipped_network_loads_builds_and_has_the_reported_size(shipped):
    s, original, ours = shipped
    assert pg.eq(original, getattr(sn.nn, s.backbone)())
    sites = {site.torch_name for site in sn.nn.transformable_convs(original)}
    assert {site.torch_name for site in sn.nn.transformable_convs(ours)} == sites
    assert round(sn.nn.count_params(original.build((3, 32, 32))) / 1e6, 2) == s.params[0]
    model = ours.build((3, 32, 32)).eval()
    assert round(sn.nn.count_params(model) / 1e6, 2) == s.params[1]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_shipped_network_is_fisher_legal_as_a_network_on_the_search_batch(shipped, cifar10_file):
    x, y = sn.data.CIFAR10(root=str(cifar10_file)).batch(128, seed=0)     # the search's batch and seed
    s, original, ours = shipped
    result = sn.proxies.LegalityCheck(mode="network", seed=0).check(original, ours, x, y)
    assert result.legal, result.reason
    assert result.original_score == pytest.approx(s.scores[0], rel=1e-3)
    assert result.candidate_score == pytest.approx(s.scores[1], rel=1e-3)
    # legal only as a whole: some of its transformed layers score below the original's, so the per-layer
    # rule (judged on these same scores) rejects it
    assert result.failing_layers
