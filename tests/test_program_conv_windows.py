"""sn.program convolutions with dilation and rectangular (k x 1, 1 x k, kh x kw) windows."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import symnas as sn
from symnas import program as P

CASES = [
    dict(c_in=16, c_out=16, h=12, w=12, k=3, dilation=2),
    dict(c_in=16, c_out=32, h=13, w=12, k=3, dilation=3, stride=2),
    dict(c_in=16, c_out=16, h=12, w=12, k=3, kw=1),
    dict(c_in=16, c_out=16, h=12, w=10, k=1, kw=7),
    dict(c_in=16, c_out=16, h=12, w=12, k=1, kw=7, groups=4, stride=2),
    dict(c_in=16, c_out=16, h=12, w=12, k=5, kw=3, groups=16, dilation=2),      # depthwise
    dict(c_in=16, c_out=16, h=12, w=12, k=3, kw=1, padding=(2, 1), dilation=2),
]


def _reference(op, x, weight):
    return F.conv2d(torch.tensor(x), torch.tensor(weight), stride=op.stride, padding=op.pads,
                    dilation=op.dilation, groups=op.groups).numpy()


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()
                                                                 if k not in ("c_in", "h", "w")))
def test_dilated_and_rectangular_tvm_conv_matches_torch_conv2d(case):
    op = P.Conv2d(**case)
    templates = P.cpu_templates(op)
    assert templates, "no CPU template fits"
    for steps in (templates[0], templates[-1]):
        schedule = P.Schedule(op, steps)
        x, weights = schedule.random_inputs(seed=1)
        expected = _reference(op, x, weights[0])
        got = schedule.run(x, weights)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        module = schedule.to_torch(weights)
        np.testing.assert_allclose(module(torch.tensor(x)).detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_default_padding_is_half_the_dilated_window_per_axis():
    op = P.Conv2d(c_in=4, c_out=4, h=9, w=9, k=3, kw=1, dilation=2)
    assert op.window == (3, 1) and op.pads == (2, 0)
    kernel = op.kernel()
    assert (kernel.kh, kernel.kw, kernel.padding, kernel.dilation) == (3, 1, (2, 0), 2)
    assert kernel.output_shape() == (1, 4, 9, 9)
    assert kernel.weight_shapes() == [(4, 4, 3, 1)]
    assert kernel.flops() == 2 * 4 * 9 * 9 * 4 * 3
    assert op.loop_extents()["kh"] == 3 and op.loop_extents()["kw"] == 1
    # an untouched square conv keeps its old kernel (the same fields, so the same cache keys)
    square = P.Conv2d(c_in=4, c_out=4, h=9, w=9).kernel()
    assert (square.k_w, square.pad_w, square.dilation) == (0, -1, 1)


def test_conv_operator_rejects_bad_padding_and_dilation():
    with pytest.raises(ValueError, match="padding"):
        P.Conv2d(c_in=4, c_out=4, h=8, w=8, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="dilation"):
        P.Conv2d(c_in=4, c_out=4, h=8, w=8, dilation=0)
    with pytest.raises(ValueError, match="empty output"):
        P.Conv2d(c_in=4, c_out=4, h=4, w=4, k=3, dilation=3, padding=0).kernel()


def test_neural_steps_on_a_dilated_rectangular_conv_keep_tvm_and_torch_equal():
    op = P.Conv2d(c_in=16, c_out=16, h=12, w=12, k=3, kw=1, dilation=2)
    for neural in ([P.Group(2), P.Bottleneck(2, axis="oh")], [P.Partition("co", 2), P.Group(4, part=1)]):
        schedule = P.Schedule(op, neural + P.cpu_conv_template(co_block=4, oh_block=1))
        x, weights = schedule.random_inputs(seed=2)
        expected = schedule.to_torch(weights)(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(schedule.run(x, weights), expected, rtol=1e-4, atol=1e-4)


def test_measure_times_a_one_by_seven_conv():
    op = P.Conv2d(c_in=16, c_out=16, h=16, w=16, k=1, kw=7)
    measurement = P.Schedule(op, P.cpu_templates(op)[0]).measure(repeat=2, min_repeat_ms=1.0)
    assert measurement.latency_ms > 0
    assert P.time_torch_conv(op, repeat=2) > 0


def test_compile_network_runs_dilated_and_rectangular_convs_as_tvm_kernels():
    L = sn.nn
    net = L.Sequential([L.Conv(16, (3, 1)), L.BatchNorm(), L.ReLU(), L.Conv(16, (1, 3)),
                        L.Conv(16, 3, dilation=2, depthwise=True), L.Conv(32, (1, 7), stride=2, groups=4),
                        L.BatchNorm(), L.Conv(32, 3, dilation=2, padding=(3, 1))])
    model = net.build((8, 16, 16)).eval()
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        expected = model(x)
    fast = sn.nn.compile_network(net, model, in_shape=(8, 16, 16), tune=False)
    assert fast.fallbacks == {}
    assert len(fast.schedules) == 5
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)     # the flat plan
    assert fast.plan_status.startswith("flat plan")


def test_compile_network_leaves_a_conv_with_unequal_strides_in_torch():
    net = sn.nn.Sequential([sn.nn.Conv(8, (3, 1), stride=(2, 1))])
    model = net.build((4, 8, 8)).eval()
    fast = sn.nn.compile_network(net, model, in_shape=(4, 8, 8), tune=False)
    assert "stride" in fast.fallbacks["0"]
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))
