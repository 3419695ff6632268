"""PyGlove's slow paths, done fast: every place symnas relies on PyGlove's internals, in one module.

A search loop over a tabular benchmark or a zero-cost proxy spends its time in PyGlove itself:
``pg.DNA(...)`` costs milliseconds per DNA, ``pg.hyper.template(space).decode(dna)`` deep-clones
the whole space, and a 156-layer candidate copies every layer. The fast paths here do the same
work on PyGlove's internal structure:

- ``make_dna`` builds a ``pg.DNA`` without its constructor; ``dna_value`` / ``dna_children`` /
  ``compact_value`` read one without the symbolic attribute machinery;
- ``FastDecoder`` decodes a DNA by rebuilding only the symbolic nodes on the path to a decision,
  lists of plain values without ``pg.List``'s constructor (``new_list`` / ``new_dict``) and with
  ``pg.typing.Schema.resolve`` remembered per schema and keys (``remembered_resolve``);
- ``object_json`` writes a candidate's JSON as ``pg.to_json_str`` does, without its machinery;
- ``SharedValue`` (a ``pg.Ref``) lets many candidates reference one sealed value instead of copying it.

Each is checked against PyGlove's own slow path the first time it is used (and by ``self_check()``,
which the test suite runs); where they disagree, for example under another PyGlove version, the
slow path is used instead and nothing else changes.

Example::

    node = DNANode(1, [DNANode(0.5, [])])
    assert make_dna(node) == pg.DNA((1, 0.5))
    assert all(self_check().values())
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional

import pyglove as pg

__all__ = ["DNANode", "make_dna", "dna_from_compact", "dna_value", "dna_children", "compact_value",
           "FastDecoder", "new_list", "new_dict", "remembered_resolve", "object_json", "SharedValue", "share", "self_check"]


# ---- DNA: build and read ---------------------------------------------------------------------------
class DNANode:
    """A DNA node in normal form (what ``pg.DNA(...)`` would hold) before it becomes a ``pg.DNA``."""

    __slots__ = ("value", "children")

    def __init__(self, value, children):
        self.value, self.children = value, children


_PROTO = None     # None: not checked yet; False: the fast path disagreed with pg.DNA
_USERDATA_TYPE = dict


def _prototypes():
    global _PROTO, _USERDATA_TYPE
    if _PROTO is None:
        dna = pg.DNA([0, 1])
        child = dna.children[0]
        _PROTO = (
            {k: v for k, v in vars(child).items()},
            {k: v for k, v in vars(vars(child)["_sym_attributes"]).items()},
            {k: v for k, v in vars(vars(dna)["_sym_attributes"]["children"]).items()},
            {k: v for k, v in vars(vars(child)["_sym_attributes"]["metadata"]).items()},
        )
        _USERDATA_TYPE = type(_PROTO[0]["_userdata"])
        if not _check_make_dna():
            _PROTO = False
    return _PROTO


def _check_make_dna() -> bool:
    try:
        for compact in ([0, (1, [2, 0.5]), [1, 2]], (2, 1, 0.25), 3):
            fast = _build(_node_of(pg.DNA(compact)), _ROOT)
            slow = pg.DNA(compact)
            if not (fast == slow and fast.to_json() == slow.to_json() and repr(fast) == repr(slow)
                    and _same_paths(fast, slow) and fast.sym_parent is None):
                return False
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def _same_paths(a, b) -> bool:
    if a.sym_path != b.sym_path or len(a.children) != len(b.children) or \
            any(c.sym_parent is not a.children for c in a.children):
        return False
    return all(_same_paths(x, y) for x, y in zip(a.children, b.children))


def _node_of(d) -> DNANode:
    return DNANode(d.value, [_node_of(c) for c in d.children])


_new = object.__new__
_ROOT = pg.KeyPath()
_PATHS: Dict[tuple, tuple] = {}   # (key, id(parent)) -> (parent, path): DNAs of one space share their paths


def _path(key, parent) -> pg.KeyPath:
    """``pg.KeyPath(key, parent)``, made once per position (a KeyPath is never changed in place)."""
    entry = _PATHS.get((key, id(parent)))
    if entry is not None and entry[0] is parent:
        return entry[1]
    if len(_PATHS) > 100_000:
        _PATHS.clear()
    path = pg.KeyPath(key, parent)
    _PATHS[(key, id(parent))] = (parent, path)
    return path


def _build(node: DNANode, path, parent=None) -> pg.DNA:
    dna_vars, attr_vars, list_vars, meta_vars = _PROTO
    dna = _new(pg.DNA)
    dv = vars(dna)
    dv.update(dna_vars)
    dv["_sym_parent"] = parent
    dv["_sym_path"] = path
    dv["_userdata"] = _USERDATA_TYPE()
    dv["_cloneable_metadata_keys"] = set()
    dv["_cloneable_userdata_keys"] = set()

    attrs = dict.__new__(pg.Dict)
    av = vars(attrs)
    av.update(attr_vars)
    av["_sym_parent"] = dna
    av["_sym_path"] = path

    kids_path, meta_path = _subpaths(path)
    kids = list.__new__(pg.List)
    kv = vars(kids)
    kv.update(list_vars)
    kv["_sym_parent"] = dna
    kv["_sym_path"] = kids_path
    children = node.children
    if children:
        list.extend(kids, [_build(c, _path(i, kids_path), kids) for i, c in enumerate(children)])

    meta = dict.__new__(pg.Dict)
    mv = vars(meta)
    mv.update(meta_vars)
    mv["_sym_parent"] = dna
    mv["_sym_path"] = meta_path

    dict.update(attrs, value=node.value, children=kids, metadata=meta)
    dv["_sym_attributes"] = attrs
    return dna


_SUBPATHS: Dict[int, tuple] = {}   # id(path) -> (path, its "children" path, its "metadata" path)


def _subpaths(path) -> tuple:
    entry = _SUBPATHS.get(id(path))
    if entry is None or entry[0] is not path:
        if len(_SUBPATHS) > 100_000:
            _SUBPATHS.clear()
        entry = _SUBPATHS[id(path)] = (path, _path("children", path), _path("metadata", path))
    return entry[1], entry[2]


def _compact_of(node: DNANode):
    if node.value is None:
        return [_compact_of(c) for c in node.children]
    if not node.children:
        return node.value
    if len(node.children) == 1 and node.children[0].value is not None:
        inner = _compact_of(node.children[0])
        return (node.value,) + (inner if isinstance(inner, tuple) else (inner,))
    return (node.value, [_compact_of(c) for c in node.children])


def make_dna(node: Optional[DNANode]) -> pg.DNA:
    """A ``pg.DNA`` equal to ``pg.DNA(<compact form of node>)``, built without its slow constructor."""
    if node is None:
        return pg.DNA(None)
    if _prototypes():
        return _build(node, _ROOT)
    return pg.DNA(_compact_of(node))


def dna_from_compact(value: Any) -> pg.DNA:
    """``pg.DNA.from_json`` of a stored compact DNA value (nested lists; ``["__tuple__", v, ...]`` for
    a conditional choice), built without PyGlove's slow constructor (milliseconds per DNA)."""
    try:
        return make_dna(_compact_node(value))
    except (TypeError, ValueError, IndexError):   # a form this parser does not know: the safe loader's
        from symnas.safe_json import dna_from_json  # pylint: disable=import-outside-toplevel
        return dna_from_json({"_type": pg.DNA.__serialization_key__, "format": "compact", "value": value})


