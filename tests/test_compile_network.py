"""TVM kernels inside torch models: one kernel as a module, whole networks compiled."""
import copy
import weakref

import pytest
import torch

import symnas as sn
from symnas import program as p


def _conv_and_module(groups=1, steps=(), c=16, size=8, stride=1):
    op = p.Conv2d(c_in=c, c_out=c, h=size, w=size, k=3, stride=stride, groups=groups)
    return op, p.Schedule(op, list(steps))


@pytest.mark.parametrize("template", [p.cpu_conv_template(4, 2), p.cpu_packed_conv_template(16, 2)])
def test_kernel_module_matches_torch_conv(template):
    op, sched = _conv_and_module(steps=template)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=True)
    fast = p.TVMKernelModule(sched, [conv.weight], bias=conv.bias)
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), atol=1e-4, rtol=1e-4)


def test_kernel_module_runs_a_transformed_kernel_like_its_torch_module():
    steps = [p.Partition("co", 2), p.Group(2, part=0), p.Group(4, part=1)] + p.cpu_conv_template(4, 2)
    _, sched = _conv_and_module(steps=steps)
    reference = sched.to_torch()
    fast = p.TVMKernelModule(sched, list(reference.weights))
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [[], p.cpu_conv_template(4, 2),
                                   [p.Partition("co", 2), p.Group(2, part=0), p.Group(4, part=1)]
                                   + p.cpu_conv_template(4, 2)])
def test_kernel_module_fuses_bias_and_relu_into_the_kernel(steps):
    _, sched = _conv_and_module(steps=steps)
    reference = sched.to_torch()
    bias = torch.randn(16)
    fast = p.TVMKernelModule(sched, list(reference.weights), bias=bias, relu=True)
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        expected = torch.relu(reference(x) + bias.view(1, -1, 1, 1))
        torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=1e-4)
    assert (expected == 0).any()              # the ReLU had something to clamp
    blocks = sched.lower(epilogue="bias_relu").script()
    # with a cache write-back or a concatenation the epilogue is inlined into the output write
    assert ('T.sblock("epilogue")' in blocks) == (not steps)


@pytest.mark.parametrize("steps", [[], p.cpu_packed_conv_template(16, 2),
                                   [p.Partition("co", 2), p.Group(2, part=0), p.Group(4, part=1)]
                                   + p.cpu_conv_template(4, 2)])
@pytest.mark.parametrize("relu", [True, False])
def test_kernel_module_adds_a_residual_in_its_output_write(steps, relu):
    _, sched = _conv_and_module(steps=steps)
    reference = sched.to_torch()
    bias = torch.randn(16)
    fast = p.TVMKernelModule(sched, list(reference.weights), bias=bias, relu=relu, residual=True)
    x, shortcut = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        expected = reference(x) + bias.view(1, -1, 1, 1) + shortcut
        expected = torch.relu(expected) if relu else expected
        torch.testing.assert_close(fast(x, shortcut), expected, atol=1e-4, rtol=1e-4)
    assert (expected < 0).any() != relu
    with pytest.raises(TypeError, match=r"module\(x, residual\)"):
        fast(x)
    with pytest.raises(ValueError, match="takes residual"):
        fast(x, torch.randn(1, 16, 4, 4))
    plain = p.TVMKernelModule(sched, list(reference.weights))
    with pytest.raises(TypeError, match="without a residual"):
        plain(x, shortcut)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("steps", [[], p.cpu_packed_conv_template(16, 2),
                                   [p.Group(4), p.ChannelShuffle()] + p.cpu_conv_template(4, 2),
                                   [p.Partition("co", 2), p.Group(2, part=0), p.Group(4, part=1)]
                                   + p.cpu_conv_template(4, 2)])
