"""Initialisation by layer name: networks that differ in some layers start identical in the rest."""
import math

import pytest
import torch

import symnas as sn


def _original_and_transformed():
    net = sn.nn.densenet((2, 2), growth=4)
    site = sn.nn.transformable_convs(net, (3, 8, 8))[1]
    sched = sn.program.Schedule(site.operator(), steps=[sn.program.Group(2)])
    return net, sn.nn.replace_convs(net, {site.path: sched}), site


def _build(net, build_seed, init_seed=None):
    """The net built after ``torch.manual_seed(build_seed)``, then initialised by name unless None."""
    torch.manual_seed(build_seed)
    model = net.build((3, 8, 8))
    return model if init_seed is None else sn.nn.init_by_name(model, seed=init_seed)


def test_layers_shared_by_name_start_identical_and_the_changed_one_differs():
    net, fast, _ = _original_and_transformed()
    pa, pb = dict(_build(net, 0, 3).named_parameters()), dict(_build(fast, 0, 3).named_parameters())
    shared = [k for k in pa if k in pb]
    assert len(shared) == len(pa) - 1 and len(shared) == len(pb) - 1
    assert all(torch.equal(pa[k], pb[k]) for k in shared)
    # without it, the smaller grouped kernel shifts the draws of every later layer
    pa, pb = dict(_build(net, 0).named_parameters()), dict(_build(fast, 0).named_parameters())
    later = [k for k in shared if k.startswith(("3.", "4.", "5."))]
    assert later and not all(torch.equal(pa[k], pb[k]) for k in later)


def test_weights_depend_on_the_seed_only_not_on_the_build_order_draws():
    net, _, _ = _original_and_transformed()
    a, b, c = _build(net, 1, 0), _build(net, 2, 0), _build(net, 2, 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    convs = [(p, q) for p, q in zip(a.parameters(), c.parameters()) if p.dim() == 4]
    assert not any(torch.equal(p, q) for p, q in convs)


def test_global_generator_is_left_as_it_was():
    net, _, _ = _original_and_transformed()
    model = net.build((3, 8, 8))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    sn.nn.init_by_name(model, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_transformed_kernel_is_reset_like_a_torch_conv():
    _, fast, site = _original_and_transformed()
    module = sn.nn.init_by_name(fast.build((3, 8, 8)), seed=0).get_submodule(site.torch_name)
    weight = module.weights[0]
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    assert weight.abs().max() <= 1 / math.sqrt(fan_in)
    before = weight.detach().clone()
    module.reset_parameters()
    assert not torch.equal(weight, before)


def test_module_with_parameters_but_no_reset_is_a_clear_error():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(TypeError, match=r"'1' \(Scale\) has parameters but no reset_parameters"):
        sn.nn.init_by_name(torch.nn.Sequential(torch.nn.Linear(3, 3), Scale()), seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        sn.nn.init_by_name(torch.nn.Linear(3, 3), seed=True)