def _compact_node(value: Any) -> Optional[DNANode]:
    if isinstance(value, list) and value and value[0] == "__tuple__":
        value = tuple(value[1:])
    if value is None:
        return None
    if isinstance(value, list):
        children = [_compact_node(v) for v in value]
        if any(c is None for c in children):
            raise ValueError("an empty element in a list")
        return children[0] if len(children) == 1 else DNANode(None, children)
    if isinstance(value, tuple):
        if len(value) < 2 or isinstance(value[0], bool) or not isinstance(value[0], (int, float)):
            raise ValueError(f"unexpected conditional choice {value!r}")
        rest = value[1] if len(value) == 2 else tuple(value[1:])
        if isinstance(rest, list) and not (rest and rest[0] == "__tuple__"):
            children = [_compact_node(v) for v in rest]
        elif isinstance(rest, (int, float, str)) or len(value) > 2:
            children = [_compact_node(rest)]
        else:
            raise ValueError(f"unexpected conditional choice {value!r}")
        return DNANode(value[0], children)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return DNANode(value, [])
    raise TypeError(f"unexpected DNA value {value!r}")


_READ_OK = None   # whether reading _sym_attributes gives what dna.value / dna.children give


def _reads_agree() -> bool:
    global _READ_OK
    if _READ_OK is None:
        try:
            dna = pg.DNA([0, (1, 0.5)])
            _READ_OK = all(_fast_value(d) == d.value and list(_fast_children(d)) == list(d.children)
                           for d in (dna, dna.children[1]))
        except Exception:  # pylint: disable=broad-except
            _READ_OK = False
    return _READ_OK


