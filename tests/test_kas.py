"""sn.kas: primitives, solvers, the search space, Canvas's sampler, torch modules, layers, pruning."""
import math

import pyglove as pg
import pytest
import torch

import symnas as sn
from symnas.kas import shapes as S
from symnas.kas.kernel import KernelRejected
from symnas.kas.primitives import PrimitiveError
from symnas.kas.sizes import Size, SizeError

P = sn.kas.primitives
SMALL = [sn.kas.ConvTarget(c_in=16, c_out=16, h=8, w=8, count=3),
         sn.kas.ConvTarget(c_in=16, c_out=32, h=8, w=8, stride=2)]


def small_space(**kw):
    kw.setdefault("budget", sn.kas.Budget(flops=0.5))
    kw.setdefault("max_primitives", 10)
    return sn.kas.KernelSpace(targets=SMALL, **kw)


def test_size_arithmetic_parsing_and_printing():
    s = Size.parse("C/G") * Size.parse("3")
    assert str(s) == "3*C/G" and s.value({"C": 64, "G": 4}) == 48
    assert Size.parse("x0").dynamic_vars() == [0]
    assert Size.parse("H*W/S^2").value({"H": 32, "W": 32, "S": 2}) == 256
    assert Size.parse("x1").rename({1: 0}) == Size.parse("x0")
    with pytest.raises(SizeError, match="unknown symbol 'Q'"):
        Size.parse("2*Q")
    with pytest.raises(SizeError, match="cannot parse"):
        Size.parse("C+1")


def test_primitive_shapes_and_errors_name_the_primitive_and_size():
    out, _ = P.Unfold.infer(("HW", 3, 1), (S.INPUT,))
    assert S.text(out) == "[C, KH=3, KW=3, H, W]"
    grouped, extra = P.Group.infer(("G",), (S.INPUT,))
    assert S.text(grouped) == "[G, C/G, H, W]" and str(extra[0]) == "C/G"
    pooled, _ = P.Fold.infer(("HW", "avg"), (S.INPUT,))
    with pytest.raises(PrimitiveError, match=r"Unfold\(H, 3, 1\).*no H axis"):
        P.Unfold.infer(("H", 3, 1), (pooled,))
    with pytest.raises(PrimitiveError, match="already unfolded"):
        P.Unfold.infer(("H", 3, 1), (out,))
    with pytest.raises(PrimitiveError, match=r"FC\(C\+1\)"):
        P.FC.infer(("C+1",), (S.INPUT,))


def test_kernel_must_use_every_branch_and_close_to_the_output():
    with pytest.raises(KernelRejected, match="never read"):
        sn.kas.Kernel([P.Activation("relu"), P.FC("O", inputs=[0])]).analyze()
    with pytest.raises(KernelRejected, match=r"does not close to \[O, H, W\]"):
        sn.kas.Kernel([P.Unfold("HW", 3)]).analyze()


def test_reference_kernels_belong_to_their_families_and_others_do_not():
    kernels = sn.kas.reference_kernels()
    for name, kernel in kernels.items():
        assert sn.kas.classify(kernel) == {name}
    dense = sn.kas.Kernel([P.Unfold("HW", 3), P.FC("O")])
    assert sn.kas.classify(dense) == set()


def test_budget_solver_fills_the_budget_by_doubling_and_stays_within_it():
    kernel = sn.kas.spatially_separable()
    budget = sn.kas.Budget(flops=0.3)
    a = kernel.analyze()
    sol = sn.kas.solve_budget(a, SMALL, 1, budget)
    limit = budget.limits(SMALL)["flops"]
    assert sol.flops <= limit
    for t in SMALL:
        values = sol.for_target(t)
        assert set(values) == {"x0"} and values["x0"] >= 1
        # Any further doubling of this target's variable breaks the budget.
        doubled = sum(kernel.flops(u, dict(sol.for_target(u), x0=sol.for_target(u)["x0"] * (2 if u is t else 1)))
                      * u.count for u in SMALL)
        assert doubled > limit
    assert sol.flops == sum(kernel.flops(t, sol.for_target(t)) * t.count for t in SMALL)


