"""Symbolic layers: shape inference, building torch modules, search points, errors."""
import pyglove as pg
import pytest
import torch

import symnas as sn
from symnas.nn import ShapeError


def _forward(layer, in_shape, batch=2):
    module = layer.build(in_shape)
    return module(torch.randn((batch,) + tuple(in_shape)))


def test_sequential_chains_channels_and_output_shape_matches_forward():
    net = sn.nn.Sequential([
        sn.nn.Conv(16, 3), sn.nn.BatchNorm(), sn.nn.ReLU(),
        sn.nn.Stacked(sn.nn.Conv(32, 3, stride=2), repeats=2),
        sn.nn.MBConv(32, kernel=5), sn.nn.MBConv(48, stride=2, expansion=1),
        sn.nn.Residual(sn.nn.Conv(64, 3, stride=2), post=sn.nn.ReLU()),
        sn.nn.Concat([sn.nn.ConvBN(8, 3)], include_input=True),
        sn.nn.Dropout(0.1), sn.nn.Flatten(), sn.nn.Dense(10)])
    assert net.output_shape((3, 32, 32)) == (10,)
    assert _forward(net, (3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("layer, expected", [
    (sn.nn.Conv(8, (3, 3)), (8, 16, 16)),
    (sn.nn.Conv(8, 3, stride=2), (8, 8, 8)),
    (sn.nn.Conv(6, 3, groups=3), (6, 16, 16)),
    (sn.nn.Conv(6, 5, depthwise=True), (6, 16, 16)),
    (sn.nn.MaxPool((3, 3)), (3, 16, 16)),
    (sn.nn.MaxPool(2, stride=2, padding=0), (3, 8, 8)),
    (sn.nn.AvgPool(3, stride=2), (3, 8, 8)),
    (sn.nn.Identity(), (3, 16, 16)),
    (sn.nn.GlobalPool("max"), (3,)),
    (sn.nn.MBConv(3, kernel=7, expansion=3), (3, 16, 16)),
    (sn.nn.MBConv(12, stride=2), (12, 8, 8)),
])
def test_output_shape_agrees_with_built_module(layer, expected):
    assert layer.output_shape((3, 16, 16)) == expected
    assert tuple(_forward(layer, (3, 16, 16)).shape[1:]) == expected


def test_int_input_means_channels_with_unknown_spatial_size():
    assert sn.nn.Conv(8, stride=2).output_shape(3) == (8, None, None)
    module = sn.nn.Conv(8).build(3)
    assert module.in_channels == 3 and module.out_channels == 8


def test_seed_example_stacked_space_samples_and_builds():
    space = sn.nn.Stacked(op=pg.oneof([sn.nn.Identity(), sn.nn.MaxPool((3, 3)),
                                       sn.nn.Conv(pg.oneof([4, 8]), (3, 3))]), repeats=3)
    seen = set()
    for model in pg.random_sample(space, num_examples=12, seed=0):
        out = _forward(model, (3, 8, 8))
        seen.add(out.shape[1])
        assert len(model.build(3)) == 3
    assert seen == {3, 4, 8}


def test_residual_projects_when_shapes_differ_and_keeps_identity_otherwise():
    same = sn.nn.Residual(sn.nn.Conv(3, 3)).build((3, 8, 8))
    assert isinstance(same.shortcut, torch.nn.Identity)
    projected = sn.nn.Residual(sn.nn.Conv(8, 3, stride=2))
    assert projected.output_shape((3, 8, 8)) == (8, 4, 4)
    assert _forward(projected, (3, 8, 8)).shape == (2, 8, 4, 4)
    with pytest.raises(ShapeError, match="project=False"):
        sn.nn.Residual(sn.nn.Conv(8, 3), project=False).build((3, 8, 8))


def test_mbconv_is_residual_only_when_stride_one_and_channels_kept():
    x = torch.randn(1, 8, 8, 8)
    residual = sn.nn.MBConv(8, expansion=2).build((8, 8, 8))
    plain = sn.nn.MBConv(16, expansion=2).build((8, 8, 8))
    assert type(residual).__name__ == "_ResidualModule"
    assert isinstance(plain, torch.nn.Sequential)
    # The depthwise convolution has groups equal to the expanded width.
    depthwise = [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and depthwise[0].groups == 16
    assert residual(x).shape == x.shape


def test_symbolize_makes_torch_module_searchable_and_buildable():
    conv2d = sn.symbolize(torch.nn.Conv2d)
    space = sn.nn.Sequential([conv2d(3, pg.oneof([8, 16]), 3, padding=1), sn.nn.ReLU(),
                              sn.nn.GlobalPool()])
    channels = {m.output_shape((3, 8, 8))[0] for m in pg.random_sample(space, 8, seed=1)}
    assert channels == {8, 16}
    model = pg.materialize(space, pg.DNA(1))
    assert _forward(model, (3, 8, 8)).shape == (2, 16)


def test_build_makes_fresh_weights_each_time():
    layer = sn.nn.Conv(4, 3)
    a, b = layer.build(3), layer.build(3)
    assert not torch.equal(a.weight, b.weight)


def test_layers_serialize_and_rebind_symbolically():
    net = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.MaxPool(3)])
    restored = sn.from_json(net.to_json_str())
    assert restored == net
    swapped = net.clone().rebind(
        lambda k, v, p: sn.nn.MaxPool(3) if isinstance(v, sn.nn.Conv) else v)
    assert swapped.output_shape((3, 8, 8)) == (3, 8, 8)
    assert net.output_shape((3, 8, 8)) == (8, 8, 8)


def test_stacked_that_cannot_chain_names_the_layer():
    with pytest.raises(ShapeError, match=r"Stacked\(op=Conv\): layer 2 .*too small"):
        sn.nn.Stacked(sn.nn.Conv(8, 3, stride=2, padding=0), repeats=4).build((3, 8, 8))
    with pytest.raises(ShapeError, match="expects an image shape"):
        sn.nn.Sequential([sn.nn.GlobalPool(), sn.nn.Conv(3)]).build(3)
    with pytest.raises(ShapeError, match="expects a flat input"):
        sn.nn.Dense(10).build((3, 8, 8))
    with pytest.raises(ShapeError, match="groups=2 must divide in_channels=3"):
        sn.nn.Conv(4, groups=2).build(3)


def test_build_of_a_space_with_search_points_is_refused():
    with pytest.raises(ValueError, match="sample a concrete object"):
        sn.nn.Conv(pg.oneof([4, 8])).build(3)


def test_bad_hyperparameters_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown activation 'nope'"):
        sn.nn.Activation("nope").build(3)
    with pytest.raises(TypeError, match="shape"):
        sn.nn.Conv(4).build("3")


def test_mobilenetv2_static_network_builds_with_the_paper_stages():
    net = sn.nn.mobilenetv2(width_multiplier=0.25)
    assert [s.out_channels for s in net.stages] == [8, 8, 8, 16, 24, 40, 80]
    assert [len(s.kernels) for s in net.stages] == [1, 2, 3, 4, 3, 3, 1]
    assert net.output_shape((3, 32, 32)) == (320, 4, 4)
    assert _forward(net, (3, 32, 32)).shape == (2, 320, 4, 4)
    with_head = sn.nn.mobilenetv2(0.25, num_classes=10)
    assert with_head.output_shape((3, 32, 32)) == (10,)


def test_mobilenetv2_search_spaces_s1_s2_s3_have_the_right_decisions():
    base = sn.nn.mobilenetv2(width_multiplier=0.25)
    s1, s2, s3 = (sn.spaces.mobilenetv2_s1(base), sn.spaces.mobilenetv2_s2(base),
                  sn.spaces.mobilenetv2_s3(base))
    blocks = sum(len(s.kernels) for s in base.stages)
    assert len(pg.dna_spec(s1).decision_points) == 2 * blocks
    assert len(pg.dna_spec(s2).decision_points) == len(base.stages)
    assert len(pg.dna_spec(s3).decision_points) == 2 * blocks + len(base.stages)
    for space in (s1, s2, s3):
        net = next(pg.random_sample(space, 1, seed=3))
        assert net.output_shape((3, 16, 16))[0] == base.last_channels
    sample = next(pg.random_sample(s1, 1, seed=0))
    assert {k for s in sample.stages for k in s.kernels} <= {3, 5, 7}
    assert base.stages[0].kernels == [3]   # The base network is not modified.


def test_hyperparameter_space_makes_lr_decay_and_mixup_searchable():
    trainer = sn.train.Trainer(model=sn.nn.Conv(8), optimizer=sn.train.SGD(0.1),
                               augmentation=[sn.train.Mixup(0.1), sn.train.HorizontalFlip()])
    space = sn.spaces.hyperparameter_space(trainer)
    spec = pg.dna_spec(space)
    assert len(spec.decision_points) == 3
    assert spec.decision_points[0].scale == "log"
    sample = next(pg.random_sample(space, 1, seed=0))
    assert 1e-4 <= sample.optimizer.lr <= 1e-1 and 1e-6 <= sample.weight_decay <= 1e-2
    mixups = [a for a in sample.augmentation if isinstance(a, sn.train.Mixup)]
    assert len(mixups) == 1 and mixups[0].alpha in (0.0, 0.2, 0.4)


def test_flatten_sequentials_splices_nested_sequentials_and_keeps_the_function():
    inner = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.Sequential([sn.nn.Conv(8, 1), sn.nn.ReLU()])])
    net = sn.nn.Residual(body=sn.nn.Sequential([inner, sn.nn.BatchNorm()]))
    flat = sn.nn.flatten_sequentials(net)
    assert [type(layer).__name__ for layer in flat.body.layers] == ["Conv", "Conv", "ReLU", "BatchNorm"]
    assert isinstance(net.body.layers[0], sn.nn.Sequential)          # the input is left as it was
    torch.manual_seed(0)
    nested_model = net.build((8, 6, 6)).eval()
    flat_model = flat.build((8, 6, 6)).eval()
    flat_model.load_state_dict(dict(zip(flat_model.state_dict(), nested_model.state_dict().values())))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(flat_model(x), nested_model(x))