def _fast_value(dna):
    return dict.__getitem__(vars(dna)["_sym_attributes"], "value")


def _fast_children(dna) -> list:   # a plain list: iterating a pg.List resolves every item symbolically
    return list.copy(dict.__getitem__(vars(dna)["_sym_attributes"], "children"))


def dna_value(dna: pg.DNA) -> Any:
    """``dna.value``, read without the symbolic attribute machinery."""
    return _fast_value(dna) if _READ_OK or _reads_agree() else dna.value


def dna_children(dna: pg.DNA) -> List[pg.DNA]:
    """``dna.children`` as a plain list, read without the symbolic attribute machinery."""
    return _fast_children(dna) if _READ_OK or _reads_agree() else dna.children


def compact_value(dna: pg.DNA) -> Any:
    """PyGlove's compact DNA value (``DNA.to_json(compact=True)['value']``), ~10x faster."""
    if not (_READ_OK or _reads_agree()):
        return dna.to_json(compact=True)["value"]
    return _compact(dna)


def _compact(dna: pg.DNA) -> Any:
    value, children = _fast_value(dna), _fast_children(dna)
    if not children:
        return value
    nodes = [_compact(child) for child in children]
    if value is None:
        return nodes
    if len(nodes) == 1:
        single = nodes[0]
        return ["__tuple__", value, *single[1:]] if _is_tuple(single) else ["__tuple__", value, single]
    return ["__tuple__", value, nodes]


def _is_tuple(node: Any) -> bool:
    return isinstance(node, list) and bool(node) and node[0] == "__tuple__"


# ---- decoding a DNA into its object ------------------------------------------------------------------
class FastDecoder:
    """Decodes DNAs of one search space, rebuilding only the symbolic nodes on the path to a decision.

    The first decode is compared with PyGlove's ``template.decode``; spaces it does not understand
    (custom decision points, ``where`` filters, dynamic evaluation) and a disagreement fall back to
    PyGlove's decoder.
    """

    def __init__(self, space: Any):
        self.space = space
        self.template = pg.hyper.template(space)
        self._checked = False
        try:
            self._plan: Optional[_Plan] = _Plan(space)
        except _Unsupported:
            self._plan = None

    @property
    def fast(self) -> bool:
        """Whether decoding takes the fast path (False once it fell back to PyGlove's decoder)."""
        return self._plan is not None

    def decode(self, dna: pg.DNA) -> Any:
        if self._plan is not None:
            try:
                # every value comes from the space (already checked when it was built) or from a
                # DNA the spec validated; re-checking types costs a third of the time on large spaces
                with pg.enable_type_check(False), remembered_resolve():
                    value = self._plan.run(self._plan.element_dnas(dna, True))
            except _Unsupported:
                self._plan = None
            else:
                if self._checked:
                    return value
                self._checked = True
                slow = self.template.decode(dna)
                if pg.eq(value, slow):
                    return value
                self._plan = None
                return slow
        return self.template.decode(dna)


