"""The kernel table: the measured latency of every (layer shape, neural steps, program template).

A whole-network search proposes thousands of candidates built from a few hundred distinct
kernels; each kernel is compiled with TVM and timed once, and the table answers every later
question about it. The table persists as JSON (``path``), so a later run on the same machine
(another target, another algorithm) searches the same timings without compiling anything.

Example::

    import symnas as sn
    table = sn.pte.KernelTable(path="kt_r18.json", repeat=3)
    op = sn.program.Conv2d(c_in=64, c_out=64, h=32, w=32, k=3, stride=1, padding=1)
    ms = table.measure(op, [sn.program.Group(2)], [])     # compiled and timed once
    table.save()                                          # the next run reads it back
"""
from __future__ import annotations

import ast
import datetime
import json
import math
import os
import platform
import time
from typing import Any, Dict, Optional, Sequence

import pyglove as pg

from symnas.program.operators import Conv2d, DepthwiseConv2d

__all__ = ["KernelTable", "KernelTableError", "steps_key", "this_machine"]


class KernelTableError(ValueError):
    """A kernel table file that cannot be used here (not a table, or timed the other way)."""


def this_machine() -> str:
    """The host, processor and core count: a table says where it was measured."""
    return f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


# conv operator fields added on 2026-12-07 (rectangular windows, dilation): left out of a key at these
# values, so a square, undilated conv keeps the key of the tables written before
_LATER_CONV_FIELDS = {"kw": None, "dilation": 1}


def _frozen(value):
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, pg.Object):
        items = dict(value.sym_init_args.sym_items())
        if isinstance(value, (Conv2d, DepthwiseConv2d)):
            items = {k: v for k, v in items.items() if k not in _LATER_CONV_FIELDS or v != _LATER_CONV_FIELDS[k]}
        return (type(value).__name__, _frozen(items))
    return value


_SEALED_KEYS: Dict[int, tuple] = {}


def steps_key(steps: Sequence[Any]) -> tuple:
    """A hashable key of a step list, equal for equal steps (~20x cheaper than formatting them).

    A sealed list (the search space's shared, read-only step lists) is keyed once and then by
    identity. Example::

        assert steps_key([sn.program.Group(2)]) == steps_key([sn.program.Group(2)])
    """
    if isinstance(steps, pg.List) and steps.is_sealed:
        cached = _SEALED_KEYS.get(id(steps))
        if cached is None or cached[0] is not steps:
            cached = _SEALED_KEYS[id(steps)] = (steps, tuple(_frozen(s) for s in steps))
        return cached[1]
    return tuple(_frozen(s) for s in steps)


