"""The speed-ups of Canvas's kernel sampler keep what it samples (docs/kas.md, sampler rate)."""
import copy
import hashlib
import pickle
import random

import pyglove as pg

import symnas as sn
from symnas.kas import space as kas_space
from symnas.kas.sizes import Size

from algorithms.canvas import _fisher_yates, _shuffler


def _sample(backbone, seed, n, **kw):
    targets = sn.kas.conv_targets(sn.nn.backbone(backbone))
    space = sn.kas.KernelSpace(targets=targets, budget=sn.kas.Budget(flops=0.25), **kw)
    algo = sn.algorithms.Canvas(seed=seed)
    algo.setup(pg.dna_spec(space.search_space()))
    hashes, dnas = [], []
    for _ in range(n):
        dna = algo.propose()
        hashes.append(algo.last_decoded.hash)
        dnas.append(repr(dna.to_numbers()))
    return space, hashes, hashlib.sha256("".join(dnas).encode()).hexdigest()[:16], algo.samples


def test_canvas_proposes_the_same_kernels_and_dnas_as_before_the_speedups():
    # Recorded with main at 37dcf01 (before the sampler speed-ups): same seed, same kernels, same DNA,
    # same number of samples drawn (the RNG is consumed in the same order).
    _, hashes, digest, samples = _sample("resnet18", 3, 40, max_primitives=10)
    assert hashes[:5] == ["47c5876a74364e9b", "631bdc53de9b3bed", "ab2d9cf3eb7b31d0", "2e52692c613761ec",
                          "3f968769e7f94ded"]
    assert hashes[-1] == "472586197f5992fe"
    assert (digest, samples) == ("172e1689188cb16d", 128)
    assert len(set(hashes)) == 40
    _, hashes, digest, samples = _sample("resnet34", 0, 15)
    assert hashes[:3] == ["554ab49f8a36e9aa", "cd9e36b500fc1c85", "9b1ec194d6f10ab4"]
    assert (digest, samples) == ("e6fa09d174d181cc", 61)


def test_sizes_are_interned_so_equal_sizes_are_one_object_even_after_copy_and_pickle():
    a = Size.parse("2*C/G") / Size.number(2)
    assert a is Size.parse("C/G") and a is Size(4, 4, Size.parse("C/G").pw)
    assert copy.deepcopy(a) is a and pickle.loads(pickle.dumps(a)) is a
    assert {a: 1}[Size.parse("C") / Size.symbol("G")] == 1
    assert Size.parse("x0*C").substitute(0, Size.parse("O/C")) is Size.symbol("O")
    assert Size.parse("x1*x0").rename({0: 2, 1: 0}) is Size.parse("x0*x2")
    assert Size.parse("C") != "C" and a != Size.parse("C")


def test_fast_shuffle_draws_the_same_permutations_as_random_shuffle():
    for seed in range(20):
        a, b = random.Random(seed), random.Random(seed)
        fast = _fisher_yates(b.getrandbits)
        for size in (1, 2, 4, 9, 13, 31):
            x, y = list(range(size)), list(range(size))
            a.shuffle(x)
            fast(y)
            assert x == y
        assert a.random() == b.random()
    assert _shuffler(random.Random(0)) is not None


def test_pair_masks_say_exactly_which_two_input_applications_shape_inference_allows():
    space, _, _, _ = _sample("resnet18", 1, 10, max_primitives=10)
    o = space.options()
    groups = next(iter(o.pair_caches))
    ids = list(range(min(len(o.shape_list), 40)))
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        a, b = rng.choice(ids), rng.choice(ids)
        mask = o.pair_mask(a * kas_space._PAIR + b, groups)
        assert bool(mask & kas_space._BROADCAST_BIT) == (o.infer("broadcast", ("add",), (a, b), groups) is not None)
        for params, bit in zip(kas_space._BMM_PARAMS, kas_space._BMM_BITS):
            assert bool(mask & bit) == (o.infer("bmm", params, (a, b), groups) is not None), (params, a, b)
        checked += mask != 0
    assert checked > 0