def test_budget_solver_rejects_a_kernel_whose_smallest_sizes_exceed_the_budget():
    dense = sn.kas.Kernel([P.Unfold("HW", 7), P.FC("O")])
    with pytest.raises(KernelRejected, match="smallest legal sizes"):
        sn.kas.solve_budget(dense.analyze(), SMALL, 1, sn.kas.Budget(flops=0.5))


def test_shape_matching_offers_the_involution_solution():
    lhs, _ = P.Group.infer(("G",), (P.FC.infer(("x0",), (S.INPUT,))[0],))
    rhs, _ = P.Unfold.infer(("HW", 3, 1), (P.Group.infer(("G",), (S.INPUT,))[0],))
    with pytest.raises(PrimitiveError, match="dynamic sizes solved"):
        P.Broadcast.infer(("mul",), (lhs, rhs))
    values = {str(v) for var, v in P.Broadcast.solutions(("mul",), (lhs, rhs))}
    assert "9*G" in values


def test_stride_is_pushed_down_to_the_first_neighbourhood_primitive():
    a = sn.kas.depthwise_separable().analyze()
    assert a.strided == [False, True, True, True, True]
    assert str(a.macs[-1]) == "C*O*H*W/S^2"


def test_canvas_proposes_distinct_valid_solved_kernels_within_budget():
    space = small_space()
    hyper = space.search_space()
    algo = sn.algorithms.Canvas(seed=0)
    seen = set()
    limit = space.budget.limits(SMALL)["flops"]
    for design, feedback in pg.sample(hyper, algo, num_examples=25):
        decoded = design.decode()
        assert decoded.hash not in seen
        seen.add(decoded.hash)
        assert decoded.solution["flops"] <= limit
        for t in SMALL:
            decoded.kernel.check(t, decoded.solution["values"][t.key])
        feedback(0.0)
    assert algo.samples >= 25


def test_canvas_with_worker_processes_proposes_distinct_valid_solved_kernels_and_stops_them():
    space = small_space()
    algo = sn.algorithms.Canvas(seed=0, workers=2)
    seen = set()
    limit = space.budget.limits(SMALL)["flops"]
    try:
        for design, feedback in pg.sample(space.search_space(), algo, num_examples=25):
            decoded = design.decode()
            assert decoded.hash not in seen and algo.last_decoded.hash == decoded.hash
            seen.add(decoded.hash)
            assert decoded.solution["flops"] <= limit
            feedback(0.0)
        workers = list(algo._workers)
        assert len(workers) == 2 and all(p.is_alive() for p in workers)
        assert algo.samples >= 25 and sum(algo.rejections.values()) == algo.samples - 25
    finally:
        algo.close()
    assert not any(p.is_alive() for p in workers)


def test_canvas_workers_that_find_no_kernel_raise_in_the_search_process_instead_of_hanging():
    algo = sn.algorithms.Canvas(seed=0, workers=2, max_attempts=1)
    algo.setup(pg.dna_spec(small_space(min_primitives=12, max_primitives=12).search_space()))
    with pytest.raises(RuntimeError, match="no new valid kernel in 1 samples"):
        for _ in range(50):
            algo.propose()
    assert algo._workers is None


def _children(algo, space, parents, n):
    """Decoded kernels of ``n`` children bred from ``parents`` (hand-written kernels fed back as the population)."""
    hyper = space.search_space()
    spec = pg.dna_spec(hyper)
    algo.setup(spec)
    for kernel in parents:
        dna = pg.template(hyper).encode(space.encode(kernel))
        dna.use_spec(spec)
        algo.feedback(dna, 1.0)
    out = []
    for _ in range(n):
        try:
            out.append(pg.materialize(hyper, algo.propose()).decode())
        except sn.kas.KernelRejected:
            out.append(None)
    return out


