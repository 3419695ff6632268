"""Fisher Potential legality: both scores recorded, per-layer and network modes, cached isolated scoring."""
import pytest
import torch

import symnas as sn


def tiny_resnet():
    return sn.nn.resnet((1, 1, 1, 1), width=8)


SHAPE = (3, 8, 8)


def batch(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_seeded_build_shares_weights_of_unchanged_layers():
    net = tiny_resnet()
    site = sn.nn.transformable_convs(net, SHAPE)[0]
    cand = sn.nn.replace_convs(net, {site.path: sn.nn.Conv(8, 3, groups=2)})
    a = sn.proxies.seeded_build(net, SHAPE, seed=1)
    b = sn.proxies.seeded_build(cand, SHAPE, seed=1)
    other = sn.nn.transformable_convs(net, SHAPE)[3].torch_name
    assert torch.equal(a.get_submodule(other).weight, b.get_submodule(other).weight)
    assert a.get_submodule(site.torch_name).weight.shape != b.get_submodule(site.torch_name).weight.shape


def test_unchanged_network_is_legal_with_equal_scores():
    net, (x, y) = tiny_resnet(), batch()
    result = sn.proxies.LegalityCheck(in_shape=SHAPE).check(net, net.clone(deep=True), x, y)
    assert result.legal and result.reason == "legal"
    assert result.original_score == pytest.approx(result.candidate_score)
    metrics = result.as_metrics()
    assert set(metrics) >= {"fisher_original", "fisher_candidate", "legal", "reason"}


def test_per_layer_rule_compares_each_transformed_layer_with_the_original():
    net, (x, y) = tiny_resnet(), batch()
    sites = sn.nn.transformable_convs(net, SHAPE)
    cand = sn.nn.replace_convs(net, {s.path: sn.nn.Conv(s.out_shape[0], 3, stride=s.layer.stride, groups=8)
                                     for s in sites})
    check = sn.proxies.LegalityCheck(in_shape=SHAPE)
    result = check.check(net, cand, x, y)
    assert set(result.per_layer) == {s.torch_name for s in sites}
    expected = all(c >= o for o, c in result.per_layer.values())
    assert result.legal == expected
    if not result.legal:
        assert "below the original" in result.reason and result.failing_layers
    network = sn.proxies.LegalityCheck(in_shape=SHAPE, mode="network").check(net, cand, x, y)
    assert network.legal == (network.candidate_score >= network.original_score)


def test_tail_isolated_score_equals_full_check_of_a_single_layer_change():
    net, (x, y) = tiny_resnet(), batch()
    site = sn.nn.transformable_convs(net, SHAPE)[2]
    replacement = sn.nn.Conv(site.out_shape[0], 3, stride=site.layer.stride, groups=2)
    check = sn.proxies.LegalityCheck(in_shape=SHAPE, seed=3)
    full = check.check(net, sn.nn.replace_convs(net, {site.path: replacement}), x, y)
    scorer = check.isolated_scorer(net, x, y, context="tail")
    assert scorer.score(site.path, replacement) == pytest.approx(full.per_layer[site.torch_name][1], rel=1e-4)
    assert scorer.original_scores[site.torch_name] == pytest.approx(full.per_layer[site.torch_name][0], rel=1e-4)
    assert scorer.check({site.path: replacement}).legal == full.legal


def test_block_isolated_score_approximates_tail_score_for_the_last_block_and_is_cached():
    net, (x, y) = tiny_resnet(), batch()
    site = sn.nn.transformable_convs(net, SHAPE)[-1]   # after it only pooling and the classifier
    replacement = sn.nn.Conv(site.out_shape[0], 3, groups=4)
    check = sn.proxies.LegalityCheck(in_shape=SHAPE)
    block = check.isolated_scorer(net, x, y, context="block")
    tail = check.isolated_scorer(net, x, y, context="tail")
    # only the softmax after the block sees a changed input: first-order agreement
    assert block.score(site.path, replacement) == pytest.approx(tail.score(site.path, replacement), rel=0.1)
    block.score(site.path, replacement)
    assert block.evaluations == 1


def test_schedule_replacement_is_scored_through_its_torch_module():
    net, (x, y) = tiny_resnet(), batch()
    site = sn.nn.transformable_convs(net, SHAPE)[1]
    sched = sn.program.Schedule(site.operator(), steps=[sn.program.Group(2)])
    scorer = sn.proxies.LegalityCheck(in_shape=SHAPE).isolated_scorer(net, x, y)
    result = scorer.check({site.path: sched})
    assert result.per_layer[site.torch_name][1] > 0
    assert result.legal == (result.per_layer[site.torch_name][1] >= result.per_layer[site.torch_name][0])


class _NaNConv2d(torch.nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * float("nan")


class NaNConv(sn.nn.Conv):
    def _build(self, in_shape):
        return _NaNConv2d(in_shape[0], self.out_channels, 3, padding=1)


def test_nan_candidate_is_rejected_with_the_reason():
    net, (x, y) = tiny_resnet(), batch()
    site = sn.nn.transformable_convs(net, SHAPE)[0]
    check = sn.proxies.LegalityCheck(in_shape=SHAPE)
    result = check.check(net, sn.nn.replace_convs(net, {site.path: NaNConv(8)}), x, y)
    assert not result.legal and "non-finite" in result.reason
    scored = check.isolated_scorer(net, x, y).check({site.path: NaNConv(8)})
    assert not scored.legal and "non-finite" in scored.reason


def test_bad_mode_proxy_and_batch_are_clear_errors():
    with pytest.raises(ValueError, match="legality mode"):
        sn.proxies.LegalityCheck(mode="sometimes")
    with pytest.raises(ValueError, match="unknown proxy"):
        sn.proxies.LegalityCheck(proxy="fishy")
    net = tiny_resnet()
    with pytest.raises(sn.proxies.ProxyError, match="does not fit"):
        sn.proxies.LegalityCheck(in_shape=SHAPE).check(net, net, torch.randn(4, 1, 8, 8),
                                                       torch.zeros(4, dtype=torch.long))


def test_block_score_of_an_unchanged_layer_reproduces_its_original_score():
    # the block's backward stops at the scored layer's output (no weight gradients, nothing
    # before it); the gradient there must still be the full network's
    net, (x, y) = tiny_resnet(), batch()
    scorer = sn.proxies.LegalityCheck(in_shape=SHAPE).isolated_scorer(net, x, y, context="block")
    for site in sn.nn.transformable_convs(net, SHAPE)[:4]:      # first and second conv of two blocks
        same = sn.nn.Conv(site.out_shape[0], site.layer.kernel, stride=site.layer.stride,
                          padding=site.layer.padding)
        assert scorer.score(site.path, same) == pytest.approx(scorer.original_scores[site.torch_name], rel=1e-5)


def two_branch_net():
    n = sn.nn
    branch = lambda width, k: n.Sequential([n.BatchNorm(), n.ReLU(), n.Conv(width, k, padding=k // 2)])
    return n.Sequential([n.Conv(8, 3), n.Concat([branch(4, 3), branch(8, 1)], include_input=True),
                         n.Concat([branch(8, 1), branch(4, 3)]), n.BatchNorm(), n.ReLU(), n.GlobalPool(),
                         n.Dense(10)])


@pytest.mark.parametrize("net", [tiny_resnet(), sn.nn.densenet((2, 2), growth=4), two_branch_net()],
                         ids=["residual", "dense", "two-branch"])
def test_block_score_from_the_layer_on_equals_running_the_whole_block(net):
    # the block context computes the layers before the replaced one (and the shortcut) once, and in
    # a concatenation runs only the branch, with its slice of the block's gradient; scores must be
    # those of running the whole block every time
    from symnas.proxies import base
    x, y = batch()
    scorer = sn.proxies.LegalityCheck(in_shape=SHAPE).isolated_scorer(net, x, y, context="block")
    whole = sn.proxies.LegalityCheck(in_shape=SHAPE).isolated_scorer(net, x, y, context="block")
    whole._run_block_from = lambda top, block, inner: (base.run_forward(block, whole._block_inputs[top]),
                                                       whole._block_grads[top])
    sites = sn.nn.transformable_convs(net, SHAPE)
    assert {s.path.split(".")[-1] for s in sites} != {"layers[0]"}      # layers after the first of a body
    for site in sites:
        grouped = sn.nn.Conv(site.out_shape[0], site.layer.kernel, stride=site.layer.stride,
                             padding=site.layer.padding, groups=2)
        for replacement in (grouped, grouped.clone(override={"groups": 4})):   # the second reuses the prefix
            assert scorer.score(site.path, replacement) == pytest.approx(whole.score(site.path, replacement),
                                                                        rel=1e-6)
    assert scorer._prefix_cache                                         # the shortcut path was taken


def test_released_scorer_keeps_its_scores_and_refuses_new_ones():
    net, (x, y) = tiny_resnet(), batch()
    scorer = sn.proxies.LegalityCheck(in_shape=SHAPE).isolated_scorer(net, x, y, context="block")
    first, second = sn.nn.transformable_convs(net, SHAPE)[:2]
    grouped = sn.nn.Conv(first.out_shape[0], first.layer.kernel, stride=first.layer.stride,
                         padding=first.layer.padding, groups=2)
    score = scorer.score(first.path, grouped)
    scorer.release()
    assert scorer.model is None and not scorer._prefix_cache
    assert scorer.score(first.path, grouped) == score                   # from the cache
    with pytest.raises(RuntimeError, match="released"):
        scorer.score(second.path, grouped)