_RESOLVE = pg.typing.Schema.resolve
_RESOLVED: Dict[tuple, tuple] = {}   # (id(schema), keys) -> (schema, its field keys, result)


def _memo_resolve(schema, keys):
    """``pg.typing.Schema.resolve`` remembered per schema and keys (an object's constructor calls it
    with the same keys every time; it formats every key spec as a string)."""
    keys = tuple(keys)
    fields = list(schema._fields)  # pylint: disable=protected-access
    entry = _RESOLVED.get((id(schema), keys))
    if entry is None or entry[0] is not schema or len(entry[1]) != len(fields) or \
            any(a is not b for a, b in zip(entry[1], fields)):
        if len(_RESOLVED) > 10_000:
            _RESOLVED.clear()
        entry = (schema, fields, _RESOLVE(schema, keys))
        _RESOLVED[(id(schema), keys)] = entry
    matched, unmatched = entry[2]
    return {key: list(names) for key, names in matched.items()}, list(unmatched)


# ---- an object's JSON --------------------------------------------------------------------------------
_CLASS_AGREES: Dict[type, bool] = {}   # pg.Object subclass -> whether its fast JSON matched pg.to_json
_JSON_ATOMS = (str, int, bool, type(None))


def object_json(value: Any) -> str:
    """``pg.to_json_str(value, save_ref_value=True)``, ~4x faster for trees of ``pg.Object`` /
    ``pg.Dict`` / ``pg.List`` of plain values (what a decoded candidate usually is).

    The fast form of each ``pg.Object`` class is compared with PyGlove's on its first instance; a
    class where they differ, or any other value (references, functors, non-finite floats, missing
    fields), is written by PyGlove.
    """
    try:
        tree = _jsonify(value)
    except _Unsupported:
        with remembered_resolve():
            return pg.to_json_str(value, save_ref_value=True)
    return json.dumps(tree)


def _jsonify(value: Any) -> Any:
    kind = type(value)
    if kind in _JSON_ATOMS or kind is float and math.isfinite(value):
        return value
    if kind is pg.List:
        return [_jsonify(v) for v in list.__iter__(value)]
    if kind is pg.Dict and vars(value)["_value_spec"] is None:
        if not all(type(k) is str for k in dict.keys(value)):
            raise _Unsupported()
        return {k: _jsonify(v) for k, v in dict.items(value)}
    if isinstance(value, pg.Object):
        agrees = _CLASS_AGREES.get(kind)
        if agrees is None:
            try:
                fast = _object_tree(value)
                agrees = fast == pg.to_json(value, save_ref_value=True) and \
                    json.dumps(fast) == pg.to_json_str(value, save_ref_value=True)
            except _Unsupported:
                return pg.to_json(value, save_ref_value=True)   # this instance only; the class is tried again
            _CLASS_AGREES[kind] = agrees
        if agrees:
            return _object_tree(value)
    raise _Unsupported()


def _object_tree(value: pg.Object) -> dict:
    schema = type(value).__schema__
    if schema.dynamic_field is not None or type(value).sym_jsonify is not pg.Object.sym_jsonify:
        raise _Unsupported()
    attributes = vars(value)["_sym_attributes"]
    tree = {pg.JSONConvertible.TYPE_NAME_KEY: type(value).__serialization_key__}
    for key in _json_keys(schema):
        if key not in attributes:
            raise _Unsupported()
        tree[key] = _jsonify(dict.__getitem__(attributes, key))
    if len(tree) - 1 != len(attributes):
        raise _Unsupported()
    return tree


_JSON_KEYS: Dict[int, tuple] = {}   # id(schema) -> (schema, its fields, the keys written to JSON)


def _json_keys(schema) -> List[str]:
    fields = [x for item in schema._fields.items() for x in item]  # pylint: disable=protected-access
    entry = _JSON_KEYS.get(id(schema))
    if entry is None or entry[0] is not schema or len(entry[1]) != len(fields) or \
            any(a is not b for a, b in zip(entry[1], fields)):
        keys = [str(key_spec) for key_spec, field in schema.fields.items() if not field.frozen]
        entry = _JSON_KEYS[id(schema)] = (schema, fields, keys)
    return entry[2]


