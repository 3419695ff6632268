"""Loop-nest schedules: program and neural steps, lowering to TVM and to torch."""
import shutil

import numpy as np
import pyglove as pg
import pytest
import torch

import symnas as sn

P = sn.program
CONV = P.Conv2d(c_in=16, c_out=16, h=8, w=8, k=3)


def tvm_and_torch_outputs(schedule):
    module = schedule.to_torch()
    x = torch.rand(schedule.input_shape)
    with torch.no_grad():
        expected = module(x).numpy()
    actual = schedule.run(x, [w.detach() for w in module.weights])
    return actual, expected


def assert_tvm_matches_torch(schedule):
    actual, expected = tvm_and_torch_outputs(schedule)
    assert actual.shape == tuple(schedule.output_shape)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)


def test_conv_loop_nest_has_named_iterators():
    assert CONV.loop_extents() == {"n": 1, "co": 16, "oh": 8, "ow": 8, "ci": 16, "kh": 3,
                                   "kw": 3}
    assert P.Linear(c_in=8, c_out=4).loop_extents() == {"n": 1, "co": 4, "ci": 8}


def test_untransformed_conv_matches_torch_conv2d_with_stride_padding_groups():
    op = P.Conv2d(c_in=8, c_out=16, h=9, w=7, k=3, stride=2, groups=2)
    schedule = P.Schedule(op)
    module = schedule.to_torch()
    x = torch.rand(1, 8, 9, 7)
    reference = torch.nn.functional.conv2d(x, module.weights[0], stride=2, padding=1, groups=2)
    np.testing.assert_allclose(module(x).detach().numpy(), reference.detach().numpy(),
                               atol=1e-5)
    assert_tvm_matches_torch(schedule)
    assert schedule.flops == 2 * 16 * 5 * 4 * 4 * 9


def test_fast_cpu_template_computes_the_same_conv():
    op = P.Conv2d(c_in=16, c_out=32, h=16, w=16, k=3)
    assert_tvm_matches_torch(P.Schedule(op, P.cpu_conv_template(co_block=4, oh_block=2)))
    assert_tvm_matches_torch(P.Schedule(op, P.cpu_conv_template(8, 4, ow_block=8)))


def test_packed_weight_template_vectorizes_output_channels_and_matches_torch():
    op = P.Conv2d(c_in=32, c_out=32, h=4, w=4, k=3)
    schedule = P.Schedule(op, [P.Group(2)] + P.cpu_packed_conv_template(co_block=16, oh_block=2))
    assert schedule.kernel().tvm_weight_shapes() == [(2, 16, 3, 3, 16)]
    assert schedule.weight_shapes == [(32, 16, 3, 3)]
    assert "T.vectorized(16)" in schedule.lower().script()
    assert_tvm_matches_torch(schedule)


def test_split_names_outer_and_inner_loops_and_fuse_joins_names():
    schedule = P.Schedule(CONV, [P.Split("co", 4), P.Fuse(["co.1", "oh"]), P.Split("ow", 2)])
    text = schedule.lower().script()
    for name in ("co_0", "co_1", "ow_0", "ow_1"):
        assert name in text
    loops = [sch_loop for sch_loop in ("co.0", "co.1*oh", "ow.0", "ow.1")]
    nest = P.Schedule(CONV, schedule.steps)
    from symnas.program.loop_nest import LoopNest
    tracker = LoopNest(list(CONV.loop_extents()))
    for step in nest.steps:
        step.apply(tracker)
    assert tracker.order == ["n", "co.0", "co.1*oh", "ow.0", "ow.1", "ci", "kh", "kw"]
    assert all(name in tracker.order for name in loops)


def test_step_list_round_trips_through_json():
    schedule = P.Schedule(CONV, [P.Group(2), P.Tile(["co", "oh"], [4, 2]),
                                 P.Bottleneck(2, axis="ci"), P.Vectorize("ow")])
    restored = sn.from_json(pg.to_json_str(schedule))
    assert restored == schedule
    assert restored.flops == schedule.flops