def test_kernel_module_applies_a_batch_norm_and_relu_to_its_input_before_the_conv(steps, k):
    op = p.Conv2d(c_in=16, c_out=16, h=8, w=8, k=k, stride=1)
    sched = p.Schedule(op, list(steps))
    reference = sched.to_torch()
    scale, shift, bias = torch.rand(16) + 0.5, torch.randn(16), torch.randn(16)
    fast = p.TVMKernelModule(sched, list(reference.weights), in_scale=scale, in_shift=shift)
    x = torch.randn(1, 16, 8, 8)
    before = torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    assert (before == 0).any() and (before > 0).any()    # the ReLU clamps some inputs, not all
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(before), atol=1e-4, rtol=1e-4)
        both = p.TVMKernelModule(sched, list(reference.weights), bias=bias, relu=True, residual=True,
                                 in_scale=scale, in_shift=shift)
        shortcut = torch.randn(1, 16, 8, 8)
        expected = torch.relu(reference(before) + bias.view(1, -1, 1, 1) + shortcut)
        torch.testing.assert_close(both(x, shortcut), expected, atol=1e-4, rtol=1e-4)
    assert "batch norm + relu, then" in repr(fast)


def test_prologue_errors_name_the_problem():
    _, sched = _conv_and_module(steps=p.cpu_conv_template(4, 2))
    weights = [torch.zeros(16, 16, 3, 3)]
    with pytest.raises(ValueError, match="together"):
        p.TVMKernelModule(sched, weights, in_scale=torch.ones(16))
    with pytest.raises(ValueError, match="in_shift has 8 values, the kernel has 16 input channels"):
        p.TVMKernelModule(sched, weights, in_scale=torch.ones(16), in_shift=torch.zeros(8))
    with pytest.raises(ValueError, match="CPU kernels only"):
        sched.lower("cuda", prologue=True)
    dense = p.Schedule(p.Linear(c_in=16, c_out=8), [])
    with pytest.raises(ValueError, match="convolutions only"):
        dense.lower(prologue=True)


def test_epilogue_errors_name_the_problem():
    _, sched = _conv_and_module(steps=p.cpu_conv_template(4, 2))
    with pytest.raises(ValueError, match="unknown epilogue"):
        sched.lower(epilogue="gelu")
    with pytest.raises(ValueError, match="CPU kernels only"):
        sched.lower("cuda", epilogue="bias")
    with pytest.raises(ValueError, match="bias has 8 values"):
        p.TVMKernelModule(sched, [torch.zeros(16, 16, 3, 3)], bias=torch.zeros(8))


def test_kernel_module_accepts_an_unaligned_view():
    _, sched = _conv_and_module(steps=p.cpu_packed_conv_template(16, 2))
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
    fast = p.TVMKernelModule(sched, [conv.weight])
    storage = torch.randn(1 + 16 * 8 * 8)
    x = storage[1:].view(1, 16, 8, 8)          # 4 bytes past an aligned address
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), atol=1e-4, rtol=1e-4)