def test_kernel_evolution_mutates_what_the_kernels_use_so_children_are_new_kernels_far_more_often():
    space = small_space(min_primitives=3, max_primitives=25)       # the default range: most steps unused
    parents = [sn.kas.depthwise_separable(), sn.kas.bottleneck_separable()]
    known = {space.encode(k).decode().hash for k in parents}

    def new_kernels(algo):
        return len({d.hash for d in _children(algo, space, parents, 60) if d is not None} - known)

    plain = new_kernels(sn.algorithms.RegularizedEvolution(population_size=2, tournament_size=2, seed=0))
    ours = new_kernels(sn.algorithms.KernelEvolution(population_size=2, tournament_size=2, seed=0))
    assert ours >= 2 * plain and ours >= 10


def test_kernel_evolution_fills_its_population_with_canvas_samples():
    space = small_space()
    algo = sn.algorithms.KernelEvolution(population_size=6, seed=0)
    for design, feedback in pg.sample(space.search_space(), algo, num_examples=6):
        decoded = design.decode()                # every sampled member is a valid, solved kernel
        assert decoded.flops_ratio <= 0.5
        feedback(-decoded.flops_ratio)
    with pytest.raises(ValueError, match="holds no sn.kas.KernelSpace"):
        sn.algorithms.KernelEvolution(seed=0).setup(pg.dna_spec(pg.List([pg.oneof([1, 2])])))


def test_generic_algorithms_search_the_space_and_record_rejections():
    space = small_space()

    def evaluate(design):
        return -design.decode().flops_ratio

    for algo in (sn.algorithms.Random(seed=0), sn.algorithms.RegularizedEvolution(population_size=4, seed=0),
                 sn.algorithms.Reinforce(seed=0)):
        study = sn.search(space.search_space(), evaluate, algo, num_trials=12, storage=None)
        statuses = set(study.trials["status"])
        assert statuses <= {"completed", "rejected"}
        assert "completed" in statuses or "rejected" in statuses
        rejected = study.trials[study.trials["status"] == "rejected"]
        assert all(isinstance(r, str) and r for r in rejected["error"])


def test_encoding_a_reference_kernel_decodes_to_the_same_structure():
    space = sn.kas.KernelSpace(targets=SMALL, budget=sn.kas.Budget(flops=1.0), min_primitives=3,
                               max_primitives=8, group_values=[4])
    for kernel in [sn.kas.depthwise_separable(), sn.kas.spatially_separable(), sn.kas.involution()]:
        design = space.encode(kernel)
        decoded = design.decode()
        assert sn.kas.classify(decoded.kernel) == sn.kas.classify(kernel)
        assert len(decoded.steps) == len(kernel.primitives)


def test_strided_module_equals_the_subsampled_stride_one_module():
    space = small_space()
    algo = sn.algorithms.Canvas(seed=3)
    hyper = space.search_space()
    algo.setup(pg.dna_spec(hyper))
    torch.manual_seed(0)
    for _ in range(15):
        decoded = pg.materialize(hyper, algo.propose()).decode()
        values = decoded.solution["values"][SMALL[1].key]
        env = {"C": 16, "O": 32, "H": 8, "W": 8, "S": 2, **values}
        m2 = sn.kas.KernelModule(decoded.kernel, env)
        m1 = sn.kas.KernelModule(decoded.kernel, dict(env, S=1))
        m2.load_state_dict(m1.state_dict())
        x = torch.randn(2, 16, 8, 8)
        with torch.no_grad():
            y1, y2 = m1(x), m2(x)
        assert y2.shape == (2, 32, 4, 4)
        torch.testing.assert_close(y2, y1[..., ::2, ::2], atol=1e-4, rtol=1e-4)