def test_group_conv_matches_torch_grouped_conv():
    schedule = P.Schedule(CONV, [P.Group(4)])
    module = schedule.to_torch()
    x = torch.rand(1, 16, 8, 8)
    reference = torch.nn.functional.conv2d(x, module.weights[0], padding=1, groups=4)
    np.testing.assert_allclose(module(x).detach().numpy(), reference.detach().numpy(),
                               atol=1e-5)
    assert schedule.weight_shapes == [(16, 4, 3, 3)]
    assert_tvm_matches_torch(schedule)


def test_channel_shuffle_makes_each_group_read_interleaved_input_channels():
    schedule = P.Schedule(CONV, [P.Group(4), P.ChannelShuffle()])
    module = schedule.to_torch()
    x = torch.rand(1, 16, 8, 8)
    # group g reads channels g, g+4, g+8, g+12: ShuffleNet's shuffle, then a grouped conv
    shuffled = x.reshape(1, 4, 4, 8, 8).transpose(1, 2).reshape(1, 16, 8, 8)
    reference = torch.nn.functional.conv2d(shuffled, module.weights[0], padding=1, groups=4)
    np.testing.assert_allclose(module(x).detach().numpy(), reference.detach().numpy(), atol=1e-5)
    assert schedule.flops == P.Schedule(CONV, [P.Group(4)]).flops
    assert_tvm_matches_torch(schedule)
    assert_tvm_matches_torch(P.Schedule(CONV, [P.ChannelShuffle(), P.Group(4)] + P.cpu_conv_template(4, 2)))


def test_channel_shuffle_with_input_bottleneck_reads_the_first_shuffled_channels():
    schedule = P.Schedule(CONV, [P.Group(2), P.Bottleneck(2, axis="ci"), P.ChannelShuffle()])
    part = schedule.kernel().parts[0]
    assert schedule.kernel().input_channels(part) == [0, 2, 4, 6, 1, 3, 5, 7]
    assert_tvm_matches_torch(schedule)
    assert_tvm_matches_torch(P.Schedule(CONV, [P.Partition("co", 2), P.Group(2, part=0),
                                               P.Group(4, part=1), P.ChannelShuffle(part=1)]))
    assert_tvm_matches_torch(P.Schedule(P.Linear(c_in=32, c_out=16, batch=2),
                                        [P.Group(4), P.ChannelShuffle()] + P.dense_template(4)))
    # shuffled by the padding copy (row bands share it) and by the conv's index (no padding)
    assert_tvm_matches_torch(P.Schedule(CONV, [P.Partition("oh", 2), P.Group(4), P.ChannelShuffle()]
                                        + P.cpu_conv_template(4, 2)))
    assert_tvm_matches_torch(P.Schedule(P.Conv2d(c_in=16, c_out=32, h=8, w=8, k=1),
                                        [P.Group(4), P.ChannelShuffle()]))


TRAINING_SCHEDULES = [
    [P.Group(2), P.ChannelShuffle()],  # one part, channels permuted (2x8: not its own inverse)
    [P.Group(2), P.Bottleneck(2, axis="ci"), P.ChannelShuffle()],  # one part, a subset of channels
    [P.Partition("oh", 2), P.Group(4), P.ChannelShuffle()],    # row bands of one padded input
    [P.Partition("co", 2), P.Group(2, part=0), P.Group(4, part=1), P.ChannelShuffle(part=1)],
    [P.Bottleneck(2, axis="oh")],                              # a spatial bottleneck
]