def test_kernel_module_rejects_bad_input_with_clear_errors():
    _, sched = _conv_and_module(steps=p.cpu_conv_template(4, 2))
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
    with pytest.raises(ValueError, match="expects"):
        p.TVMKernelModule(sched, [torch.zeros(16, 8, 3, 3)])
    with pytest.raises(ValueError, match="takes 1 weight"):
        p.TVMKernelModule(sched, [conv.weight, conv.weight])
    fast = p.TVMKernelModule(sched, [conv.weight])
    with pytest.raises(ValueError, match="batch size is part"):
        fast(torch.randn(2, 16, 8, 8))
    with pytest.raises(TypeError, match="float32"):
        fast(torch.randn(1, 16, 8, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="inference"):
        fast(torch.randn(1, 16, 8, 8, requires_grad=True))


def test_torch_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with p.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _small_resnet_with_a_partitioned_conv():
    """A small ResNet whose third block conv computes two channel halves with different groups."""
    net = sn.nn.resnet(blocks=(1, 1, 1, 1), width=8)
    site = sn.nn.transformable_convs(net)[2]
    sched = p.Schedule(site.operator(), [p.Partition("co", 2), p.Group(2, part=0), p.Group(4, part=1)])
    return sn.nn.replace_convs(net, {site.path: sched}), site


def test_compiled_network_computes_what_the_torch_model_computes():
    transformed, site = _small_resnet_with_a_partitioned_conv()
    torch.manual_seed(0)
    model = transformed.build((3, 32, 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(transformed, copy.deepcopy(model), tune=False)
    assert not compiled.fallbacks
    assert len(compiled.schedules) == len(sn.nn.transformable_convs(transformed, include_all=True))
    grouped = compiled.schedules[site.torch_name]
    assert any(isinstance(s, p.Partition) for s in grouped.active_steps())
    assert any(isinstance(s, p.ProgramStep) for s in grouped.active_steps())
    torch.testing.assert_close(compiled(x), expected, atol=1e-4, rtol=1e-4)
    assert isinstance(compiled.model.get_submodule(site.torch_name), p.TVMKernelModule)


def _built_with_batch_norms_far_from_identity(net) -> torch.nn.Module:
    """``net``'s model in eval mode, its batch norms' statistics and affine parameters far from (0, 1)."""
    torch.manual_seed(0)
    model = net.build((3, 32, 32))
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(3 * torch.randn(8, 3, 32, 32) + 1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-1.0, 1.0)
    return model.eval()


def test_compile_network_folds_batch_norm_and_fuses_relu_into_the_kernels():
    transformed, site = _small_resnet_with_a_partitioned_conv()
    model = _built_with_batch_norms_far_from_identity(transformed)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(transformed, copy.deepcopy(model), tune=False)
    torch.testing.assert_close(compiled(x), expected, atol=1e-4, rtol=1e-4)
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in compiled.model.modules())
    assert len(compiled.fused) == len(names)
    assert compiled.fused[site.torch_name] == "batch norm + ReLU"      # the first conv of a block
    # the last conv of each of the 4 blocks adds the shortcut and applies the block's ReLU
    ends = sorted(n for n, what in compiled.fused.items() if what == "batch norm + residual add + ReLU")
    assert ends == ["3.body.3", "4.body.3", "5.body.3", "6.body.3"]
    assert not any(isinstance(m, torch.nn.ReLU) for m in compiled.model.modules())
    kept = sn.nn.compile_network(transformed, copy.deepcopy(model), tune=False, fuse_residual=False)
    assert not any("residual" in what for what in kept.fused.values())
    assert sum(isinstance(m, torch.nn.ReLU) for m in kept.model.modules()) == 4
    torch.testing.assert_close(kept(x), expected, atol=1e-4, rtol=1e-4)
    unfused = sn.nn.compile_network(transformed, copy.deepcopy(model), tune=False, fold_batchnorm=False)
    assert not unfused.fused
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfused.model.modules()) == len(names)
    torch.testing.assert_close(unfused(x), expected, atol=1e-4, rtol=1e-4)


def test_compile_network_fuses_pre_activation_batch_norms_into_the_next_conv():
    # a DenseNet layer (batch norm, ReLU, 1x1 conv, batch norm, ReLU, 3x3 conv) and a transition
    net = sn.nn.Sequential([
        sn.nn.Conv(16, 3),
        sn.nn.Concat([sn.nn.Sequential([sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(32, 1), sn.nn.BatchNorm(),
                                        sn.nn.ReLU(), sn.nn.Conv(8, 3)])], include_input=True),
        sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(12, 3, stride=2), sn.nn.GlobalPool(), sn.nn.Dense(10)])
    model = _built_with_batch_norms_far_from_identity(net)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(net, copy.deepcopy(model), tune=False)
    assert compiled.fused == {"1.branches.0.2": "batch norm + ReLU before, batch norm + ReLU after",
                              "4": "batch norm + ReLU before"}
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU)) for m in compiled.model.modules())
    torch.testing.assert_close(compiled(x), expected, atol=1e-4, rtol=1e-4)
    modules = sn.nn.CompiledNetwork(compiled.model, compiled.schedules, compiled.fallbacks, plan=False)
    torch.testing.assert_close(modules(x), expected, atol=1e-4, rtol=1e-4)
    after_only = sn.nn.compile_network(net, copy.deepcopy(model), tune=False, fuse_preactivation=False)
    assert after_only.fused == {"1.branches.0.2": "batch norm + ReLU"}
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in after_only.model.modules()) == 2
    torch.testing.assert_close(after_only(x), expected, atol=1e-4, rtol=1e-4)
    unfused = sn.nn.compile_network(net, copy.deepcopy(model), tune=False, fold_batchnorm=False)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfused.model.modules()) == 3
    torch.testing.assert_close(unfused(x), expected, atol=1e-4, rtol=1e-4)


