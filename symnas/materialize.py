"""Materialiser: turns a DNA into the concrete object of a search space, fast.

PyGlove's ``pg.hyper.template(space).decode(dna)`` deep-clones the whole template and then
rebinds every decision (4-7 ms per trial on a small space here), which dominates a loop over a
tabular benchmark or a zero-cost proxy. ``Materializer`` walks the DNA beside the DNASpec once
and rebuilds only the symbolic nodes on the path to a decision point. Anything it does not
understand (custom decision points, ``where`` filters, dynamic evaluation) goes through PyGlove's
own decoder, and the test suite checks both give equal objects.

Example::

    space = pg.Dict(x=pg.oneof([1, 2]), y=pg.floatv(0.1, 1.0))
    materializer = Materializer(space)
    obj = materializer.materialize(pg.DNA([1, 0.5]))    # {x=2, y=0.5}
"""
from __future__ import annotations

from typing import Any, Dict, List

import pyglove as pg


class _Unsupported(Exception):
    """A construct the fast path does not handle; PyGlove's decoder takes over."""


class Materializer:
    """Decodes DNAs of one search space into concrete symbolic objects."""

    def __init__(self, space: Any):
        if not isinstance(space, pg.Symbolic) and not pg.is_abstract(space):
            raise TypeError(f"A search space must be a PyGlove symbolic value, got {type(space).__name__}.")
        if pg.is_deterministic(space):
            raise ValueError(
                "The search space has no decision points: use pg.oneof, pg.manyof or pg.floatv "
                f"somewhere in it. Got {pg.format(space, compact=True)[:200]!r}.")
        self.space = space
        self.template = pg.hyper.template(space)
        self.dna_spec = self.template.dna_spec()
        self._sub_templates: Dict[int, Any] = {}
        self._fast = True

    def materialize(self, dna: pg.DNA) -> Any:
        """The concrete object that ``dna`` selects."""
        if self._fast:
            try:
                return self._decode_value(self.space, self.template, self._element_dnas(self.template, dna, True))
            except _Unsupported:
                self._fast = False
        return self.template.decode(dna)

    # -- DNA walking -------------------------------------------------------------------------
    @staticmethod
    def _element_dnas(template, dna: pg.DNA, is_root: bool) -> List[pg.DNA]:
        """The DNAs of the decision points of ``template`` in order (PyGlove's layout)."""
        n = len(template.hyper_primitives)
        if n == 0:
            return []
        if is_root:
            return [dna] if n == 1 else list(dna.children)
        return list(dna)  # within a choice: the children are the sub-space's element DNAs

    def _decode_value(self, value: Any, template, element_dnas: List[pg.DNA]) -> Any:
        primitives = template.hyper_primitives
        if len(primitives) != len(element_dnas):
            raise _Unsupported()
        decisions = {}
        for (path, primitive), dna in zip(primitives, element_dnas):
            decisions[str(path)] = self._decode_primitive(primitive, dna)
        if "" in decisions:  # the whole value is one decision point
            return decisions[""]
        return _rebuild(value, pg.KeyPath(), decisions, _prefixes(decisions))

    def _decode_primitive(self, primitive: Any, dna: pg.DNA) -> Any:
        if isinstance(primitive, pg.hyper.Float):
            return dna.value
        if isinstance(primitive, pg.hyper.ManyOf):
            if primitive.where is not None:
                raise _Unsupported()
            return [self._decode_choice(primitive, child) for child in dna.children]
        if isinstance(primitive, pg.hyper.OneOf):
            if primitive.where is not None:
                raise _Unsupported()
            return self._decode_choice(primitive, dna)
        raise _Unsupported()

    def _decode_choice(self, primitive: Any, dna: pg.DNA) -> Any:
        index = dna.value
        if not isinstance(index, int) or not 0 <= index < len(primitive.candidates):
            raise ValueError(f"DNA {dna!r} chooses candidate {index!r} of a choice with "
                             f"{len(primitive.candidates)} candidates.")
        candidate = primitive.candidates[index]
        if not isinstance(candidate, pg.Symbolic) or pg.is_deterministic(candidate):
            return candidate
        key = id(candidate)
        sub_template = self._sub_templates.get(key)
        if sub_template is None:
            sub_template = pg.hyper.template(candidate)
            self._sub_templates[key] = sub_template
        return self._decode_value(candidate, sub_template, self._element_dnas(sub_template, dna.children, False))


def _prefixes(decisions: Dict[str, Any]) -> set:
    prefixes = set()
    for path in decisions:
        key_path = pg.KeyPath.parse(path)
        while key_path.depth > 0:
            key_path = key_path.parent
            prefixes.add(str(key_path))
    return prefixes


def _rebuild(node: Any, path: pg.KeyPath, decisions: Dict[str, Any], prefixes: set) -> Any:
    """A copy of ``node`` with the decision points replaced; untouched subtrees are shared."""
    key = str(path)
    if key in decisions:
        return decisions[key]
    if key not in prefixes:
        return node
    if isinstance(node, pg.Dict):
        items = {k: _rebuild(v, pg.KeyPath(k, path), decisions, prefixes) for k, v in node.sym_items()}
        return pg.Dict(items, value_spec=node.value_spec)
    if isinstance(node, pg.List):
        items = [_rebuild(v, pg.KeyPath(i, path), decisions, prefixes) for i, v in node.sym_items()]
        return pg.List(items, value_spec=node.value_spec)
    if isinstance(node, pg.Object):
        kwargs = {k: _rebuild(v, pg.KeyPath(k, path), decisions, prefixes)
                  for k, v in node.sym_init_args.sym_items()}
        try:
            return type(node)(**kwargs)
        except TypeError as error:  # a class whose __init__ does not take its fields by name
            raise _Unsupported() from error
    raise _Unsupported()
