"""Materialiser: turns a DNA into the concrete object of a search space, fast.

PyGlove's ``pg.hyper.template(space).decode(dna)`` deep-clones the whole template and then
rebinds every decision (4-7 ms per trial on a small space here), which dominates a loop over a
tabular benchmark or a zero-cost proxy. ``Materializer`` decodes through
``symnas.pyglove_fastpaths.FastDecoder``, which rebuilds only the symbolic nodes on the path to a
decision point and falls back to PyGlove's own decoder for what it does not understand (or where
its first decode disagrees with PyGlove's).

Example::

    space = pg.Dict(x=pg.oneof([1, 2]), y=pg.floatv(0.1, 1.0))
    materializer = Materializer(space)
    obj = materializer.materialize(pg.DNA([1, 0.5]))    # {x=2, y=0.5}
"""
from __future__ import annotations

from typing import Any

import pyglove as pg

from symnas.pyglove_fastpaths import FastDecoder


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
        self._decoder = FastDecoder(space)
        self.template = self._decoder.template
        self.dna_spec = self.template.dna_spec()

    def materialize(self, dna: pg.DNA) -> Any:
        """The concrete object that ``dna`` selects."""
        return self._decoder.decode(dna)