def test_compile_network_uses_given_programs_and_falls_back_to_torch_when_nothing_fits():
    net = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.ReLU(), sn.nn.Conv(3, 3), sn.nn.GlobalPool(),
                            sn.nn.Dense(10)])
    sites = sn.nn.transformable_convs(net, include_all=True)
    model = net.build((3, 32, 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = sn.nn.compile_network(net, copy.deepcopy(model),
                                     programs={sites[0].path: p.cpu_conv_template(8, 1)}, tune=False)
    first = compiled.schedules[sites[0].torch_name]
    assert [s for s in first.active_steps() if isinstance(s, p.Split)][0].factor == 8
    assert sites[1].torch_name in compiled.fallbacks        # 3 output channels: no template divides them
    torch.testing.assert_close(compiled(x), expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(KeyError, match="no convolution"):
        sn.nn.compile_network(net, programs={"layers[1]": []}, tune=False)


def test_compiled_network_runs_torch_glue_on_one_thread_and_restores_the_count():
    net = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.GlobalPool(),
                            sn.nn.Dense(10)])
    compiled = sn.nn.compile_network(net, tune=False)
    seen = []
    compiled.model.get_submodule("2").register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled(torch.randn(1, 3, 32, 32))       # (tracing the flat plan runs the hook once more)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_flat_plan_gives_the_modules_outputs_without_aliasing_its_buffers():
    net = sn.nn.resnet18()
    model = net.build((3, 32, 32)).eval()
    planned = sn.nn.compile_network(net, copy.deepcopy(model), tune=False)
    modules = sn.nn.compile_network(net, copy.deepcopy(model), tune=False, plan=False)
    x, x2 = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    assert planned.plan_status == "not built yet"
    first = planned(x)                                  # through the modules; builds and checks the plan
    assert planned.plan_status.startswith(f"flat plan: {len(planned.schedules)} kernels") and len(planned.schedules) == 20
    assert modules.plan_status == "off"
    second = planned(x2)                                # through the plan
    torch.testing.assert_close(second, modules(x2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first, modules(x), rtol=1e-5, atol=1e-6)   # not overwritten by the next call
    torch.testing.assert_close(planned(x.transpose(2, 3).contiguous().transpose(2, 3)), first, rtol=1e-5, atol=1e-6)
    # the plan looks each kernel's function up per call, so a profiler that wraps it sees the calls
    kernel = next(m for m in planned.model.modules() if isinstance(m, sn.program.TVMKernelModule))
    calls, func = [], kernel._func
    kernel._func = lambda *args: calls.append(1) or func(*args)
    planned(x)
    assert calls == [1]


def test_the_flat_plan_frees_each_value_after_its_last_reader():
    # a DenseNet's concatenations, all kept alive to the end of the call, made its plan 2x slower than
    # its modules: the plan must free what it no longer reads, as eager torch does
    net = sn.nn.densenet(blocks=(3, 3), growth=8, num_classes=10)
    model = net.build((3, 32, 32)).eval()
    # the pre-activation batch norms and ReLUs stay torch glue here (fused, they would leave none)
    planned = sn.nn.compile_network(net, copy.deepcopy(model), tune=False, fuse_preactivation=False)
    x = torch.randn(1, 3, 32, 32)
    planned(x)                                          # builds the plan
    assert planned.plan_status.startswith("flat plan")
    outputs, most_alive = [], []                       # weak references to the glue modules' outputs

    def record(_module, _inputs, out):
        most_alive.append(sum(ref() is not None for ref in outputs))   # earlier outputs still held
        outputs.append(weakref.ref(out))
    for module in planned.model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.ReLU)):
            module.register_forward_hook(record)
    out = planned(x)
    assert len(outputs) >= 10                           # the pre-activation batch norms and ReLUs ran
    assert max(most_alive) <= 2                         # each read by the next step, then freed
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


class _DataDependent(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_a_model_the_plan_cannot_trace_runs_through_its_modules():
    compiled = sn.nn.CompiledNetwork(_DataDependent(), {}, {})
    x = torch.ones(1, 3)
    assert torch.equal(compiled(x), x * 2) and torch.equal(compiled(x), x * 2)
    assert compiled.plan_status.startswith("modules: the model could not be run as a flat plan")
