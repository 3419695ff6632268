"""symnas's fast paths over PyGlove's internals agree with PyGlove's own slow paths, and fall back to
them when they would not."""
import pickle
import random

import pyglove as pg
import pytest

import symnas as sn
from symnas import pyglove_fastpaths as fast


def test_every_fast_path_agrees_with_pyglove():
    assert fast.self_check() == {"make_dna": True, "read_dna": True, "compact_value": True, "containers": True,
                                 "remembered_resolve": True, "fast_decoder": True, "shared_value": True}


def test_a_list_field_of_an_object_decodes_with_its_value_spec_as_pyglove_does():
    space = sn.spaces.NASBench201()
    decoder = fast.FastDecoder(space)
    template = pg.hyper.template(space)
    for seed in range(5):
        dna = pg.random_dna(template.dna_spec(), random.Random(seed))
        value, slow = decoder.decode(dna), template.decode(dna)
        assert decoder.fast and pg.eq(value, slow) and value.to_json_str() == slow.to_json_str()
        assert value.ops.value_spec == slow.ops.value_spec and value.ops.value_spec is not None
        assert value.ops.sym_parent is value and str(value.ops.sym_path) == "ops"
    with pytest.raises(ValueError):
        value.ops[0] = "not_an_op"   # the spec still checks what is assigned later


def test_remembered_resolve_sees_a_schema_that_changed():
    schema = pg.typing.create_schema([("x", pg.typing.Int(default=0))])
    with fast.remembered_resolve():
        assert pg.typing.Schema.resolve is not fast._RESOLVE
        assert fast._memo_resolve(schema, ["x", "y"])[1] == ["y"]
        schema.extend(pg.typing.create_schema([("y", pg.typing.Int(default=0))]))
        assert fast._memo_resolve(schema, ["x", "y"]) == fast._RESOLVE(schema, ["x", "y"])
        assert fast._memo_resolve(schema, ["x", "y"])[1] == []
    assert pg.typing.Schema.resolve is fast._RESOLVE


SPACES = [
    pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3])),
    pg.List([pg.oneof(["a", "b", "c"]) for _ in range(5)]),
    pg.Dict(blocks=[pg.oneof([pg.Dict(kind="mb", expand=pg.oneof([3, 6])), pg.Dict(kind="plain")])
                    for _ in range(3)],
            sets=pg.manyof(2, ["p", "q", "r"]), lr=pg.floatv(1e-5, 1e-1, scale="log")),
    pg.oneof([1, 2, 3]),
]


@pytest.mark.parametrize("space", SPACES)
def test_the_fast_decoder_equals_pyglove_decode(space):
    decoder = fast.FastDecoder(space)
    template = pg.hyper.template(space)
    rng = random.Random(1)
    for _ in range(25):
        dna = pg.random_dna(template.dna_spec(), rng)
        assert pg.eq(decoder.decode(dna), template.decode(dna))
    assert decoder.fast


def test_a_fast_decoder_that_disagrees_falls_back_to_pyglove(monkeypatch):
    space = pg.Dict(x=pg.oneof([1, 2]), y=pg.floatv(0.0, 1.0))
    monkeypatch.setattr(fast._Plan, "run", lambda self, element_dnas: pg.Dict(x=99, y=0.0))
    decoder = fast.FastDecoder(space)
    assert decoder.decode(pg.DNA([1, 0.5])) == pg.Dict(x=2, y=0.5)
    assert not decoder.fast and decoder.decode(pg.DNA([0, 0.25])) == pg.Dict(x=1, y=0.25)


@pytest.mark.parametrize("compact", [[0, (1, [2, 0.5]), [1, 2]], (2, 1, 0.25), 3, [(0, 1), 3], None])
def test_built_dna_equals_pyglove_dna_and_reads_back(compact):
    slow = pg.DNA(compact)
    node = fast._node_of(slow) if compact is not None else None
    built = fast.make_dna(node)
    assert built == slow and built.to_json() == slow.to_json()
    assert fast.compact_value(built) == slow.to_json(compact=True)["value"]


def test_dna_building_falls_back_to_the_constructor_when_the_check_fails(monkeypatch):
    monkeypatch.setattr(fast, "_PROTO", None)
    monkeypatch.setattr(fast, "_check_make_dna", lambda: False)
    built = fast.make_dna(fast.DNANode(1, [fast.DNANode(0.5, [])]))
    assert built == pg.DNA((1, 0.5)) and fast._PROTO is False


def test_a_shared_value_reads_compares_serialises_and_pickles_as_its_value():
    value = pg.List([sn.program.Group(2)]).seal()
    shared = fast.share(value, sn.spaces.transformations.SharedSteps)
    holder = pg.Dict(steps=shared)
    assert holder.steps is value
    assert pg.to_json(holder) == pg.to_json(pg.Dict(steps=value.clone()))
    assert pg.eq(holder, pg.Dict(steps=value.clone())) and pg.hash(shared) == pg.hash(value)
    assert pickle.loads(pickle.dumps(shared)).value == value


def test_sharing_falls_back_to_the_plain_value_when_references_misbehave(monkeypatch):
    monkeypatch.setattr(fast, "_SHARED_OK", False)
    value = pg.List([1]).seal()
    assert fast.share(value) is value


class _Frozen(pg.Object):
    x: int = 1
    tag: str = "t"


def test_object_json_writes_what_pyglove_writes_and_falls_back_where_it_cannot():
    values = [sn.spaces.NASBench201(ops=["none"] * 6), sn.spaces.NASBench201(ops=["none"] * 6, table="/t.csv"),
              pg.Dict(a=1, b=[1, 2.5, "x", None, True]), pg.List([1, pg.Dict(x=None)]), _Frozen(x=3),
              pg.Dict(x=float("nan")), pg.Dict(r=pg.Ref(pg.Dict(y=1))), "plain", 3]
    for value in values:
        assert fast.object_json(value) == pg.to_json_str(value, save_ref_value=True), value
    assert fast._CLASS_AGREES[sn.spaces.NASBench201] is True