def reference_forward(module, x):
    """The kernel's parts with plain torch ops (torch's own index_select gradient), for comparison."""
    k = module.kernel
    padded = torch.nn.functional.pad(x, [k.pad] * 4)
    out = torch.zeros((x.shape[0],) + tuple(k.output_shape()[1:]))
    for (c0, r0), part, w in zip(k.placements(), k.parts, module.weights):
        xs = padded.index_select(1, torch.tensor(k.input_channels(part)))
        y = torch.nn.functional.conv2d(xs, w, stride=(k.stride * k.bh, k.stride * k.bw), groups=part.groups)
        y = y[:, :, part.oh_start // k.bh:part.oh_start // k.bh + k.rows(part), :k.cols]
        out[:, c0:c0 + part.c_out, r0:r0 + k.rows(part)] = y
    return out


@pytest.mark.parametrize("steps", TRAINING_SCHEDULES, ids=["shuffle", "subset", "row-bands", "co-parts",
                                                           "spatial"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_torch_module_outputs_and_gradients_match_plain_torch_in_either_layout(steps, layout):
    module = P.Schedule(CONV, steps).to_torch()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.rand(2, 16, 8, 8).contiguous(memory_format=fmt).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y = module(x)
    y_ref = reference_forward(module, x_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    grad = torch.rand_like(y_ref)
    expected_grads = torch.autograd.grad(y_ref, [x_ref] + list(module.weights), grad)
    ours = torch.autograd.grad(y, [x] + list(module.weights), grad)
    for actual, expected in zip(ours, expected_grads):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    if layout == "channels_last":  # the next layers keep the fast layout
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_torch_module_channel_index_travels_with_the_module_but_is_not_saved():
    module = P.Schedule(CONV, [P.Group(2), P.ChannelShuffle()]).to_torch()
    buffers = dict(module.named_buffers())
    # buffers follow .to(device) once, instead of an index copied to the device in every call
    assert buffers["channel_index_0"].tolist() == module.kernel.input_channels(module.kernel.parts[0])
    assert (buffers["channel_index_0"][buffers["channel_inverse_0"]] == torch.arange(16)).all()
    assert list(module.state_dict()) == ["weights.0"]
    assert "channel_inverse_0" not in dict(P.Schedule(CONV, [P.Group(2), P.Bottleneck(2, axis="ci"),
                                                              P.ChannelShuffle()]).to_torch().named_buffers())


def test_torch_module_saved_before_the_index_buffers_still_loads_and_computes_the_same(tmp_path):
    module = P.Schedule(CONV, [P.Group(2), P.ChannelShuffle()]).to_torch()
    x = torch.rand(1, 16, 8, 8)
    expected = module(x)
    # the attributes of the module as torch.save wrote it before 2026-12-02
    for name in list(module._buffers):
        del module._buffers[name]
    del module.__dict__["_index_names"], module.__dict__["_inverse_names"], module.__dict__["_plain"]
    module.__dict__["_channel_index"] = [torch.tensor(module.kernel.input_channels(module.kernel.parts[0]))]
    torch.save(module, tmp_path / "old.pt")
    loaded = torch.load(tmp_path / "old.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), expected)
    assert "_channel_index" not in loaded.__dict__ and "channel_index_0" in dict(loaded.named_buffers())


def test_bottlenecks_shrink_output_and_input_channel_domains():
    out_bottleneck = P.Schedule(CONV, [P.Bottleneck(4)])
    assert out_bottleneck.output_shape == (1, 4, 8, 8)
    # Seed §2.3: after an interchange the outermost loop is ci: input-channel bottleneck.
    in_bottleneck = P.Schedule(CONV, [P.Interchange("co", "ci"), P.Bottleneck(4, axis=None)])
    assert in_bottleneck.output_shape == (1, 16, 8, 8)
    assert in_bottleneck.weight_shapes == [(16, 4, 3, 3)]
    assert in_bottleneck.flops == CONV.kernel().flops() // 4
    assert_tvm_matches_torch(in_bottleneck)


def test_spatial_bottleneck_is_interchange_bottleneck_interchange_bottleneck_interchange():
    seed_form = P.Schedule(CONV, [P.Reorder(["oh", "ow", "co"]), P.Bottleneck(2, axis=None),
                                  P.Interchange("ow", "oh"), P.Bottleneck(2, axis=None),
                                  P.Reorder(["co", "oh", "ow"])])
    explicit = P.Schedule(CONV, [P.Bottleneck(2, axis="oh"), P.Bottleneck(2, axis="ow")])
    assert seed_form.kernel() == explicit.kernel()
    assert seed_form.output_shape == (1, 16, 4, 4)
    assert seed_form.flops == CONV.kernel().flops() // 4
    assert_tvm_matches_torch(seed_form)


def test_seed_sequence_1_split_interchange_group_interchange_fuse():
    schedule = P.Schedule(CONV, [P.Split("oh", 4), P.Interchange("co", "oh.0"), P.Group(2),
                                 P.Interchange("co", "oh.0"), P.Fuse(["oh.1", "ow"])])
    assert schedule.kernel().parts[0].groups == 2
    assert_tvm_matches_torch(schedule)


def test_seed_sequence_2_unroll_group_interchange():
    schedule = P.Schedule(CONV, [P.Split("co", 8), P.Unroll("co.1"), P.Group(2),
                                 P.Interchange("co.0", "oh")])
    assert schedule.flops == CONV.kernel().flops() // 2
    assert_tvm_matches_torch(schedule)


def test_seed_sequence_3_groups_the_two_halves_of_output_channels_differently():
    schedule = P.Schedule(CONV, [P.Partition("co", 2), P.Group(2, part=0),
                                 P.Interchange("co", "ci"), P.Group(4, part=1)])
    kernel = schedule.kernel()
    assert [p.groups for p in kernel.parts] == [2, 4]
    module = schedule.to_torch()
    x = torch.rand(1, 16, 8, 8)
    out = module(x).detach()
    first = torch.nn.functional.conv2d(x, module.weights[0], padding=1, groups=2)
    second = torch.nn.functional.conv2d(x, module.weights[1], padding=1, groups=4)
    np.testing.assert_allclose(out[:, :8].numpy(), first.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:, 8:].numpy(), second.detach().numpy(), atol=1e-5)
    assert_tvm_matches_torch(schedule)


def test_row_partition_with_different_grouping_per_band():
    schedule = P.Schedule(CONV, [P.Partition("oh", 2), P.Group(2, part=0),
                                 P.Depthwise(part=1)] + P.cpu_conv_template(4, 2))
    assert schedule.output_shape == (1, 16, 8, 8)
    assert_tvm_matches_torch(schedule)


def test_dense_group_and_partition_match_torch():
    dense = P.Linear(c_in=32, c_out=16, batch=3)
    assert_tvm_matches_torch(P.Schedule(dense, [P.Partition("co", 2), P.Group(4, part=1)]
                                        + P.dense_template(4)))


@pytest.mark.parametrize("shape", [(16, 16, 16, 3, 1), (8, 16, 12, 3, 2), (16, 32, 8, 1, 1)])
def test_random_transformation_sequences_agree_between_tvm_and_torch(shape):
    c_in, c_out, size, k, stride = shape
    op = P.Conv2d(c_in=c_in, c_out=c_out, h=size, w=size, k=k, stride=stride)
    space = P.transformation_space(op, max_steps=3)
    checked = 0
    for schedule in pg.random_sample(space, 40, seed=sum(shape)):
        try:
            actual, expected = tvm_and_torch_outputs(schedule)
        except P.IllegalTransformation:
            continue
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4,
                                   err_msg=schedule.describe())
        checked += 1
        if checked == 4:
            break
    assert checked >= 2


@pytest.mark.parametrize("steps, message", [
    ([P.Group(3)], "groups=3 does not divide"),
    ([P.Bottleneck(5)], "bottleneck 5 does not divide"),
    ([P.Split("co", 4), P.Split("co", 2)], "no loop named 'co'"),
    ([P.Vectorize("ci")], "not a data parallel"),
    ([P.Tile(["co", "oh"], [32, 2])], "larger than loop 'co'"),
    ([P.Split("co", 3)], "does not divide loop 'co'"),
    ([P.Fuse(["co", "ow"])], "adjacent"),
    ([P.Bind("co", "blockIdx.x")], "needs a GPU target"),
    ([P.Group(2), P.Partition("co", 2), P.Group(2, part=5)], "part 5 does not exist"),
    ([P.ChannelShuffle(), P.Partition("co", 2)], "before shuffling"),
])
def test_bad_steps_raise_illegal_transformation_naming_step_and_reason(steps, message):
    with pytest.raises(P.IllegalTransformation, match=message) as info:
        P.Schedule(CONV, steps).lower()
    assert info.value.position == len(steps) - 1
    assert info.value.step == steps[-1]


def test_depthwise_needs_equal_channel_counts():
    with pytest.raises(P.IllegalTransformation, match="depthwise"):
        P.Schedule(P.Conv2d(c_in=8, c_out=16, h=8, w=8), [P.Depthwise()]).kernel()


def test_transformation_space_samples_with_pyglove():
    space = P.transformation_space(CONV, max_steps=2)
    spec = pg.dna_spec(space)
    assert len(spec.decision_points) > 4
    schedules = []
    for schedule, feedback in pg.sample(space, pg.geno.Random(seed=0), num_examples=5):
        schedules.append(schedule)
        feedback(0.0)
    assert all(isinstance(s, P.Schedule) and pg.is_deterministic(s) for s in schedules)


def test_measure_reports_latency_flops_params_and_caches_builds():
    schedule = P.Schedule(P.Conv2d(c_in=16, c_out=16, h=16, w=16),
                          [P.Group(2)] + P.cpu_conv_template(4, 2))
    measurement = schedule.measure(repeat=3, min_repeat_ms=5)
    assert measurement.latency_ms > 0
    assert measurement.flops == schedule.flops
    assert measurement.params == 16 * 8 * 9
    assert schedule.build() is schedule.build()
    assert P.host_target()["kind"] == "llvm"


def test_cold_weights_timing_makes_one_timed_call_per_repeat():
    schedule = P.Schedule(P.Conv2d(c_in=16, c_out=16, h=16, w=16), P.cpu_conv_template(4, 2))
    cold = schedule.measure(repeat=3, cold_weights=True)
    assert len(cold.repeats) == 10 and all(r > 0 for r in cold.repeats)   # at least 10 repeats
    assert cold.params == schedule.params and cold.latency_ms > 0


def test_cold_weights_timing_asks_tvm_to_flush_all_but_the_activation_before_each_call():
    from symnas.program.measure import time_module
    asked = {}

    class Runtime:
        def time_evaluator(self, name, device, **kwargs):
            asked.update(kwargs, name=name)
            return lambda *args: type("Result", (), {"results": [1e-3] * kwargs["repeat"]})()

    assert time_module(Runtime(), [], repeat=12, device="cpu", cold_weights=True) == [1.0] * 12
    assert asked == {"name": "main", "number": 1, "repeat": 12,
                     "f_preproc": "cache_flush_cpu_non_first_arg"}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("neural", [[P.Group(2)], [P.Group(2), P.ChannelShuffle()]])
def test_cuda_lowering_with_bind_steps_builds_cuda_source(neural):
    op = P.Conv2d(c_in=16, c_out=32, h=16, w=16)
    schedule = P.Schedule(op, neural + P.gpu_conv_template(co_block=2, oh_block=2,
                                                           threads_co=8, threads_oh=4))
    source = schedule.cuda_source()
    assert "__global__" in source and "blockIdx.x" in source


def test_cache_read_and_compute_at_keep_the_values_on_cpu():
    op = P.Conv2d(c_in=16, c_out=32, h=16, w=16, k=3)
    base = [P.Split("co", 4), P.Split("oh", 2),
            P.Reorder(["n", "co.0", "oh.0", "ci", "kh", "kw", "co.1", "oh.1", "ow"])]
    staged = P.Schedule(op, base + [P.ComputeAt("pad", at="oh.0", threads=8),
                                    P.CacheRead("weight", at="co.0", scope="global"),
                                    P.Vectorize("ow")])
    script = staged.lower().script()
    assert 'T.sblock("weight0_global")' in script
    # padding now runs inside the row-block loop, 16 channels x 4 padded rows x 18 columns per
    # block of 2 output rows, 8 lanes at a time: 144 x 8
    assert "in range(144)" in script and "T.vectorized(8)" in script
    assert_tvm_matches_torch(staged)
    assert_tvm_matches_torch(P.Schedule(op, [P.Group(2)] + base + [P.CacheRead("input", at="oh.0",
                                                                                scope="local")]))


@pytest.mark.parametrize("step, message", [
    (P.CacheRead("input", at="co", scope="shared"), "shared memory is a GPU scope"),
    (P.CacheRead("bias", at="co", scope="global"), "must be 'input' or 'weight'"),
    (P.CacheRead("input", at="co", scope="texture"), "unknown scope"),
    (P.CacheRead("input", at="co.0", scope="global"), "no loop named 'co.0'"),
    (P.ComputeAt("relu", at="co"), "no block named 'relu'"),
])
def test_bad_cache_steps_raise_illegal_transformation(step, message):
    with pytest.raises(P.IllegalTransformation, match=message):
        P.Schedule(CONV, [step]).lower()


def test_gpu_template_stages_input_and_weight_tiles_in_shared_memory():
    op = P.Conv2d(c_in=16, c_out=32, h=16, w=16)
    plain = P.Schedule(op, P.gpu_conv_template(2, 2, 8, 4)).cuda_source()
    shared = P.Schedule(op, [P.Group(2)] + P.gpu_conv_template(2, 2, 8, 4, ci_block=4)).cuda_source()
    assert "__shared__" not in plain
    assert "pad_shared" in shared and "weight0_shared" in shared and "__syncthreads()" in shared
    with pytest.raises(P.IllegalTransformation, match="threadIdx.x"):
        P.Schedule(op, [P.Split("ci", 4), P.CacheRead("input", at="ci.0")]).lower("cuda")


def test_metaschedule_baseline_tunes_without_xgboost_and_times_the_result():
    op = P.Conv2d(c_in=8, c_out=8, h=8, w=8, k=3)
    result = P.tune_metaschedule(op, trials=4)
    assert result.error is None, result.error
    assert result.cost_model in ("xgb", "random")
    assert 0 < result.latency_ms < 1000


@pytest.mark.parametrize("lanes, registers", [(8, 16), (16, 32)])
def test_cpu_templates_keep_their_register_block_within_the_vector_registers(lanes, registers):
    for size, channels in ((32, 64), (16, 128), (8, 256), (4, 512)):
        op = sn.program.Conv2d(c_in=channels, c_out=channels, h=size, w=size, k=3, stride=1, padding=1)
        templates = sn.program.cpu_templates(op, lanes=lanes)
        packed = [t for t in templates if isinstance(t[0], sn.program.PackWeights)]
        rows = [t for t in templates if not isinstance(t[0], sn.program.PackWeights)]
        assert packed and rows
        assert (templates[0] in packed) == (size < lanes)        # short rows: channel-vectorized first
        for steps in rows:
            split = {s.loop: s.factor for s in steps if isinstance(s, sn.program.Split)}
            vectors = -(-split.get("ow", size) // lanes)
            accumulators = split["co"] * split["oh"] * vectors
            assert registers // 2 <= accumulators <= registers - 2, (size, split)


def test_the_cpu_templates_compute_a_grouped_convolution():
    op = sn.program.Conv2d(c_in=16, c_out=16, h=16, w=16, k=3, stride=1, padding=1)
    x = torch.randn(1, 16, 16, 16)
    for steps in sn.program.cpu_templates(op, lanes=8):
        sched = sn.program.Schedule(op, [sn.program.Group(2)] + steps)
        reference = sched.to_torch()
        kernel = sn.program.TVMKernelModule(sched, list(reference.weights))
        with torch.no_grad():
            torch.testing.assert_close(kernel(x), reference(x), atol=1e-4, rtol=1e-4)


def test_public_names_are_distinct_across_subpackages():
    import collections
    owners = collections.defaultdict(set)
    for package in (sn.nn, sn.program, sn.train, sn.data, sn.proxies, sn.spaces, sn.algorithms):
        for name in getattr(package, "__all__", []):
            value = getattr(package, name)
            if isinstance(value, type):
                owners[name].add(value)
    assert {name: classes for name, classes in owners.items() if len(classes) > 1} == {}