def _check_resolve() -> bool:
    schema = pg.DNA.__schema__
    for keys in (["value", "children", "metadata"], ["value", "bogus"], []):
        fast, slow = _memo_resolve(schema, keys), _RESOLVE(schema, keys)
        if fast != slow or list(fast[0]) != list(slow[0]):
            return False
    return True


class remembered_resolve:
    """While decoding: ``pg.typing.Schema.resolve`` is ``_memo_resolve`` (same results)."""

    def __enter__(self):
        pg.typing.Schema.resolve = _memo_resolve

    def __exit__(self, *_):
        pg.typing.Schema.resolve = _RESOLVE


class _Unsupported(Exception):
    """A construct the fast path does not handle; PyGlove's decoder takes over."""


class _Plan:
    """How to decode one (sub-)space: a decoder per decision point and how to rebuild the value."""

    __slots__ = ("leaves", "root_leaf", "rebuild")

    def __init__(self, value: Any):
        template = pg.hyper.template(value)
        tree: Dict[Any, Any] = {}
        self.leaves: List[tuple] = []
        self.root_leaf = None
        for index, (path, primitive) in enumerate(template.hyper_primitives):
            self.leaves.append(_compile_primitive(primitive))
            keys = path.keys
            if not keys:
                self.root_leaf = index
                continue
            node = tree
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = index
        self.rebuild = None if self.root_leaf is not None else _compile_node(value, tree)

    def run(self, element_dnas: List[pg.DNA]) -> Any:
        if len(element_dnas) != len(self.leaves):
            raise ValueError(f"The DNA has {len(element_dnas)} decisions where the space has {len(self.leaves)}.")
        values = [_decode_leaf(leaf, dna) for leaf, dna in zip(self.leaves, element_dnas)]
        if self.root_leaf is not None:
            return values[0]
        return _rebuild(self.rebuild, values)

    def element_dnas(self, dna: pg.DNA, is_root: bool) -> List[pg.DNA]:
        """The DNAs of this space's decision points in order (PyGlove's layout)."""
        if not self.leaves:
            return []
        if is_root:
            return [dna] if len(self.leaves) == 1 else dna_children(dna)
        return dna_children(dna)  # within a choice, the children are the sub-space's element DNAs


def _compile_primitive(primitive: Any) -> tuple:
    if isinstance(primitive, pg.hyper.Float):
        return ("float",)
    if isinstance(primitive, (pg.hyper.OneOf, pg.hyper.ManyOf)) and primitive.where is None:
        candidates = []
        for candidate in primitive.candidates.sym_values():   # raw: a pg.Ref stays a reference
            if isinstance(candidate, pg.Symbolic) and not pg.is_deterministic(candidate):
                candidates.append((True, _Plan(candidate)))
            else:
                candidates.append((False, candidate))
        return ("many" if isinstance(primitive, pg.hyper.ManyOf) else "one", candidates)
    raise _Unsupported()


def _decode_choice(candidates: List[tuple], dna: pg.DNA) -> Any:
    index = dna_value(dna)
    if not isinstance(index, int) or not 0 <= index < len(candidates):
        raise ValueError(f"DNA {dna!r} chooses candidate {index!r} of a choice with {len(candidates)} candidates.")
    has_plan, candidate = candidates[index]
    if has_plan:
        return candidate.run(candidate.element_dnas(dna, False))
    return candidate


def _decode_leaf(leaf: tuple, dna: pg.DNA) -> Any:
    kind = leaf[0]
    if kind == "float":
        return dna_value(dna)
    if kind == "one":
        return _decode_choice(leaf[1], dna)
    return [_decode_choice(leaf[1], child) for child in dna_children(dna)]


