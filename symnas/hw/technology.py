"""Silicon figures the accelerator model rests on: SRAM area and access energy, MAC area and energy.

Sources (all numbers below are these, or power laws fitted through two of them):

* **SRAM and register files, 22 nm**: CACTI 7 results that zigzag-dse 3.9.1 ships in
  ``zigzag/cacti/cacti_master/example_mem_pool.yaml`` (entries tagged ``TECH_0.022``; area in mm²,
  energy in nJ per word). The fits go through ``128_Byte_8_BW_1_1_0`` (0.000309137 mm², read
  7.39625e-05 nJ, write 9.96867e-05 nJ per 8-bit word) and ``2097152_Byte_256_BW_1_1_0`` (3.66505 mm²,
  read 0.134898 nJ, write 0.139563 nJ per 256-bit word). Below 128 B (a few-byte register) they are
  extrapolated. A memory with separate ports per direction and operand (``ports="rr,ww"``) costs
  3.07x the area: the pool's ``128_Byte_32_BW_2_2_0`` (0.000950414 mm²) over its 1r1w entry.
* **MACs**: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm: 8-bit integer multiply 282 µm²,
  0.2 pJ; 8-bit add 36 µm², 0.03 pJ; 32-bit add 137 µm², 0.1 pJ. A MAC of ``b``-bit operands is a
  ``b x b`` multiplier (area and energy grow with ``b²``) and a ``2b``-bit accumulator (linear in bits,
  interpolated between the 8- and 32-bit adders), scaled to 22 nm by (22/45)² for area.

Example::

    from symnas.hw import technology as tech
    tech.sram_area_mm2(2 * 2**20)        # 3.665 (the 2 MB pool entry)
    tech.mac_area_um2(8)                 # ~84 µm² at 22 nm
"""
from __future__ import annotations

import math

__all__ = ["sram_area_mm2", "sram_energy_pj_per_bit", "mac_area_um2", "mac_energy_pj", "PORT_AREA_FACTOR"]

# CACTI 7, 22 nm, from zigzag-dse 3.9.1's example_mem_pool.yaml (see the module docstring)
_SMALL_BYTES, _LARGE_BYTES = 128, 2097152
_SMALL_AREA_MM2, _LARGE_AREA_MM2 = 0.000309137, 3.66505
_SMALL_READ_PJ_BIT, _LARGE_READ_PJ_BIT = 7.39625e-05 * 1e3 / 8, 0.134898 * 1e3 / 256
_SMALL_WRITE_PJ_BIT, _LARGE_WRITE_PJ_BIT = 9.96867e-05 * 1e3 / 8, 0.139563 * 1e3 / 256
# area of a memory whose ports are split per direction and operand, over a 1-read-1-write one (same pool)
PORT_AREA_FACTOR = {"rw": 1.0, "r,w": 1.0, "rr,ww": 0.000950414 / 0.000320741}

# Horowitz ISSCC 2014, 45 nm
_MULT8_UM2, _MULT8_PJ = 282.0, 0.2
_ADD8_UM2, _ADD32_UM2 = 36.0, 137.0
_ADD8_PJ, _ADD32_PJ = 0.03, 0.1
_SCALE_45_TO_22 = (22.0 / 45.0) ** 2


def _power_law(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    exponent = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (x / x0) ** exponent


def _check_size(size_bytes: float) -> None:
    if not size_bytes > 0:
        raise ValueError(f"a memory size must be positive, got {size_bytes!r} bytes")


def sram_area_mm2(size_bytes: float, ports: str = "r,w") -> float:
    """Area of one SRAM / register file of ``size_bytes`` at 22 nm (CACTI 7 fit; see the module docstring)."""
    _check_size(size_bytes)
    if ports not in PORT_AREA_FACTOR:
        raise ValueError(f"unknown port layout {ports!r}; use one of {sorted(PORT_AREA_FACTOR)}")
    area = _power_law(size_bytes, _SMALL_BYTES, _SMALL_AREA_MM2, _LARGE_BYTES, _LARGE_AREA_MM2)
    return area * PORT_AREA_FACTOR[ports]


def sram_energy_pj_per_bit(size_bytes: float) -> tuple:
    """(read, write) energy in pJ per accessed bit of an SRAM of ``size_bytes`` at 22 nm (CACTI 7 fit)."""
    _check_size(size_bytes)
    return (_power_law(size_bytes, _SMALL_BYTES, _SMALL_READ_PJ_BIT, _LARGE_BYTES, _LARGE_READ_PJ_BIT),
            _power_law(size_bytes, _SMALL_BYTES, _SMALL_WRITE_PJ_BIT, _LARGE_BYTES, _LARGE_WRITE_PJ_BIT))


def _adder(bits: int, at8: float, at32: float) -> float:
    return at8 + (at32 - at8) * (bits - 8) / 24.0


def mac_area_um2(bits: int) -> float:
    """Area of one MAC (``bits x bits`` multiplier, ``2 * bits`` accumulator) at 22 nm (Horowitz 2014, scaled)."""
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"MAC precision must be a positive number of bits, got {bits!r}")
    return (_MULT8_UM2 * (bits / 8) ** 2 + _adder(2 * bits, _ADD8_UM2, _ADD32_UM2)) * _SCALE_45_TO_22


def mac_energy_pj(bits: int) -> float:
    """Energy of one MAC at 45 nm (Horowitz 2014); the presets carry their own figures instead."""
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"MAC precision must be a positive number of bits, got {bits!r}")
    return _MULT8_PJ * (bits / 8) ** 2 + _adder(2 * bits, _ADD8_PJ, _ADD32_PJ)
