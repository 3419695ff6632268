"""sn.kas kernels with k x 1 / 1 x k windows and dilation lower to sn.nn convs and run as TVM kernels."""
import pytest
import torch

import symnas as sn
from symnas.kas.compile import kernel_backend

P = sn.kas.primitives


def _lowered(kernel, env, in_shape):
    module = sn.kas.KernelModule(kernel, env).eval()
    layers = sn.kas.lower_to_layers(kernel, module.env)
    assert layers is not None
    net = sn.nn.Sequential(layers)
    built = net.build(in_shape).eval()
    sn.kas.transfer_weights(module, kernel, built)
    return module, net, built


@pytest.mark.parametrize("stride", [1, 2])
def test_spatially_separable_kernel_lowers_to_k_by_1_and_1_by_k_convs_equal_to_its_module(stride):
    kernel = sn.kas.spatially_separable()
    env = {"C": 16, "O": 32, "H": 8, "W": 8, "S": stride, "x0": 8}
    module, net, built = _lowered(kernel, env, (16, 8, 8))
    convs = [layer for layer in net.layers if isinstance(layer, sn.nn.Conv)]
    assert [c.kernel for c in convs] == [(3, 1), (1, 3)]
    assert [c.out_channels for c in convs] == [8, 32]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(built(x), module(x), atol=1e-4, rtol=1e-4)
        assert built(x).shape == (2, 32, 8 // stride, 8 // stride)


@pytest.mark.parametrize("kernel, expected", [
    (sn.kas.Kernel([P.Unfold("HW", 3, 2), P.Scale("channel"), P.Fold("K"), P.FC("O")]),
     [((3, 3), 2, True), ((1, 1), 1, False)]),                          # dilated depthwise-separable
    (sn.kas.Kernel([P.Group("G"), P.Unfold("W", 5, 3), P.FC("x0"), P.Activation("relu"), P.Conv(3, 1, 2, False, "O")],
                   groups=4),
     [((1, 5), 3, False), ((3, 1), 2, False)]),                         # grouped, dilated 1 x 5, then a 3 x 1 conv
    (sn.kas.Kernel([P.Conv(1, 7, 1, True, "C"), P.FC("O")]), [((1, 7), 1, True), ((1, 1), 1, False)]),
])
def test_dilated_and_rectangular_kernels_lower_to_convs_equal_to_their_module(kernel, expected):
    env = {"C": 16, "O": 16, "H": 12, "W": 12, "S": 1, "x0": 16, "G": 4}
    module, net, built = _lowered(kernel, env, (16, 12, 12))
    convs = [layer for layer in net.layers if isinstance(layer, sn.nn.Conv)]
    got = [((c.kernel, c.kernel) if isinstance(c.kernel, int) else tuple(c.kernel), c.dilation, c.depthwise)
           for c in convs]
    assert got == expected
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(built(x), module(x), atol=1e-4, rtol=1e-4)


def test_kernels_that_are_no_conv_chain_still_do_not_lower():
    env = {"C": 16, "O": 16, "H": 8, "W": 8, "S": 1, "G": 4}
    assert sn.kas.lower_to_layers(sn.kas.involution(), env) is None
    shifted = sn.kas.Kernel([P.Shift("H", 1), P.FC("O")])
    assert sn.kas.lower_to_layers(shifted, env) is None


@pytest.mark.parametrize("name", ["spatially_separable", "dilated_depthwise"])
def test_compiled_kernel_runs_through_tvm_and_equals_the_torch_module(name):
    kernel = (sn.kas.spatially_separable() if name == "spatially_separable" else
              sn.kas.Kernel([P.Unfold("HW", 3, 2), P.Scale("channel"), P.Fold("K"), P.FC("O")]))
    env = {"C": 16, "O": 16, "H": 8, "W": 8, "S": 1, "x0": 8}
    module = sn.kas.KernelModule(kernel, env).eval()
    assert kernel_backend(kernel, module.env) == "tvm"
    run, backend = sn.kas.compile_kernel(kernel, env, module=module)
    assert backend == "tvm"
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(run(x), module(x), atol=1e-4, rtol=1e-4)


def test_lowered_resnet_with_a_spatially_separable_kernel_compiles_every_conv_to_tvm(small_kernel_resnet):
    _, fast = small_kernel_resnet(sn.kas.spatially_separable())
    lowered, count, total = sn.kas.lower_network(fast)
    assert count == total > 0
    model = lowered.build((3, 32, 32)).eval()
    sn.nn.init_by_name(model, seed=0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(lowered, model, tune=False)
    assert compiled.fallbacks == {}
    windows = set()
    for schedule in compiled.schedules.values():       # a Schedule, or a ConvChain of a kernel's two convs
        ops = (schedule.first, schedule.second) if isinstance(schedule, sn.program.ConvChain) else (schedule.op,)
        windows.update(op.window for op in ops)
    assert {(3, 1), (1, 3)} <= windows
    torch.testing.assert_close(compiled(x), expected, atol=1e-3, rtol=1e-3)


def test_lowered_kernels_are_spliced_so_batch_norm_relu_and_residual_add_fuse_into_their_last_conv(
        small_kernel_resnet):
    lowered, count, total = sn.kas.lower_network(small_kernel_resnet(sn.kas.depthwise_separable())[1])
    assert count == total == 8
    body = lowered.layers[3].body.layers         # depthwise, pointwise, BN, ReLU, depthwise, pointwise, BN
    assert [type(layer).__name__ for layer in body] == ["Conv", "Conv", "BatchNorm", "ReLU", "Conv", "Conv",
                                                        "BatchNorm"]
    torch.manual_seed(0)
    model = lowered.build((3, 32, 32)).train()
    with torch.no_grad():                        # batch norms far from the identity, so folding shows
        for _ in range(3):
            model(3 * torch.randn(8, 3, 32, 32) + 1)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(lowered, model, tune=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in compiled.model.modules())
    ends = sorted(n for n, what in compiled.fused.items() if what == "batch norm + residual add + ReLU")
    assert ends == ["3.body.5", "4.body.5", "5.body.5", "6.body.5"]
    torch.testing.assert_close(compiled(x), expected, atol=1e-3, rtol=1e-3)