def _compile_node(node: Any, tree: Dict[Any, Any]) -> tuple:
    """A rebuild recipe: ("leaf", i) | (kind, factory, [(key, recipe or None, original child)])."""
    if isinstance(tree, int):
        return ("leaf", tree)
    if isinstance(node, pg.Dict):
        items = [(k, _compile_node(v, tree[k]) if k in tree else None, v) for k, v in node.sym_items()]
        return ("dict", lambda kwargs, spec=node.value_spec: new_dict(kwargs, spec), items)
    if isinstance(node, pg.List):
        items = [(i, _compile_node(v, tree[i]) if i in tree else None, v) for i, v in node.sym_items()]
        return ("list", lambda values, spec=node.value_spec: new_list(values, spec), items)
    if isinstance(node, pg.Object):
        items = [(k, _compile_node(v, tree[k]) if k in tree else None, v)
                 for k, v in node.sym_init_args.sym_items()]
        return ("object", type(node), items)
    raise _Unsupported()


def _rebuild(recipe: tuple, values: List[Any]) -> Any:
    kind = recipe[0]
    if kind == "leaf":
        return values[recipe[1]]
    factory, items = recipe[1], recipe[2]
    if kind == "list":
        return factory([child if sub is None else _rebuild(sub, values) for _, sub, child in items])
    kwargs = {key: child if sub is None else _rebuild(sub, values) for key, sub, child in items}
    if kind == "dict":
        return factory(kwargs)
    try:
        return factory(**kwargs)
    except TypeError as error:  # a class whose __init__ does not take its fields by name
        raise _Unsupported() from error


# ---- containers of plain values ---------------------------------------------------------------------
_ATOMS = (str, int, float, bool, type(None))
_CONTAINER_PROTO = None   # None: not checked yet; False: the fast path disagreed with pg.List / pg.Dict


def _container_prototypes():
    global _CONTAINER_PROTO
    if _CONTAINER_PROTO is None:
        _CONTAINER_PROTO = (dict(vars(pg.List())), dict(vars(pg.Dict())))
        try:
            samples = (["a", 1, 2.5, None, True], [], [""])
            ok = all(_lists_agree(_fast_list(items), pg.List(items)) for items in samples) and \
                all(_lists_agree(_fast_dict(kw), pg.Dict(kw)) for kw in ({"x": "a", "y": 0.5, "z": None}, {}))
        except Exception:  # pylint: disable=broad-except
            ok = False
        if not ok:
            _CONTAINER_PROTO = False
    return _CONTAINER_PROTO


def _lists_agree(fast, slow) -> bool:
    return type(fast) is type(slow) and fast == slow and pg.eq(fast, slow) and \
        fast.to_json() == slow.to_json() and repr(fast) == repr(slow) and \
        {k: repr(v) for k, v in vars(fast).items()} == {k: repr(v) for k, v in vars(slow).items()}


def _fast_list(items: list, value_spec: Any = None) -> pg.List:
    value = list.__new__(pg.List)
    attributes = vars(value)
    attributes.update(_CONTAINER_PROTO[0])
    if value_spec is not None:
        attributes["_value_spec"] = value_spec
    list.extend(value, items)
    return value


def _fast_dict(kwargs: dict) -> pg.Dict:
    value = dict.__new__(pg.Dict)
    vars(value).update(_CONTAINER_PROTO[1])
    dict.update(value, kwargs)
    return value


_SPEC_AGREES: Dict[int, tuple] = {}   # id(value_spec) -> (value_spec, whether the fast list agreed)


def new_list(items: list, value_spec: Any = None) -> pg.List:
    """``pg.List(items, value_spec=value_spec)``; without its constructor for plain values.

    With a value spec (a list field of an object) the first list of each spec is also built by
    ``pg.List`` and compared; the fast path is taken only if they agreed.
    """
    if not (all(type(v) in _ATOMS for v in items) and _container_prototypes()):
        return pg.List(items, value_spec=value_spec)
    if value_spec is None:
        return _fast_list(items)
    entry = _SPEC_AGREES.get(id(value_spec))
    if entry is None or entry[0] is not value_spec:
        slow = pg.List(items, value_spec=value_spec)
        try:
            agrees = _lists_agree(_fast_list(items, value_spec), slow)
        except Exception:  # pylint: disable=broad-except
            agrees = False
        _SPEC_AGREES[id(value_spec)] = (value_spec, agrees)
        return slow
    return _fast_list(items, value_spec) if entry[1] else pg.List(items, value_spec=value_spec)