class KernelTable(pg.Object):
    """TVM latency (ms, batch 1) of each (operator, neural steps, program steps), measured once.

    ``repeat``: timing repeats per kernel (the best one is kept: other processes share the CPU
    and only add time). ``cold_weights``: time each call with the kernel's weights flushed from
    the caches, as a layer finds them inside a network at batch 1 whose weights do not fit the
    caches (the default: kernel sums then predict the whole network). ``path``: the JSON file
    that ``load()`` reads (when it exists) and ``save()`` writes; a table of the other timing
    mode is refused, one from another machine is used with a warning.
    """
    path: Optional[str] = None
    repeat: int = 5
    cold_weights: bool = True

    def _on_bound(self):
        super()._on_bound()
        if self.repeat < 1:
            raise ValueError(f"KernelTable: repeat must be >= 1, got {self.repeat}.")
        self._latency: Dict[Any, float] = {}
        self._loaded: set = set()        # keys read from a file: already the best of their timings
        self._op_keys: Dict[int, tuple] = {}
        self.compiles = 0                 # kernels compiled and timed by this process
        self.seconds = 0.0                # spent compiling and timing them
        self.warnings: list = []

    def __len__(self) -> int:
        return len(self._latency)

    # ------------------------------------------------------------------ persistence

    def load(self, path: Optional[str] = None) -> int:
        """Reads the latencies saved at ``path`` (default: ``self.path``; nothing when the file
        does not exist); returns how many were read. Raises ``KernelTableError`` naming the file
        when it is not a kernel table or was timed in the other mode."""
        path = path or self.path
        if not path or not os.path.exists(path):
            return 0
        try:
            with open(path) as f:
                saved = json.load(f)
            # keys are tuples of literals; literal_eval evaluates literals only, never code
            entries = {ast.literal_eval(k): (math.inf if v is None else float(v))
                       for k, v in saved["latency_ms"].items()}
        except (OSError, ValueError, KeyError, TypeError, SyntaxError, AttributeError) as e:
            raise KernelTableError(f"kernel table {path}: not a kernel table ({type(e).__name__}: {e})") from e
        if bool(saved.get("cold_weights", False)) != self.cold_weights:
            modes = {True: "with cold weights", False: "with warm weights"}
            raise KernelTableError(f"kernel table {path}: its kernels were timed {modes[not self.cold_weights]}, "
                                   f"this table times them {modes[self.cold_weights]}; use another file")
        if saved.get("machine") != this_machine():
            self.warnings.append(f"kernel table {path} was measured on {saved.get('machine')!r}, "
                                 f"this is {this_machine()!r}")
        self._latency.update(entries)
        self._loaded.update(entries)
        return len(entries)

    def save(self, path: Optional[str] = None) -> None:
        """Writes every latency to ``path`` (default: ``self.path``) as JSON."""
        path = path or self.path
        if not path:
            raise ValueError("KernelTable.save: no path (give one, or construct the table with path=...)")
        entries = {repr(k): (v if math.isfinite(v) else None) for k, v in self._latency.items()}
        with open(path, "w") as f:
            json.dump({"machine": this_machine(), "repeat": self.repeat, "cold_weights": self.cold_weights,
                       "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                       "latency_ms": entries}, f)

    # ------------------------------------------------------------------ timing

    def _key(self, op, neural, program) -> tuple:
        if id(op) not in self._op_keys:    # operators are the same few objects in every call
            self._op_keys[id(op)] = (op, _frozen(op))
        return self._op_keys[id(op)][1], steps_key(neural), steps_key(program)

    def measure(self, op, neural: Sequence[Any], program: Sequence[Any]) -> float:
        """The kernel's latency in ms (compiled and timed on the first call); ``inf`` when the
        template does not fit the transformed kernel."""
        key = self._key(op, neural, program)
        if key not in self._latency:
            from symnas import program as P  # pylint: disable=import-outside-toplevel
            start = time.perf_counter()
            try:
                m = P.Schedule(op, list(neural) + list(program)).measure(repeat=self.repeat,
                                                                        cold_weights=self.cold_weights)
                value = min(m.repeats) if m.repeats else m.latency_ms
            except (P.IllegalTransformation, ValueError):
                value = math.inf
            self.compiles += 1
            self.seconds += time.perf_counter() - start
            self._latency[key] = value
        return self._latency[key]

    def record(self, op, neural: Sequence[Any], program: Sequence[Any], latency_ms: float) -> None:
        """Enters a latency measured elsewhere (kept as it is: ``remeasure`` leaves it)."""
        key = self._key(op, neural, program)
        self._latency[key] = float(latency_ms)
        self._loaded.add(key)

    def remeasure(self, op, neural: Sequence[Any], program: Sequence[Any]) -> float:
        """Times a measured kernel again (its build is cached) and keeps the lower value: a load
        spike during the first timing would otherwise decide. Latencies read from a file stay."""
        key = self._key(op, neural, program)
        if key in self._loaded:
            return self._latency[key]
        old = self._latency.pop(key, math.inf)
        self._latency[key] = min(old, self.measure(op, neural, program))
        self.compiles -= 1                # the build was cached; only the timing is new
        return self._latency[key]