def _native_and_generic(kernel, env):
    torch.manual_seed(0)
    native = sn.kas.KernelModule(kernel, env)
    generic = sn.kas.KernelModule(kernel, env, native=False)
    for p in native.parameters():               # non-trivial weights (Scale starts at ones)
        torch.nn.init.normal_(p, std=0.5)
    generic.load_state_dict(native.state_dict())
    return native, generic


@pytest.mark.parametrize("stride", [1, 2])
def test_native_torch_ops_equal_the_generic_primitive_chain(stride):
    kernels = [sn.kas.depthwise_separable(), sn.kas.spatially_separable(), sn.kas.bottleneck_separable(),
               sn.kas.depthwise_separable(5, out="C"), sn.kas.involution(),
               sn.kas.Kernel([P.Group("G"), P.Unfold("HW", 3, 2), P.FC("O")], groups=4),
               sn.kas.Kernel([P.Unfold("W", 3), P.Unfold("H", 5), P.FC("O")]),
               sn.kas.Kernel([P.Shift("HW", 1), P.FC("x0"), P.Shift("W", -2), P.Activation("relu"), P.FC("O")])]
    env = {"C": 16, "O": 32, "H": 8, "W": 8, "S": stride, "x0": 24, "G": 4}
    x = torch.randn(2, 16, 8, 8)
    rewritten = 0
    for kernel in kernels:
        native, generic = _native_and_generic(kernel, dict(env, O=16) if kernel.out_channels == "C" else env)
        rewritten += len(native.native_chains)
        assert generic.native_chains == []
        with torch.no_grad():
            torch.testing.assert_close(native(x), generic(x), atol=1e-4, rtol=1e-4)
    assert rewritten >= 6          # unfold+FC x4, unfold+scale+fold x3 (the involution's unfold is shared)
    # and on Canvas's samples, trained through both paths alike
    space = small_space()
    algo = sn.algorithms.Canvas(seed=5)
    hyper = space.search_space()
    algo.setup(pg.dna_spec(hyper))
    for _ in range(6):
        decoded = pg.materialize(hyper, algo.propose()).decode()
        target = SMALL[stride - 1]
        env = {"C": 16, "O": target.c_out, "H": 8, "W": 8, "S": stride, **decoded.solution["values"][target.key]}
        native, generic = _native_and_generic(decoded.kernel, env)
        xs = x.clone().requires_grad_(True)
        y = native(xs)
        y.square().mean().backward()
        xg = x.clone().requires_grad_(True)
        generic(xg).square().mean().backward()
        torch.testing.assert_close(y, generic(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(xs.grad, xg.grad, atol=1e-4, rtol=1e-4)


def test_depthwise_kernel_trains_like_the_torch_convolutions_it_equals():
    # One SGD step moves the kernel exactly as it moves a depthwise + pointwise conv pair with the same
    # weights: the averaging fold's 1/9 does not shrink the depthwise weights' learning rate 81-fold.
    torch.manual_seed(0)
    m = sn.kas.KernelModule(sn.kas.depthwise_separable(), {"C": 8, "O": 16, "H": 8, "W": 8})
    scale = m.layers[0].weight
    assert 0 < scale.abs().max() <= 1 / 3 and scale.std() > 0.05      # a conv's initialisation, not ones
    ref = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                              torch.nn.Conv2d(8, 16, 1, bias=False))
    with torch.no_grad():
        ref[0].weight.copy_(scale.reshape(8, 1, 3, 3))
        ref[1].weight.copy_(m.layers[1].weight)
    x = torch.randn(4, 8, 8, 8)
    for model in (m, ref):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        model(x).square().mean().backward()
        optimizer.step()
    torch.testing.assert_close(m(x), ref(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.layers[0].weight.reshape(8, 1, 3, 3), ref[0].weight)


def test_depthwise_separable_module_matches_torch_convolutions():
    # The Scale's weight is the depthwise conv's weight (the averaging fold's 1/9 is folded into it).
    m = sn.kas.KernelModule(sn.kas.depthwise_separable(), {"C": 8, "O": 16, "H": 8, "W": 8})
    dw, pw = torch.randn(8, 1, 3, 3), torch.randn(16, 8, 1, 1)
    with torch.no_grad():
        m.layers[0].weight.copy_(dw.reshape(m.layers[0].weight.shape))
        m.layers[1].weight.copy_(pw)
    x = torch.randn(2, 8, 8, 8)
    ref = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, dw, padding=1, groups=8), pw)
    torch.testing.assert_close(m(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_lowered_conv_layers_compute_the_kernel_module(stride):
    kernel = sn.kas.Kernel([P.Group("G"), P.Unfold("HW", 3), P.FC("x0"), P.Activation("relu"), P.FC("O")], groups=4)
    env = {"C": 16, "O": 32, "H": 8, "W": 8, "S": stride, "x0": 24}
    m = sn.kas.KernelModule(kernel, env).eval()
    layers = sn.kas.lower_to_layers(kernel, m.env)
    assert [type(x).__name__ for x in layers] == ["Conv", "ReLU", "Conv"]
    built = sn.nn.Sequential(layers).build((16, 8, 8)).eval()
    sn.kas.transfer_weights(m, kernel, built)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(built(x), m(x), atol=1e-4, rtol=1e-4)
    assert sn.kas.lower_to_layers(sn.kas.involution(), dict(env, G=4)) is None


def test_kernel_conv_replaces_resnet_convs_and_round_trips_through_json():
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    targets = sn.kas.conv_targets(net)
    assert any(t.c_in != t.c_out and t.stride == 2 for t in targets)
    kernel = sn.kas.involution(groups=4)
    sol = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=1.0))
    fast = sn.kas.replace_convs(net, kernel, sol, targets)
    model = fast.build((3, 32, 32))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    sn.nn.init_by_name(model, seed=1)
    again = sn.from_json(pg.to_json_str(fast))
    assert pg.eq(again, fast)


