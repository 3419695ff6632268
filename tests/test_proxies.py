"""Zero-cost proxies checked against independent hand computations on tiny networks."""
import numpy as np
import pytest
import torch
from torch import nn

import symnas as sn
from symnas.proxies import NonFiniteScore, ProxyError


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.Flatten(), nn.Linear(12, 4, bias=False))


def tiny_batch(seed=1, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 2, 2, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_fisher_matches_numpy_hand_computation():
    net, (x, y) = tiny_net(), tiny_batch()
    wc = net[0].weight.detach().numpy()[:, :, 0, 0]           # (3, 2)
    wl = net[2].weight.detach().numpy()                        # (4, 12)
    xn, yn = x.numpy(), y.numpy()
    a = np.einsum("oc,nchw->nohw", wc, xn)                     # the conv's raw output
    logits = a.reshape(len(xn), -1) @ wl.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(4)[yn]
    g = ((p - onehot) / len(xn) @ wl).reshape(a.shape)         # dL/dA of the mean cross-entropy
    delta_c = 0.5 * np.mean(np.sum(a * g, axis=(2, 3)) ** 2, axis=0)
    expected = delta_c.sum()

    score = sn.proxies.get("fisher").score(net, x, y)
    assert score.per_layer == pytest.approx({"0": expected}, rel=1e-5)
    assert score.total == pytest.approx(expected, rel=1e-5)


def test_fisher_network_score_is_sum_of_layer_scores_matching_autograd():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(5, 10))
    x, y = torch.randn(6, 3, 5, 5), torch.randint(0, 10, (6,))
    score = sn.proxies.FisherPotential().score(net, x, y)
    # independent: activations kept explicitly and gradients taken with autograd.grad
    net.train()
    a1 = net[0](x)
    a2 = net[3](net[2](net[1](a1)))
    loss = nn.functional.cross_entropy(net[7](net[6](net[5](net[4](a2)))), y)
    g1, g2 = torch.autograd.grad(loss, [a1, a2])
    hand = [0.5 * ((a * g).sum((2, 3)) ** 2).mean(0).sum().item() for a, g in ((a1, g1), (a2, g2))]
    assert score.per_layer["0"] == pytest.approx(hand[0], rel=1e-4)
    assert score.per_layer["3"] == pytest.approx(hand[1], rel=1e-4)
    assert score.total == pytest.approx(sum(hand), rel=1e-4)


def test_fisher_hooks_backward_gives_the_scores_of_a_full_backward_without_weight_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, padding=1), nn.Flatten(), nn.Linear(5 * 25, 10))
    x, y = torch.randn(6, 3, 5, 5), torch.randint(0, 10, (6,))
    modules = {"0": net[0], "3": net[3]}
    with sn.proxies.FisherHooks(modules) as full:
        nn.functional.cross_entropy(net(x), y).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=True)
    with sn.proxies.FisherHooks(modules) as only:
        hidden = net[:3](x)
        only.backward(nn.functional.cross_entropy(net[3:](hidden), y), also=[hidden])
    assert only.scores == full.scores                   # the same gradients reach the hooked outputs
    assert hidden.grad is not None and all(p.grad is None for p in net.parameters())
    with sn.proxies.FisherHooks(modules) as twice:      # each backward spends its own pass's outputs
        for _ in range(2):
            twice.backward(nn.functional.cross_entropy(net(x), y))
    assert twice.scores == pytest.approx({n: 2 * v for n, v in full.scores.items()}, rel=1e-6)
    with sn.proxies.FisherHooks({"0": net[0]}) as none:
        with torch.no_grad():
            loss = nn.functional.cross_entropy(net(x), y)
        with pytest.raises(ProxyError, match="no hooked output"):
            none.backward(loss)


def test_fisher_hooks_named_layers_only():
    net, (x, y) = tiny_net(), tiny_batch()
    assert set(sn.proxies.get("fisher").score(net, x, y, layers=["0"]).per_layer) == {"0"}
    with pytest.raises(ProxyError, match="not modules"):
        sn.proxies.get("fisher").score(net, x, y, layers=["nope"])


def test_scores_are_deterministic_given_seed_and_batch():
    x, y = tiny_batch()
    def relu_net():
        torch.manual_seed(7)
        return nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(12, 4))
    for name in sn.proxies.available():
        a = sn.proxies.get(name, seed=3).score(relu_net(), x, y).total
        b = sn.proxies.get(name, seed=3).score(relu_net(), x, y).total
        assert a == b, name


