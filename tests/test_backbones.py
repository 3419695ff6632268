"""Symbolic CIFAR backbones: parameter counts, transformable convs and rebinding to transformed kernels."""
import pytest
import torch

import symnas as sn


@pytest.mark.parametrize("name,params_m,sites", [("resnet18", 11.17, 16), ("resnet34", 21.28, 32),
                                                  ("resnext29_2x64d", 9.13, 27), ("densenet161", 26.48, 156)])
def test_backbone_has_published_size_and_transformable_convs(name, params_m, sites):
    net = sn.nn.backbone(name)
    model = net.build((3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, abs=0.01)
    found = sn.nn.transformable_convs(net)
    assert len(found) == sites
    modules = dict(model.named_modules())
    assert all(isinstance(modules[s.torch_name], torch.nn.Conv2d) for s in found)
    assert all(modules[s.torch_name].out_channels == s.out_shape[0] for s in found)


def test_resnet18_runs_on_tiny_input_and_gives_logits():
    model = sn.nn.resnet18().build((3, 8, 8)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_densenet_layer_sites_follow_growing_channels():
    net = sn.nn.densenet((2, 2), growth=4)
    sites = sn.nn.transformable_convs(net, (3, 8, 8))
    assert [s.in_shape[0] for s in sites] == [8, 16, 12, 16, 8, 16, 12, 16]
    assert sites[0].path == "layers[1].branches[0].layers[2]"


def test_replacing_a_conv_with_a_schedule_builds_the_transformed_kernel():
    net = sn.nn.resnet18()
    site = sn.nn.transformable_convs(net)[0]
    sched = sn.program.Schedule(site.operator(), steps=[sn.program.Group(2)])
    fast = sn.nn.replace_convs(net, {site.path: sched})
    assert isinstance(fast.sym_get(site.path), sn.nn.TransformedConv)
    assert isinstance(net.sym_get(site.path), sn.nn.Conv)          # the original is untouched
    model = fast.build((3, 32, 32))
    module = model.get_submodule(site.torch_name)
    assert sum(p.numel() for p in module.parameters()) == 64 * 32 * 9
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_transformed_conv_computes_what_the_schedule_computes():
    net = sn.nn.resnet18()
    site = sn.nn.transformable_convs(net)[2]
    sched = sn.program.Schedule(site.operator(), steps=[sn.program.Group(4)])
    layer = sn.nn.TransformedConv(sched)
    assert layer.output_shape(site.in_shape) == site.out_shape
    torch.manual_seed(0)
    module = layer.build(site.in_shape)
    x = torch.randn(1, *site.in_shape)
    expected = torch.nn.functional.conv2d(x, module.weights[0], padding=1, groups=4)
    assert torch.allclose(module(x), expected, atol=1e-5)


def test_site_operator_matches_the_conv():
    site = sn.nn.transformable_convs(sn.nn.resnet34())[6]
    op = site.operator()
    assert (op.c_in, op.c_out, op.h, op.w, op.k, op.stride) == (64, 128, 32, 32, 3, 2)


def test_replace_unknown_path_and_network_without_convs_are_clear_errors():
    with pytest.raises(KeyError, match="no convolution"):
        sn.nn.replace_convs(sn.nn.resnet18(), {"layers[0].nope": sn.nn.Conv(8)})
    with pytest.raises(ValueError, match="no transformable convolution"):
        sn.nn.transformable_convs(sn.nn.Sequential([sn.nn.Conv(8), sn.nn.GlobalPool(), sn.nn.Dense(10)]))
    with pytest.raises(ValueError, match="unknown backbone"):
        sn.nn.backbone("resnet9000")


def test_torch_name_maps_symbolic_paths():
    assert sn.nn.torch_name("layers[4].body.layers[3]") == "4.body.3"
    assert sn.nn.torch_name("layers[1].branches[0].layers[2]") == "1.branches.0.2"


def test_replacing_no_conv_gives_an_equal_copy():
    net = sn.nn.resnet18()
    same = sn.nn.replace_convs(net, {})
    assert same == net and same is not net