def test_kernels_assigned_per_layer_build_train_and_switch_to_generic_ops_with_the_same_numbers():
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    targets = sn.kas.conv_targets(net)
    dws, bottleneck = sn.kas.depthwise_separable(), sn.kas.bottleneck_separable()
    budget = sn.kas.Budget(flops=1.0)
    s1 = sn.kas.solve_budget(dws.analyze(), targets, dws.groups, budget)
    s2 = sn.kas.solve_budget(bottleneck.analyze(), targets, bottleneck.groups, budget)
    mixed = sn.kas.assign_kernels(net, [(dws, s1, targets[:2]), (bottleneck, s2, targets[2:])])
    convs = pg.query(mixed, where=lambda v: isinstance(v, sn.kas.KernelConv))
    assert sorted(len(v.kernel.names()) for v in convs.values()) == \
        sorted([4] * sum(t.count for t in targets[:2]) + [5] * sum(t.count for t in targets[2:]))
    partial = sn.kas.assign_kernels(net, [(dws, s1, targets[:1])])      # the other convs stay convs
    assert len(pg.query(partial, where=lambda v: isinstance(v, sn.kas.KernelConv))) == targets[0].count
    with pytest.raises(ValueError, match="assigned two kernels"):
        sn.kas.assign_kernels(net, [(dws, s1, targets[:1]), (bottleneck, s2, targets[:1])])
    torch.manual_seed(0)
    model = mixed.build((3, 32, 32)).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.no_grad():
        native = model(x)
        generic = sn.kas.set_native(model, False)(x)
    torch.testing.assert_close(native, generic, atol=1e-4, rtol=1e-4)
    assert all(not m.native_chains for m in model.modules() if isinstance(m, sn.kas.KernelModule))
    times = sn.kas.train_step_times({"mixed": model}, x, y, rounds=1, steps=1)
    assert times["mixed"] > 0 and model.training