def test_snip_and_grad_norm_match_autograd_grad():
    net, (x, y) = tiny_net(), tiny_batch()
    loss = nn.functional.cross_entropy(net(x), y)
    gc, gl = torch.autograd.grad(loss, [net[0].weight, net[2].weight])
    snip = sn.proxies.get("snip").score(net, x, y)
    assert snip.per_layer["0"] == pytest.approx((net[0].weight * gc).abs().sum().item(), rel=1e-5)
    assert snip.per_layer["2"] == pytest.approx((net[2].weight * gl).abs().sum().item(), rel=1e-5)
    gn = sn.proxies.get("gradnorm").score(net, x, y)
    assert gn.total == pytest.approx(gc.norm().item() + gl.norm().item(), rel=1e-5)


def test_synflow_of_linear_layer_is_sum_of_absolute_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, bias=False))
    before = net[1].weight.detach().clone()
    score = sn.proxies.get("synflow").score(net, torch.randn(4, 3, 2, 2))
    # R = sum_j sum_i |W_ji| * 1, so |W * dR/dW| = |W|
    assert score.total == pytest.approx(before.double().abs().sum().item(), rel=1e-12)
    assert torch.equal(net[1].weight, before)  # the caller's model is untouched


def test_naswot_matches_hand_kernel_logdet():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU())
    x = torch.randn(6, 3, 2, 2)
    c = (net[1](x.flatten(1)) > 0).double()
    k = c @ c.t() + (1 - c) @ (1 - c).t()
    expected = np.linalg.slogdet(k.detach().numpy())[1]
    assert sn.proxies.get("naswot").score(net, x).total == pytest.approx(expected, rel=1e-9)


def test_unknown_proxy_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown proxy 'fishr'.*fisher"):
        sn.proxies.get("fishr")


def test_nan_weights_raise_non_finite_score_with_reason():
    net, (x, y) = tiny_net(), tiny_batch()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    for name in ("fisher", "snip", "grad_norm"):
        with pytest.raises(NonFiniteScore) as info:
            sn.proxies.get(name).score(net, x, y)
        assert "non-finite" in info.value.reason


def test_batch_of_wrong_shape_is_a_clear_error():
    net, (x, y) = tiny_net(), tiny_batch()
    with pytest.raises(ProxyError, match=r"batch of shape \(5, 3, 2, 2\) does not fit"):
        sn.proxies.get("fisher").score(net, torch.randn(5, 3, 2, 2), y)
    with pytest.raises(ProxyError, match="targets must be a 1-D tensor of 5"):
        sn.proxies.get("fisher").score(net, x, y[:3])


def test_fisher_without_conv_layer_is_a_clear_error():
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 4))
    x, y = tiny_batch()
    with pytest.raises(ProxyError, match="no transformable"):
        sn.proxies.get("fisher").score(net, x, y)


def test_fisher_detects_in_place_change_of_hooked_output():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(12, 4))
    x, y = tiny_batch()
    with pytest.raises(ProxyError, match="modified in place"):
        sn.proxies.get("fisher").score(net, x, y)


@pytest.mark.parametrize("proxy", ["fisher", "snip", "grad_norm", "synflow"])
def test_a_transformed_conv_scores_like_the_torch_conv_it_computes(proxy):
    # a transformed kernel's module keeps its weights as "weights.0", ...; weight-based proxies once
    # skipped such layers, so whole-network scores silently left every transformed layer out
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    op = sn.program.Conv2d(c_in=4, c_out=6, h=4, w=4, k=3)
    transformed = sn.program.Schedule(op, []).to_torch([conv.weight.detach()])

    def net(layer):
        torch.manual_seed(1)
        head = nn.Linear(96, 3, bias=False)
        return nn.Sequential(layer, nn.ReLU(), nn.Flatten(), head)
    x, y = torch.randn(5, 4, 4, 4, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        torch.testing.assert_close(transformed(x), conv(x), atol=1e-5, rtol=1e-5)
    reference = sn.proxies.get(proxy).score(net(conv), x, y)
    score = sn.proxies.get(proxy).score(net(transformed), x, y)
    assert "0" in score.per_layer and score.per_layer["0"] > 0
    assert score.per_layer["0"] == pytest.approx(reference.per_layer["0"], rel=1e-4)
    assert score.total == pytest.approx(reference.total, rel=1e-4)