def test_broadcast_ops_and_gram_softmax_do_not_change_shapes_so_one_cache_entry_serves_them():
    space, _, _, _ = _sample("resnet18", 2, 5, max_primitives=10)
    shapes = space.options().shape_list[:30]
    P = sn.kas.primitives

    def outcome(cls, params, pair):
        try:
            return cls.infer(params, pair), cls.solutions(params, pair)
        except P.PrimitiveError:
            return "error", cls.solutions(params, pair)

    for lhs in shapes:
        for rhs in shapes:
            base = outcome(P.Broadcast, ("add",), (lhs, rhs))
            assert all(outcome(P.Broadcast, (op,), (lhs, rhs)) == base for op in ("sub", "mul", "max", "min"))
            assert outcome(P.BMM, ("gram", True), (lhs, rhs)) == outcome(P.BMM, ("gram", False), (lhs, rhs))


def _direct_infer(o, kind, params, ids, groups):
    """Shape inference straight from the primitive, for one G (what ``_Options.infer`` caches)."""
    P = sn.kas.primitives
    cls = P.PRIMITIVES[kind]
    ins = tuple(o.shape_list[i] for i in ids)

    def sizes_ok(out, extra):
        if len(sn.kas.shapes.dynamic_vars(out)) > 1 or not o.legal([x for x in out if x is not None] + list(extra),
                                                                    groups):
            return False
        n = sn.kas.shapes.numel(out)
        return not n.is_static() or all(n.float_value(env) <= cap for env, cap in zip(o.envs[groups], o.caps))

    try:
        out, extra = cls.infer(params, ins)
        ok = sizes_ok(out, extra) and kas_space._invariant(cls, params, ins, out)
        return ("ok", out, list(extra), o._flops_bound(cls, params, ins, out, groups)) if ok else None
    except P.PrimitiveError:
        pass
    options = []
    for var, value in cls.solutions(params, ins):
        if not o.legal([value], groups):
            continue
        trial = tuple(sn.kas.shapes.substitute(x, var, value) for x in ins)
        try:
            out, extra = cls.infer(params, trial)
        except P.PrimitiveError:
            continue
        if sizes_ok(out, extra) and kas_space._invariant(cls, params, trial, out):
            options.append((var, value, out, list(extra), o._flops_bound(cls, params, trial, out, groups)))
    return ("solve", options) if options else None


def test_shape_inference_cached_once_for_every_g_equals_inferring_directly_per_g():
    space, _, _, _ = _sample("resnet18", 4, 8, max_primitives=10)
    o = space.options()
    groups = list(o.infer_caches)
    assert len(groups) > 1 and len(o.structures) > 0
    rng = random.Random(1)
    ids = list(range(min(len(o.shape_list), 30)))
    unary = [(kind, params) for kind in ("fc", "conv", "unfold", "fold", "mix", "scale", "group", "shift")
             for sid in ids[:6] for params in o.variants(kind, sid, None)[:3]]
    outcomes = set()
    for _ in range(300):
        if rng.random() < 0.5:
            kind, params, pair = "broadcast", (rng.choice(("add", "mul")),), (rng.choice(ids), rng.choice(ids))
        else:
            (kind, params), pair = rng.choice(unary), (rng.choice(ids),)
        for g in groups:
            expected = _direct_infer(o, kind, params, pair, g)
            got = o.infer(kind, params, pair, g)
            got = got if got is None or got[0] == "solve" else (got[0], got[1], list(got[2]), got[3])
            if got is not None and got[0] == "solve":
                got = ("solve", [(v, x, out, list(extra), b) for v, x, out, extra, b in got[1]])
            assert got == expected, (kind, params, pair, g)
            outcomes.add(None if got is None else got[0])
    assert outcomes == {None, "ok", "solve"}


def test_budget_solver_gives_the_same_sizes_with_its_per_size_cache():
    kernel = sn.kas.Kernel([sn.kas.primitives.Unfold("HW", 3), sn.kas.primitives.FC("x0"),
                            sn.kas.primitives.Activation("relu"), sn.kas.primitives.FC("O")])
    targets = sn.kas.conv_targets(sn.nn.backbone("resnet34"))
    budget = sn.kas.Budget(flops=0.25)
    plain = sn.kas.solver.solve_sizes(kernel.analyze(), targets, 2, budget)
    statics = {}
    first = sn.kas.solver.solve_sizes(kernel.analyze(), targets, 2, budget, statics=statics)
    again = sn.kas.solver.solve_sizes(kernel.analyze(), targets, 2, budget, statics=statics)
    assert statics and first == plain == again
    assert plain["flops"] <= 0.25 * plain["baseline_flops"]
