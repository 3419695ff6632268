"""sn.spaces.network_transformations: candidates share read-only step lists and still behave as values."""
import pickle
import random

import pyglove as pg
import pytest
import torch

import symnas as sn
from symnas.materialize import Materializer


@pytest.fixture(scope="module")
def space():
    return sn.spaces.network_transformations("resnet18")


def _dna(space, seed):
    return pg.random_dna(pg.dna_spec(space), random.Random(seed))


def test_fast_materializer_equals_pyglove_decoding_and_shares_step_lists(space):
    materializer = Materializer(space)
    dna = _dna(space, 3)
    fast, slow = materializer.materialize(dna), pg.materialize(space, dna)
    assert fast == slow and slow == fast and pg.hash(fast) == pg.hash(slow)
    again = materializer.materialize(dna)
    # the same choice is the same (shared) list object in both candidates, not a copy
    assert all(a.neural is b.neural and a.program is b.program for a, b in zip(fast.layers, again.layers))
    assert materializer.materialize(_dna(space, 4)) != fast


def test_candidate_round_trips_through_json_and_pickle(space):
    candidate = Materializer(space).materialize(_dna(space, 5))
    text = pg.to_json_str(candidate)
    assert "Ref" not in text and "SharedSteps" not in text
    assert sn.from_json(text) == candidate
    assert pickle.loads(pickle.dumps(candidate)) == candidate


def test_shared_steps_are_read_only_but_fields_rebind(space):
    materializer = Materializer(space)
    dna = _dna(space, 6)
    candidate, other = materializer.materialize(dna), materializer.materialize(dna)
    transformed = next(layer for layer in candidate.layers if layer.neural)
    with pytest.raises(pg.WritePermissionError):
        transformed.neural[0].rebind(groups=64)          # would change every candidate that chose it
    copy = candidate.clone(deep=True)
    copy.layers[0].rebind(neural=[sn.program.Group(2)])
    assert list(copy.layers[0].neural) == [sn.program.Group(2)]
    assert candidate == other                           # neither the original nor the space changed


def test_candidate_network_builds_and_runs(space):
    candidate = Materializer(space).materialize(_dna(space, 7))
    net = candidate.network()
    transformed = [layer.path for layer in candidate.layers if layer.neural]
    assert transformed and all(isinstance(net.sym_get(p), sn.nn.TransformedConv) for p in transformed)
    with torch.no_grad():
        assert net.build((3, 32, 32)).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_search_records_candidates_of_the_space(space):
    study = sn.search(space, lambda c: float(sum(bool(layer.neural) for layer in c.layers)),
                      sn.algorithms.Random(seed=1), num_trials=3, storage=None, progress=False)
    assert len(study.completed) == 3
    best = study.best
    assert isinstance(best, sn.spaces.NetworkTransformation)
    assert best == pg.materialize(space, study.best_trial.to_dna())


def test_layers_with_one_template_are_shared_finished_layers_that_still_behave_as_values():
    net = sn.nn.resnet18()
    one = {s.key: sn.spaces.program_templates(s.operator())[:1] for s in sn.nn.transformable_convs(net)}
    space = sn.spaces.network_transformations("resnet18", templates=one)
    assert len(pg.dna_spec(space).elements) == len(sn.nn.transformable_convs(net))   # one decision per layer
    materializer = Materializer(space)
    dna = _dna(space, 8)
    fast, again = materializer.materialize(dna), materializer.materialize(dna)
    assert fast == pg.materialize(space, dna) and pg.hash(fast) == pg.hash(pg.materialize(space, dna))
    assert all(a is b for a, b in zip(fast.layers, again.layers))        # not built per candidate
    transformed = next(i for i, layer in enumerate(fast.layers) if layer.neural)
    with pytest.raises(pg.WritePermissionError):
        fast.layers[transformed].rebind(neural=[])                       # would change every candidate
    copy = fast.clone(deep=True)
    copy.layers[transformed].rebind(neural=[])
    assert not copy.layers[transformed].neural and fast == again and copy != fast
    text = pg.to_json_str(fast)
    assert "Ref" not in text and "Shared" not in text and sn.from_json(text) == fast
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert isinstance(fast.network().sym_get(fast.layers[transformed].path), sn.nn.TransformedConv)


def test_channel_shuffle_menu_shuffles_every_grouping_and_nothing_else():
    op = sn.program.Conv2d(c_in=64, c_out=64, h=16, w=16)
    plain, shuffled = sn.spaces.neural_menu(op), sn.spaces.neural_menu(op, channel_shuffle=True)
    assert len(plain) == len(shuffled)
    for before, after in zip(plain, shuffled):
        grouped = any(isinstance(s, sn.program.Group) for s in before)
        assert after == (before + [sn.program.ChannelShuffle()] if grouped else before)
    assert sum(bool(steps) and isinstance(steps[-1], sn.program.ChannelShuffle) for steps in shuffled) >= 8


def test_shuffled_space_candidates_read_interleaved_channels_and_run():
    space = sn.spaces.network_transformations("resnet18", channel_shuffle=True)
    candidate = next(pg.random_sample(space, seed=2))
    kernels = [s.kernel() for s in candidate.replacements().values()]
    assert any(p.shuffle for k in kernels for p in k.parts)
    assert all(p.shuffle == (p.groups > 1) for k in kernels for p in k.parts)
    model = candidate.network().build((3, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_kept_layers_are_left_out_of_the_space_and_stay_original(space):
    kept = sn.spaces.network_transformations("resnet18", keep=["3.body.0", "3.body.3"])
    paths = [t.path for t in kept.layers]
    assert len(paths) == len(space.layers) - 2
    assert "layers[3].body.layers[0]" not in paths and "layers[3].body.layers[3]" not in paths
    candidate = pg.materialize(kept, _dna(kept, 1))
    net = candidate.network()
    assert net.sym_get("layers[3].body.layers[0]") == candidate.original().sym_get("layers[3].body.layers[0]")


def test_keep_naming_an_unknown_layer_or_every_layer_is_refused_by_name():
    with pytest.raises(ValueError, match="'3.body.9' is not a transformable layer; transformable: 3.body.0"):
        sn.spaces.network_transformations("resnet18", keep=["3.body.9"])
    sites = sn.nn.transformable_convs(sn.nn.backbone("resnet18"))
    with pytest.raises(ValueError, match="nothing left to transform"):
        sn.spaces.drop_kept_layers(sites, [s.torch_name for s in sites])


def test_neural_sequences_are_described_in_the_benchmark_tables_short_form():
    P = sn.program
    assert sn.spaces.describe_neural([]) == "original"
    assert sn.spaces.describe_neural([P.Group(8), P.Bottleneck(2, axis="ci"), P.ChannelShuffle()]) == \
        "G8>B2(ci)>shuffle"
    assert sn.spaces.describe_neural([P.Partition("co", 2), P.Group(2, part=0), P.Group(4, part=1),
                                      P.ChannelShuffle()]) == "split(co,2)>G2[p0]>G4[p1]>shuffle"
    layer = sn.spaces.LayerTransformation("stem.conv", [P.Group(4), P.ChannelShuffle()], [])
    assert layer.describe() == "G4>shuffle"
    assert sn.spaces.LayerTransformation("stem.conv").describe() == "original"
