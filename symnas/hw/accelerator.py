"""A symbolic DNN accelerator: a PE array with a dataflow, a memory hierarchy, DRAM bandwidth, precision, clock.

The object only stores its parameters; any of them may be a search point (``pg.oneof``,
``pg.floatv``), e.g. ``acc.rebind({"array[0]": pg.oneof([4, 8, 16])})``. It becomes
ZigZag's accelerator description with ``to_zigzag()`` (a dict in zigzag-dse 3.9.1's schema)
or ``to_yaml(folder)`` (the YAML ZigZag's own API reads, written in key order), and its
area comes from ``sn.hw.area_mm2``.

* ``array``: PEs per array dimension; ``dataflow``: the loop each dimension unrolls, one of
  ``B K C G OY OX FY FX`` (ZigZag's names: output channels ``K``, input channels ``C``, groups
  ``G``, output rows/columns ``OY``/``OX``, kernel rows/columns ``FY``/``FX``). ``("K", "C")``
  is weight-stationary (a TPU), ``("K", "OX")`` output-stationary, ``("C", "OX")``
  input-stationary (``DATAFLOWS``).
* ``memories``: innermost first; each holds some of the operands ``W`` (weights), ``I`` (input
  activations), ``O`` (outputs and partial sums), with a size in bytes, a port width in bits
  per cycle and a scope: one per PE (``"pe"``), one per group of PEs that share the operand
  (``"shared"``: PEs along array dimensions whose loop does not index the operand, e.g. a
  weight register serves the PEs that unroll ``OX``), or one for the array (``"array"``).
  DRAM sits above all of them (``dram_bandwidth`` bits per cycle).
* Energy per access: ``Memory.energy = (reference bytes, read pJ/bit, write pJ/bit)`` fixes
  the energy at one size and scales it with size as CACTI does (``sn.hw.technology``); ``None``
  takes the CACTI 22 nm figures. MAC energy ``mac_energy`` is per 8-bit MAC, scaled by
  ``(precision / 8)²``.

Example::

    import pyglove as pg, symnas as sn
    acc = sn.hw.edge_tpu_like()
    space = acc.rebind({"array[0]": pg.oneof([8, 16]), "memories[3].size": pg.oneof([2**20, 2**21])},
                       skip_notification=True)
    print(sn.hw.area_mm2(acc), acc.num_pes)
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Dict, List, Optional, Tuple

import pyglove as pg

from symnas.hw import technology

__all__ = ["Accelerator", "Memory", "LOOPS", "OPERANDS", "DATAFLOWS", "relevant_loops"]

LOOPS = ("B", "K", "C", "G", "OY", "OX", "FY", "FX")
OPERANDS = ("W", "I", "O")
SCOPES = ("pe", "shared", "array")
PORTS = ("rw", "r,w", "rr,ww")
DATAFLOWS = {"weight_stationary": ("K", "C"), "output_stationary": ("K", "OX"), "input_stationary": ("C", "OX")}

# the loops that index each operand (ZigZag's relevant and partially relevant loops of a convolution)
_RELEVANT = {"W": {"K", "C", "G", "FY", "FX"}, "I": {"B", "C", "G", "OY", "OX", "FY", "FX"},
             "O": {"B", "K", "G", "OY", "OX"}}
# ZigZag's memory operands: inputs are I1, weights I2
_MEM_OPERAND = {"I": "I1", "W": "I2", "O": "O"}
DRAM_BITS = 10_000_000_000      # ZigZag's presets give DRAM this capacity


def relevant_loops(operand: str) -> set:
    """The loops that index ``operand`` (``W``, ``I`` or ``O``)."""
    return set(_RELEVANT[operand])


def _concrete(value) -> bool:
    return pg.is_deterministic(value) if isinstance(value, pg.Symbolic) else not isinstance(value, pg.hyper.HyperValue)


def _positive(owner: str, field: str, value, integer: bool = True) -> None:
    if not _concrete(value):
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise ValueError(f"{owner}: {field} must be a positive {'integer' if integer else 'number'}, got {value!r}")


class Memory(pg.Object):
    """One memory level of an accelerator (see the module docstring for the fields' meaning)."""

    name: str
    size: int                                   # bytes
    operands: List[str]                         # some of W, I, O
    bandwidth: int                              # bits per cycle per port (ZigZag's bandwidth_max)
    scope: str = "array"                        # pe | shared | array
    ports: str = "r,w"                          # rw (one port) | r,w (read + write) | rr,ww (one per direction)
    min_bandwidth: Optional[int] = None         # access granularity in bits (ZigZag's bandwidth_min)
    energy: Optional[Tuple[float, float, float]] = None   # (reference bytes, read pJ/bit, write pJ/bit)
    latency: int = 1                            # cycles

    def _on_bound(self):
        super()._on_bound()
        owner = f"memory {self.name!r}"
        _positive(owner, "size (bytes)", self.size)
        _positive(owner, "bandwidth (bits per cycle)", self.bandwidth)
        _positive(owner, "latency (cycles)", self.latency)
        if self.min_bandwidth is not None:
            _positive(owner, "min_bandwidth", self.min_bandwidth)
            if _concrete(self.bandwidth) and _concrete(self.min_bandwidth) and self.min_bandwidth > self.bandwidth:
                raise ValueError(f"{owner}: min_bandwidth {self.min_bandwidth} exceeds bandwidth {self.bandwidth}")
        if _concrete(self.operands):
            bad = [o for o in self.operands if o not in OPERANDS]
            if bad or not self.operands or len(set(self.operands)) != len(self.operands):
                raise ValueError(f"{owner}: operands must be distinct ones of {OPERANDS}, got {list(self.operands)}")
        if _concrete(self.scope) and self.scope not in SCOPES:
            raise ValueError(f"{owner}: scope must be one of {SCOPES}, got {self.scope!r}")
        if _concrete(self.ports) and self.ports not in PORTS:
            raise ValueError(f"{owner}: ports must be one of {PORTS}, got {self.ports!r}")
        if self.energy is not None and _concrete(self.energy):
            if len(self.energy) != 3 or not self.energy[0] > 0 or min(self.energy[1:]) < 0:
                raise ValueError(f"{owner}: energy must be (reference bytes > 0, read pJ/bit >= 0, "
                                 f"write pJ/bit >= 0), got {self.energy!r}")

    def energy_per_bit(self) -> Tuple[float, float]:
        """(read, write) pJ per bit at this memory's size."""
        read, write = technology.sram_energy_pj_per_bit(self.size)
        if self.energy is None:
            return read, write
        reference, ref_read, ref_write = self.energy
        at_read, at_write = technology.sram_energy_pj_per_bit(reference)
        return ref_read * read / at_read, ref_write * write / at_write

    def served_dimensions(self, dataflow: List[str]) -> List[str]:
        """ZigZag's ``served_dimensions`` (``D1``, ``D2``, ...) of this memory for an array with ``dataflow``."""
        dims = [f"D{i + 1}" for i in range(len(dataflow))]
        if self.scope == "pe":
            return []
        if self.scope == "array":
            return dims
        relevant = set().union(*(_RELEVANT[o] for o in self.operands))
        return [d for d, loop in zip(dims, dataflow) if loop not in relevant]


class Accelerator(pg.Object):
    """A PE array, its dataflow, its memory hierarchy (innermost first) and DRAM (module docstring)."""

    name: str
    array: List[int]                            # PEs per array dimension
    dataflow: List[str]                         # the loop each array dimension unrolls
    memories: List[Memory]                      # innermost first; DRAM is added above them
    dram_bandwidth: int = 64                    # bits per cycle
    dram_energy: Tuple[float, float] = (700 / 64, 750 / 64)   # pJ per bit read, written
    precision: int = 8                          # bits of weights and activations; partial sums have twice
    mac_energy: float = 0.04                    # pJ per 8-bit MAC
    clock_mhz: float = 1000.0
    systolic: bool = False                      # operands move one PE per cycle along the array (a TPU)

    def _on_bound(self):
        super()._on_bound()
        owner = f"accelerator {self.name!r}"
        if _concrete(self.array):
            if not self.array:
                raise ValueError(f"{owner}: array needs at least one dimension")
            for i, size in enumerate(self.array):
                _positive(owner, f"array[{i}] (PEs)", size)
        if _concrete(self.dataflow):
            bad = [d for d in self.dataflow if d not in LOOPS]
            if bad:
                raise ValueError(f"{owner}: dataflow names unknown loops {bad}; the loops are {LOOPS}")
            if len(set(self.dataflow)) != len(self.dataflow):
                raise ValueError(f"{owner}: dataflow unrolls a loop twice: {list(self.dataflow)}")
            if _concrete(self.array) and len(self.dataflow) != len(self.array):
                raise ValueError(f"{owner}: dataflow {list(self.dataflow)} names {len(self.dataflow)} loops for "
                                 f"{len(self.array)} array dimensions {list(self.array)}")
        _positive(owner, "dram_bandwidth (bits per cycle)", self.dram_bandwidth)
        _positive(owner, "precision (bits)", self.precision)
        _positive(owner, "clock_mhz", self.clock_mhz, integer=False)
        if _concrete(self.mac_energy) and not self.mac_energy >= 0:
            raise ValueError(f"{owner}: mac_energy must be >= 0 pJ, got {self.mac_energy!r}")
        if _concrete(self.memories):
            names = [m.name for m in self.memories]
            if len(set(names)) != len(names) or "dram" in names:
                raise ValueError(f"{owner}: memory names must be distinct and not 'dram', got {names}")

    # ---- derived figures ----------------------------------------------------------------
    @property
    def num_pes(self) -> int:
        count = 1
        for size in self.array:
            count *= size
        return count

    def instances(self, memory: Memory) -> int:
        """How many copies of ``memory`` the array has (PEs over the PEs one copy serves)."""
        served = 1
        for dim in memory.served_dimensions(list(self.dataflow)):
            served *= self.array[int(dim[1:]) - 1]
        return self.num_pes // served

    def hierarchy(self, operand: str) -> List[Memory]:
        """The memories holding ``operand``, innermost first (DRAM not included)."""
        return [m for m in self.memories if operand in m.operands]

    # ---- ZigZag -------------------------------------------------------------------------
    def to_zigzag(self) -> Dict[str, Any]:
        """This accelerator in zigzag-dse 3.9.1's accelerator schema (a dict in ZigZag's key order)."""
        if not pg.is_deterministic(self):
            raise ValueError(f"accelerator {self.name!r} still holds search points; materialise it first")
        from symnas.hw.area import memory_area_mm2  # pylint: disable=import-outside-toplevel
        memories: Dict[str, Any] = {}
        dataflow = list(self.dataflow)
        for memory in self.memories:
            read, write = memory.energy_per_bit()
            memories[memory.name] = {
                "size": int(memory.size) * 8,
                "r_cost": float(read * memory.bandwidth),
                "w_cost": float(write * memory.bandwidth),
                "area": float(memory_area_mm2(memory)),
                "latency": int(memory.latency),
                "operands": [_MEM_OPERAND[o] for o in _ordered(memory.operands)],
                "ports": _ports(memory),
                "served_dimensions": memory.served_dimensions(dataflow),
            }
        dram_read, dram_write = self.dram_energy
        dram = Memory("dram", DRAM_BITS // 8, list(OPERANDS), int(self.dram_bandwidth), ports="rw")
        memories["dram"] = {
            "size": DRAM_BITS, "r_cost": float(dram_read * self.dram_bandwidth),
            "w_cost": float(dram_write * self.dram_bandwidth), "area": 0.0, "latency": 1,
            "operands": ["I1", "I2", "O"], "ports": _ports(dram),
            "served_dimensions": [f"D{i + 1}" for i in range(len(self.array))]}
        dims = [f"D{i + 1}" for i in range(len(self.array))]
        from symnas.hw.technology import mac_area_um2  # pylint: disable=import-outside-toplevel
        array = {"unit_energy": float(self.mac_energy * (self.precision / 8) ** 2),
                 "unit_area": float(mac_area_um2(int(self.precision)) * 1e-6),
                 "dimensions": dims, "sizes": [int(s) for s in self.array]}
        if self.systolic:
            array["systolic_dimensions"] = list(dims)
        return {"name": self.name, "memories": memories, "operational_array": array}

    def zigzag_mapping(self) -> List[Dict[str, Any]]:
        """ZigZag's mapping file for this accelerator: the dataflow as the default spatial mapping."""
        spatial = {f"D{i + 1}": [f"{loop}, {int(size)}"] for i, (loop, size) in enumerate(zip(self.dataflow, self.array))}
        return [{"name": "default", "spatial_mapping": spatial,
                 "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]

    def to_yaml(self, folder: str) -> Tuple[str, str]:
        """Writes ``<name>.yaml`` (accelerator) and ``<name>_mapping.yaml`` into ``folder`` for ZigZag's own
        API (``zigzag.api.get_hardware_performance_zigzag``); returns both paths. The YAML keeps ZigZag's
        key order (``sort_keys=False``): its parser reads some lists positionally."""
        import yaml  # pylint: disable=import-outside-toplevel
        os.makedirs(folder, exist_ok=True)
        paths = (os.path.join(folder, f"{self.name}.yaml"), os.path.join(folder, f"{self.name}_mapping.yaml"))
        for path, data in zip(paths, (self.to_zigzag(), self.zigzag_mapping())):
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(data, f, sort_keys=False)
        return paths

    def describe(self) -> str:
        """One line: array and dataflow, memories, DRAM bandwidth, precision."""
        array = "x".join(f"{s}{l}" for s, l in zip(self.array, self.dataflow))
        mems = ", ".join(f"{m.name}:{_bytes(m.size)}[{''.join(_ordered(m.operands))}]" for m in self.memories)
        return f"{self.name}: {array} PEs; {mems}; DRAM {self.dram_bandwidth} b/cycle; {self.precision}-bit"


def _ordered(operands) -> List[str]:
    return [o for o in ("I", "W", "O") if o in operands]


def _bytes(size: int) -> str:
    for unit, scale in (("MB", 2 ** 20), ("KB", 2 ** 10)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size}B"


def _ports(memory: Memory) -> List[Dict[str, Any]]:
    """ZigZag ports: which port serves each operand's transfers (fh: from higher level, tl: to lower,
    fl: from lower, th: to higher; outputs use all four, weights and inputs fh and tl)."""
    low = int(memory.min_bandwidth if memory.min_bandwidth is not None else memory.bandwidth)
    high = int(memory.bandwidth)
    reads, writes = [], []
    for operand in _ordered(memory.operands):
        mem_op = _MEM_OPERAND[operand]
        reads += [f"{mem_op}, tl"] + ([f"{mem_op}, th"] if operand == "O" else [])
        writes += [f"{mem_op}, fh"] + ([f"{mem_op}, fl"] if operand == "O" else [])

    def port(name, kind, allocation):
        return {"name": name, "type": kind, "bandwidth_min": low, "bandwidth_max": high, "allocation": allocation}
    if memory.ports == "rw":
        both = []
        for operand in _ordered(memory.operands):
            mem_op = _MEM_OPERAND[operand]
            both += [f"{mem_op}, fh", f"{mem_op}, tl"] + ([f"{mem_op}, fl", f"{mem_op}, th"] if operand == "O" else [])
        return [port("rw_port_1", "read_write", both)]
    if memory.ports == "r,w":
        return [port("r_port_1", "read", reads), port("w_port_1", "write", writes)]
    return ([port(f"r_port_{i + 1}", "read", [a]) for i, a in enumerate(reads)]
            + [port(f"w_port_{i + 1}", "write", [a]) for i, a in enumerate(writes)])
