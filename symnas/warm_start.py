"""Warm start: known points of a search space, queued in the study and evaluated before any proposal.

A point is a concrete object of the space (what ``study.best`` returns), a ``pg.DNA`` (or its
compact list form, ``[0.5, 1]``), or a dict of decision values keyed by decision name
(``{"x": 0.5, "n": 2}``: a choice's value is the candidate itself, or its index when the
candidates are not plain literals). Each point becomes a DNA checked against the space
(a point outside it is one clear ``ValueError``) and is stored in the study's queue, so it
survives a restart and is evaluated exactly once; the algorithm is fed its result like any other.

Example::

    import pyglove as pg, symnas as sn
    space = pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2, 3]))
    study = sn.search(space, lambda v: v.n - v.x, num_trials=5, storage=None, progress=False,
                      initial=[pg.Dict(x=0.0, n=3), {"x": 0.5, "n": 2}])
    assert study.records[0].to_dna() == pg.DNA([0.0, 2])
"""
from __future__ import annotations

from typing import Any, Iterable, List, Mapping

import pyglove as pg

from symnas.safe_json import dna_from_json
from symnas.trial import dna_to_json

__all__ = ["to_dna", "enqueue"]


def to_dna(point: Any, dna_spec: pg.DNASpec, space: Any = None) -> pg.DNA:
    """The DNA of ``point`` in ``dna_spec``; ValueError (one line) when it lies outside the space."""
    try:
        if isinstance(point, pg.DNA):
            dna = dna_from_json(point.to_json())      # a copy, rebuilt from plain numbers
        elif isinstance(point, (list, tuple, int, float)) and not isinstance(point, bool):
            dna = pg.DNA(point)
        elif isinstance(point, Mapping) and (space is None or not isinstance(point, pg.Symbolic)):
            dna = _from_decisions(dict(point), dna_spec, space)
        elif isinstance(point, pg.Symbolic):
            if space is None:
                raise ValueError("the study does not know its space (it was created from a DNASpec): "
                                 "enqueue a DNA or a dict of decisions")
            dna = pg.template(space).encode(point)
        else:
            raise TypeError(f"expected an object of the space, a pg.DNA, a list or a dict of decisions, "
                            f"got {type(point).__name__}")
        dna.use_spec(dna_spec)   # checks every value: candidate index, float range, structure
    except (ValueError, TypeError, KeyError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"The point {_short(point)} is outside the search space: {first}") from None
    return dna


def _from_decisions(point: Mapping[str, Any], dna_spec: pg.DNASpec, space: Any) -> pg.DNA:
    names = {str(p.id): p for p in dna_spec.decision_points}
    unknown = [k for k in point if str(k) not in names]
    if unknown and isinstance(space, pg.Dict) and set(point) <= set(space.keys()):
        # A plain dict that is the object of a pg.Dict space (nested values included).
        return pg.template(space).encode(pg.Dict(point))
    if unknown:
        raise KeyError(f"no decision named {unknown[0]!r} (decisions: {sorted(names)})")
    return pg.DNA.from_dict(dict(point), dna_spec, use_ints_as_literals=_ints_are_literals(point, names))


def _ints_are_literals(point: Mapping[str, Any], names) -> bool:
    # An int is a candidate's value where that choice's literals include it, else its index.
    for key, value in point.items():
        spec = names[str(key)]
        if isinstance(spec, pg.geno.Choices) and isinstance(value, int) and spec.literal_values:
            if value not in [v for v in spec.literal_values if isinstance(v, int)]:
                if not 0 <= value < len(spec.candidates):
                    raise ValueError(f"{key} = {value} is not one of its candidates {list(spec.literal_values)}")
                return False
    return True


def _short(point: Any) -> str:
    text = repr(point).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def enqueue(storage, study: str, points: Iterable[Any], dna_spec: pg.DNASpec, space: Any = None,
            skip_if_exists: bool = True) -> List[pg.DNA]:
    """Converts every point first (nothing is queued if one is outside the space), then queues them.

    With ``skip_if_exists`` a point already queued or already a trial of the study is not queued
    again, so ``sn.search(..., initial=[...])`` run twice evaluates each point once. Returns the
    DNAs queued now.
    """
    dnas = [to_dna(point, dna_spec, space) for point in points]
    texts = [dna_to_json(dna) for dna in dnas]
    by_text = dict(zip(texts, dnas))
    return [by_text[text] for text in storage.enqueue(study, texts, skip_existing=skip_if_exists)]
