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


@pytest.mark.parametrize("name,count", [("resnet18", 8), ("resnext29_2x64d", 18), ("densenet161", 78)])
def test_private_input_convs_are_the_convs_fed_by_the_conv_before_them(name, count):
    net = sn.nn.backbone(name)
    private = sn.nn.private_input_convs(net)
    assert len(private) == count
    transformable = {s.path for s in sn.nn.transformable_convs(net)}
    assert set(private) <= transformable
    # the first conv of each residual body reads the block's input, which the shortcut reads too
    assert not [p for p in private if p.endswith("body.layers[0]")]


def _dead_input_channels(net, path):
    """Input channels of the conv at ``path`` on which the network's output does not depend."""
    model = net.build((3, 16, 16)).eval()
    seen = {}
    module = model.get_submodule(sn.nn.torch_name(path))

    def keep(_module, args):
        args[0].retain_grad()
        seen["x"] = args[0]
    module.register_forward_pre_hook(keep)
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()
    grad = seen["x"].grad
    return int((grad.abs().sum(dim=(0, 2, 3)) == 0).sum())


def test_an_input_bottleneck_wastes_its_producers_channels_only_where_the_input_is_private():
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    private, shared = "layers[3].body.layers[3]", "layers[3].body.layers[0]"
    assert private in sn.nn.private_input_convs(net) and shared not in sn.nn.private_input_convs(net)
    sites = {s.path: s for s in sn.nn.transformable_convs(net, (3, 16, 16))}
    half = [sn.program.Bottleneck(2, axis="ci")]
    torch.manual_seed(0)
    # B2(ci) on the private-input conv: half of the producer's output channels reach nothing
    narrow = sn.nn.replace_convs(net, {private: sn.program.Schedule(sites[private].operator(), half)})
    assert _dead_input_channels(narrow, private) == sites[private].in_shape[0] // 2 == 4
    # on the body's first conv, the channels it skips still reach the output through the shortcut
    narrow = sn.nn.replace_convs(net, {shared: sn.program.Schedule(sites[shared].operator(), half)})
    assert _dead_input_channels(narrow, shared) == 0


def test_unread_channel_flops_counts_the_producers_work_on_channels_the_next_conv_skips():
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    sites = {s.path: s for s in sn.nn.transformable_convs(net)}
    producer, consumer = "layers[3].body.layers[0]", "layers[3].body.layers[3]"
    P = sn.program
    # the producer's first 4 output channels grouped by 2, the last 4 by 4; the consumer reads
    # channels 0-3 only (grouped by 2, shuffled, halved: group g reads g and g + 2)
    split = [P.Partition("co", 2), P.Group(2, part=0), P.Group(4, part=1)]
    reads_half = [P.Group(2), P.Bottleneck(2, axis="ci"), P.ChannelShuffle()]
    net = sn.nn.replace_convs(net, {producer: P.Schedule(sites[producer].operator(), split),
                                    consumer: P.Schedule(sites[consumer].operator(), reads_half)})
    per_channel = 2 * 32 * 32 * 9          # one input channel, 3x3, 32x32 outputs
    unread, total = sn.nn.unread_channel_flops(net)[producer]
    assert total == 4 * 4 * per_channel + 4 * 2 * per_channel
    assert unread == 4 * 2 * per_channel   # channels 4-7, which read 2 inputs each
    # every other producer's output is read in full
    assert all(u == 0 for path, (u, _) in sn.nn.unread_channel_flops(net).items() if path != producer)
    untouched = sn.nn.unread_channel_flops(sn.nn.resnet34())
    assert len(untouched) == 16 and all(u == 0 for u, _ in untouched.values())