def new_dict(kwargs: dict, value_spec: Any = None) -> pg.Dict:
    """``pg.Dict(kwargs, value_spec=value_spec)``; without its constructor for plain values and no spec."""
    if value_spec is None and all(type(k) is str and type(v) in _ATOMS for k, v in kwargs.items()) and \
            _container_prototypes():
        return _fast_dict(kwargs)
    return pg.Dict(kwargs, value_spec=value_spec)


# ---- values many candidates share ----------------------------------------------------------------
class SharedValue(pg.Ref):
    """A read-only (sealed) value of the space that many candidates reference instead of copying.

    Reads like the value; compares, hashes, serialises and pickles as the plain value, so a
    saved candidate loads without it. A deep clone of a candidate references the same value, unless
    the subclass sets ``clone_owns_copy`` (then the clone owns an unsealed copy it may rebind). Build
    one with ``share``, which falls back to the plain value if PyGlove's ``Ref`` does not behave as
    this class expects.
    """

    clone_owns_copy = False

    def sym_jsonify(self, **kwargs: Any) -> Any:
        return pg.to_json(self.value, **kwargs)

    def sym_eq(self, other: Any) -> bool:      # equal to an equal value, shared or not
        return pg.eq(self.value, other.value if isinstance(other, pg.Ref) else other)

    def sym_hash(self) -> int:
        return pg.hash(self.value)

    def _sym_clone(self, deep: bool, memo: Any = None) -> Any:
        if deep and self.clone_owns_copy:
            return self.value.clone(deep=True, memo=memo).seal(False)   # a clone keeps the seal
        return type(self)(self.value)

    def __reduce__(self):
        return (type(self), (self.value,))


_SHARED_OK = None


def _check_shared() -> bool:
    global _SHARED_OK
    if _SHARED_OK is None:
        try:
            value = pg.List([1, pg.Dict(a=2)]).seal()
            shared = SharedValue(value)
            holder = pg.Dict(x=shared)
            _SHARED_OK = (holder.x is value and pg.to_json(holder) == pg.to_json(pg.Dict(x=value.clone()))
                          and pg.eq(holder, pg.Dict(x=value.clone())) and pg.hash(shared) == pg.hash(value)
                          and holder.clone(deep=True).x == value)
        except Exception:  # pylint: disable=broad-except
            _SHARED_OK = False
    return _SHARED_OK


def share(value: Any, cls: type = SharedValue) -> Any:
    """``cls(value)`` (a reference to the sealed ``value``), or ``value`` itself where references do not
    behave as expected under this PyGlove."""
    return cls(value) if _check_shared() else value


# ---- all of the above, against PyGlove ---------------------------------------------------------------
def self_check() -> Dict[str, bool]:
    """Each fast path checked against PyGlove's own slow path: {name: agrees}."""
    space = pg.Dict(x=pg.oneof([1, pg.Dict(y=pg.floatv(0.0, 1.0))]), z=pg.manyof(2, ["a", "b", "c"]),
                    w=[pg.oneof([3, 4]), 5])
    dna = pg.DNA([(1, 0.5), [0, 2], 1])
    decoder = FastDecoder(space)
    fast_object = decoder.decode(dna)
    return {
        "make_dna": bool(_prototypes()),
        "read_dna": _reads_agree(),
        "compact_value": compact_value(dna) == dna.to_json(compact=True)["value"],
        "containers": bool(_container_prototypes()),
        "remembered_resolve": _check_resolve(),
        "fast_decoder": decoder.fast and pg.eq(fast_object, pg.hyper.template(space).decode(dna)),
        "shared_value": _check_shared(),
    }
