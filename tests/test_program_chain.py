"""sn.program.ConvChain: a kernel's two convs as one TVM function, fused at row tiles or not."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import symnas as sn

P = sn.program


def _reference(chain, x, weights):
    a, b = chain.first, chain.second
    y = F.conv2d(torch.tensor(x), torch.tensor(weights[0]), stride=a.stride, padding=a.pads, dilation=a.dilation,
                 groups=a.groups)
    if chain.relu:
        y = y.relu()
    return F.conv2d(y, torch.tensor(weights[1]), stride=b.stride, padding=b.pads, dilation=b.dilation,
                    groups=b.groups).numpy()


CHAINS = {
    "depthwise_then_pointwise": (P.Conv2d(c_in=16, c_out=16, h=8, w=8, k=3, groups=16),
                                 P.Conv2d(c_in=16, c_out=32, h=8, w=8, k=1)),
    "k_by_1_stride_2_then_1_by_k": (P.Conv2d(c_in=16, c_out=8, h=8, w=8, k=3, kw=1, stride=2),
                                    P.Conv2d(c_in=8, c_out=16, h=4, w=4, k=1, kw=3)),
    "k_by_1_then_1_by_k_stride_2": (P.Conv2d(c_in=16, c_out=8, h=8, w=8, k=3, kw=1),
                                    P.Conv2d(c_in=8, c_out=16, h=8, w=8, k=1, kw=3, stride=2)),
    "dilated_depthwise_then_pointwise": (P.Conv2d(c_in=16, c_out=16, h=12, w=12, k=3, groups=16, dilation=2),
                                         P.Conv2d(c_in=16, c_out=16, h=12, w=12, k=1)),
}


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("relu", [False, True])
def test_fused_and_unfused_chains_equal_two_torch_convs(name, relu):
    first, second = CHAINS[name]
    one, fused = P.chain_candidates(first, second, relu=relu)
    assert one and (fused or second.stride > 1)
    for chain in [one[0], one[-1]] + ([fused[0], fused[-1]] if fused else []):
        x, weights = chain.random_inputs(seed=3)
        np.testing.assert_allclose(chain.run(x, weights), _reference(chain, x, weights), rtol=1e-4, atol=1e-4)


def test_fused_chain_computes_the_first_conv_under_the_row_tile_loop():
    first, second = CHAINS["depthwise_then_pointwise"]
    chain = P.ConvChain(first, second, second_steps=P.row_tile_template(8, 2), fuse_at="n*oh.0")
    script = chain.lower().script()
    parallel = script.index("T.parallel")
    assert script.index('T.sblock("conv1') > parallel      # inside the parallel row-tile loop
    assert chain.measure(repeat=1, min_repeat_ms=1.0).latency_ms > 0


def test_chain_rejects_mismatched_convs_and_unknown_fuse_loops():
    first, second = CHAINS["depthwise_then_pointwise"]
    with pytest.raises(ValueError, match="makes"):
        P.ConvChain(second, first).kernels()
    with pytest.raises(P.IllegalTransformation, match="fuse_at"):
        P.ConvChain(first, second, second_steps=P.row_tile_template(8, 2), fuse_at="co.7").lower()


def test_kas_conv_chain_builds_the_spatially_separable_kernels_two_convs():
    env = {"C": 16, "O": 32, "H": 8, "W": 8, "S": 2, "x0": 8}
    chain = sn.kas.conv_chain(sn.kas.spatially_separable(), env)
    assert (chain.first.window, chain.second.window) == ((3, 1), (1, 3))
    # the 3 x 1 conv's output is read by an unfold, so it is computed at full resolution: the 1 x 3 strides
    assert (chain.first.stride, chain.second.stride, chain.first.c_out, chain.second.c_out) == (1, 2, 8, 32)
    assert chain.output_shape == (1, 32, 4, 4)
    assert sn.kas.conv_chain(sn.kas.bottleneck_separable(), dict(env, x0=8)) is None    # three convs
    kernel = sn.kas.depthwise_separable()
    module = sn.kas.KernelModule(kernel, {"C": 16, "O": 32, "H": 8, "W": 8, "S": 1}).eval()
    chain = sn.kas.conv_chain(kernel, module.env)
    built = sn.nn.Sequential(sn.kas.lower_to_layers(kernel, module.env)).build((16, 8, 8)).eval()
    sn.kas.transfer_weights(module, kernel, built)
    weights = [m.weight.detach().numpy() for m in built.modules() if isinstance(m, torch.nn.Conv2d)]
    x = torch.randn(1, 16, 8, 8)
    fused = P.chain_candidates(chain.first, chain.second)[1][0]
    with torch.no_grad():
        np.testing.assert_allclose(fused.run(x, weights), module(x).numpy(), rtol=1e-4, atol=1e-4)


def test_compile_network_fuses_a_kernels_two_convs_into_one_tvm_function():
    L = sn.nn
    body = L.Sequential([L.Conv(16, 3, depthwise=True), L.Conv(32, 1), L.BatchNorm(), L.ReLU(),
                         L.Conv(16, (3, 1)), L.ReLU(), L.Conv(16, (1, 3)), L.BatchNorm()])
    net = L.Sequential([L.Residual(body, post=L.ReLU())])
    model = net.build((16, 8, 8)).eval()
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(net, model, in_shape=(16, 8, 8), tune=False)
    assert compiled.fallbacks == {}
    chains = [s for s in compiled.schedules.values() if isinstance(s, P.ConvChain)]
    assert len(chains) == 2 and len(compiled.schedules) == 2
    assert sum("computed in" in v for v in compiled.fused.values()) == 2
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)     # the flat plan
    assert compiled.plan_status.startswith("flat plan: 2 kernels")
    apart = sn.nn.compile_network(net, net.build((16, 8, 8)), in_shape=(16, 8, 8), tune=False, fuse_chains=False)
    assert len(apart.schedules) == 4
