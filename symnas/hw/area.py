"""Chip area of an accelerator: MACs plus SRAM and register bits, at 22 nm.

``area_mm2(acc) = num_PEs x MAC area + sum over memories of (copies x one copy's area)``, with
one MAC's area from Horowitz (ISSCC 2014, 45 nm, scaled to 22 nm) and one memory's area from a
power law through two CACTI 7 (22 nm) entries that zigzag-dse 3.9.1 ships in its memory pool
(``sn.hw.technology`` gives the numbers and their sources). DRAM, interconnect and control are
not counted. A search holds area within a budget with ``area_mm2(acc) <= budget``.

Example::

    import symnas as sn
    acc = sn.hw.edge_tpu_like()
    sn.hw.area_mm2(acc)            # mm²
    sn.hw.area_breakdown(acc)      # {'macs': ..., 'sram_2MB': ..., ...}
"""
from __future__ import annotations

from typing import Any, Dict

import pyglove as pg

from symnas.hw import technology

__all__ = ["area_mm2", "area_breakdown", "memory_area_mm2", "smallest_area_mm2"]


def memory_area_mm2(memory) -> float:
    """Area of one copy of ``memory`` (a ``sn.hw.Memory``)."""
    return technology.sram_area_mm2(memory.size, memory.ports)


def area_breakdown(acc) -> Dict[str, float]:
    """mm² per part: ``macs`` and one entry per memory (all its copies)."""
    if not pg.is_deterministic(acc):
        raise ValueError(f"accelerator {acc.name!r} still holds search points; materialise it first")
    parts = {"macs": acc.num_pes * technology.mac_area_um2(int(acc.precision)) * 1e-6}
    for memory in acc.memories:
        parts[memory.name] = acc.instances(memory) * memory_area_mm2(memory)
    return parts


def area_mm2(acc) -> float:
    """Total area in mm² (``area_breakdown`` summed)."""
    return sum(area_breakdown(acc).values())


def smallest_area_mm2(space: Any) -> float:
    """The smallest area any accelerator of ``space`` (an ``Accelerator`` with search points) can have.

    Area grows with every PE count, memory size and the precision, so each numeric choice takes its
    smallest candidate (``pg.floatv``: its minimum); a choice among non-numbers is tried candidate by
    candidate (up to 4096 combinations). Used to refuse an area budget that no configuration meets.
    """
    def smallest(key, value, parent):
        del key, parent
        if isinstance(value, pg.hyper.Float):
            return value.min_value
        if isinstance(value, pg.hyper.OneOf):
            numbers = [c for c in value.candidates if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if numbers and len(numbers) == len(value.candidates):
                return min(numbers)
        return value

    reduced = space.clone(deep=True).rebind(smallest, skip_notification=True) if isinstance(
        space, pg.Symbolic) and not pg.is_deterministic(space) else space
    if pg.is_deterministic(reduced):
        return area_mm2(reduced)
    best, count = float("inf"), 0
    for acc in pg.iter(reduced):
        count += 1
        if count > 4096:
            raise ValueError("smallest_area_mm2: more than 4096 combinations of non-numeric choices; "
                             "narrow the space")
        best = min(best, area_mm2(acc))
    return best