def _trial(tid, accuracy, loss):
    return pg.tuning.Trial(id=tid, dna=pg.DNA(0), created_time=0, measurements=[
        pg.tuning.Measurement(step=1, elapse_secs=1.0, reward=accuracy,
                              metrics={"accuracy": accuracy, "train_loss": loss})])


def test_canvas_pruning_stops_on_a_loss_milestone_and_on_the_accuracy_curve():
    policy = sn.kas.CanvasPruning(max_step=4, theta=0.5, loss_milestones=[2.0])
    assert not policy.should_stop_early(_trial(1, 0.8, 1.0))
    assert policy.should_stop_early(_trial(2, 0.7, 2.5))      # loss 2.5 > milestone 2.0
    assert policy.should_stop_early(_trial(3, 0.4, 1.5))      # 0.4 < (0.5 + 0.5 / 4) * 0.8
    assert not policy.should_stop_early(_trial(4, 0.7, 1.2))


def test_proxy_filter_rejects_a_network_scoring_below_the_reference():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
    model(x)
    score = sn.kas.ProxyFilter(proxy="snip").score(model, x, y)
    assert sn.kas.ProxyFilter(proxy="snip", reference=score).admit(model, x, y) == pytest.approx(score)
    with pytest.raises(sn.TrialRejected, match="snip score"):
        sn.kas.ProxyFilter(proxy="snip", reference=score * 10).admit(model, x, y)


def test_fisher_proxy_scores_a_network_whose_weighted_primitives_run_inside_native_convs(small_kernel_resnet):
    _, fast = small_kernel_resnet(sn.kas.spatially_separable())     # both FCs run inside native F.conv2d calls
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    with pytest.raises(sn.proxies.ProxyError, match="took no part"):    # hooks on native chains never fire
        sn.proxies.get("fisher", seed=0).score(fast.build((3, 32, 32)), x, y)
    assert sn.kas.network_proxy(fast, x, y, "fisher") > 0
    torch.manual_seed(0)
    model = fast.build((3, 32, 32))
    assert sn.kas.ProxyFilter(proxy="fisher").score(model, x, y) > 0
    assert any(m.native_chains for m in model.modules() if isinstance(m, sn.kas.KernelModule))   # left native


def test_space_rejects_bad_settings_clearly():
    with pytest.raises(ValueError, match="G=3 does not divide"):
        small_space(group_values=[3])
    with pytest.raises(ValueError, match="min_primitives 9 > max_primitives 4"):
        small_space(min_primitives=9, max_primitives=4)
    with pytest.raises(ValueError, match="out_channels='C'"):
        sn.kas.Kernel([P.FC("C")], out_channels="C").env({"C": 8, "O": 16, "H": 4, "W": 4})


def test_fastest_per_shape_gives_each_conv_shape_a_timed_kernel_or_keeps_the_conv():
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    targets = sn.kas.conv_targets(net)[:2]
    budget = sn.kas.Budget(flops=1.0)
    solved = [(name, k, sn.kas.solve_budget(k.analyze(), targets, k.groups, budget))
              for name, k in (("dws", sn.kas.depthwise_separable()), ("bottleneck", sn.kas.bottleneck_separable()))]
    network, ratio, choices = sn.kas.fastest_per_shape(net, targets, solved, backend="tvm", repeat=1, number=1)
    assert [c["target"] for c in choices] == [t.key for t in targets]
    for c in choices:
        assert c["choice"] in ("dws", "bottleneck", None) and c["ms"] > 0 and c["conv_ms"] > 0
        assert c["ms"] <= c["conv_ms"] and (c["choice"] is None) == (c["ms"] == c["conv_ms"])
    replaced = pg.query(network, where=lambda v: isinstance(v, sn.kas.KernelConv))
    assert len(replaced) == sum(t.count for t, c in zip(targets, choices) if c["choice"] is not None)
    assert (ratio == 1.0) if not replaced else 0 < ratio < 1.0
    assert network.build((3, 32, 32))(torch.randn(1, 3, 32, 32)).shape == (1, 10)
