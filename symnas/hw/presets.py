"""Named accelerators from zigzag-dse 3.9.1's shipped inputs, and a NAHAS-style search space.

``edge_tpu_like()``, ``tpu_like()`` and ``eyeriss_like()`` reproduce ZigZag's
``zigzag/inputs/hardware/<name>.yaml`` (array, memory sizes, ports, bandwidths, served
dimensions, access energies, MAC energy) with the spatial mapping of its
``zigzag/inputs/mapping/<name>.yaml``. ZigZag ships no mapping for ``eyeriss_like``: its
``default.yaml`` unrolls ``K`` and ``C`` (cut to the 14 x 12 array), and so does the preset;
Eyeriss's row-stationary dataflow is ``dataflow=["OY", "FY"]``. Each memory's access energy is
the shipped one at the shipped size and scales with size like CACTI's (``sn.hw.technology``),
so a search that resizes a buffer pays for it.

``nahas_space()`` is the edge-TPU-like template with NAHAS's (arXiv 2102.08619) kind of
parameters searchable: PEs in x and y, SIMD lanes and compute lanes per PE, the local weight
buffer, the global buffer, its bandwidth and the DRAM (I/O) bandwidth, plus the dataflow.

Example::

    import pyglove as pg, symnas as sn
    acc = sn.hw.edge_tpu_like()
    space = sn.hw.nahas_space()
    candidate = next(pg.random_sample(space, seed=0))
"""
from __future__ import annotations

from typing import Callable, Dict

import pyglove as pg

from symnas.hw.accelerator import Accelerator, Memory

__all__ = ["edge_tpu_like", "tpu_like", "eyeriss_like", "PRESETS", "preset", "nahas_space", "NAHAS_RANGES"]

_MB = 2 ** 20


def edge_tpu_like() -> Accelerator:
    """ZigZag's ``edge_tpu_like``: 8 x 8 x 4 x 4 PEs unrolling K, C, OX, OY; 32 KB weight SRAM, 2 MB
    activation SRAM; DRAM at 64 bits per cycle."""
    return Accelerator(
        name="edge_tpu_like", array=[8, 8, 4, 4], dataflow=["K", "C", "OX", "OY"],
        memories=[
            Memory("rf_1B", 1, ["W"], 8, scope="shared", energy=(1, 0.01 / 8, 0.01 / 8)),
            Memory("rf_2B", 2, ["O"], 16, scope="shared", ports="rr,ww", energy=(2, 0.02 / 16, 0.02 / 16)),
            Memory("sram_32KB", 32768, ["W"], 512, min_bandwidth=64, energy=(32768, 22.9 / 512, 52.01 / 512)),
            Memory("sram_2MB", 2 * _MB, ["I", "O"], 2048, min_bandwidth=64,
                   energy=(2 * _MB, 416.16 / 2048, 378.4 / 2048)),
        ],
        dram_bandwidth=64, dram_energy=(700 / 64, 750 / 64), precision=8, mac_energy=0.04)


def tpu_like() -> Accelerator:
    """ZigZag's ``tpu_like``: a 32 x 32 weight-stationary systolic array (K x C), a 128 B weight register
    and a 2 B accumulator per PE, a 2 MB activation SRAM, no weight SRAM."""
    return Accelerator(
        name="tpu_like", array=[32, 32], dataflow=["K", "C"],
        memories=[
            Memory("rf_128B", 128, ["W"], 8, scope="pe", energy=(128, 0.095 / 8, 0.095 / 8)),
            Memory("rf_2B", 2, ["O"], 16, scope="pe", ports="rr,ww", energy=(2, 0.021 / 16, 0.021 / 16)),
            Memory("sram_2MB", 2 * _MB, ["I", "O"], 2048, min_bandwidth=64,
                   energy=(2 * _MB, 416.16 / 2048, 378.4 / 2048)),
        ],
        dram_bandwidth=64, dram_energy=(700 / 64, 750 / 64), precision=8, mac_energy=0.04, systolic=True)


def eyeriss_like() -> Accelerator:
    """ZigZag's ``eyeriss_like``: 14 x 12 PEs with 64 B input and weight and 16 B output registers each,
    8 KB output, 64 KB weight and 1 MB shared SRAMs; unrolls K x C as ZigZag's default mapping does."""
    return Accelerator(
        name="eyeriss_like", array=[14, 12], dataflow=["K", "C"],
        memories=[
            Memory("rf_64B_A", 64, ["I"], 8, scope="pe", energy=(64, 1.0 / 8, 1.5 / 8)),
            Memory("rf_64B_W", 64, ["W"], 8, scope="pe", energy=(64, 1.0 / 8, 1.5 / 8)),
            Memory("rf_16B", 16, ["O"], 24, scope="pe", energy=(16, 1.5 / 24, 2.0 / 24)),
            Memory("sram_8KB", 8192, ["O"], 128, ports="rw", energy=(8192, 10.0 / 128, 15.0 / 128)),
            Memory("sram_64KB", 65536, ["W"], 128, energy=(65536, 20.0 / 128, 25.0 / 128)),
            Memory("sram_1M", _MB, ["I", "O"], 384, ports="rw", energy=(_MB, 100.0 / 384, 130.0 / 384)),
        ],
        dram_bandwidth=64, dram_energy=(1000 / 64, 1000 / 64), precision=8, mac_energy=0.5)


PRESETS: Dict[str, Callable[[], Accelerator]] = {
    "edge_tpu_like": edge_tpu_like, "tpu_like": tpu_like, "eyeriss_like": eyeriss_like}


def preset(name: str) -> Accelerator:
    """A preset by name (``edge_tpu_like``, ``tpu_like``, ``eyeriss_like``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown accelerator preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name]()


# NAHAS's hardware parameters mapped onto the edge-TPU-like template (the paper's Edge TPU has a grid of
# PEs, each with SIMD lanes and compute lanes, local memory and an I/O bandwidth). The values span the
# ranges the paper searches (PEs per side 1-8, local memory 0.5-4 MB, I/O bandwidth 5-25 GB/s = 40-200
# bits per cycle at 1 GHz) around ZigZag's preset.
NAHAS_RANGES = {
    "array[0]": [4, 8, 16, 32],                 # SIMD lanes (output channels K)
    "array[1]": [2, 4, 8, 16],                  # compute lanes (input channels C)
    "array[2]": [1, 2, 4, 6, 8],                # PEs in x (output columns OX)
    "array[3]": [1, 2, 4, 6, 8],                # PEs in y (output rows OY)
    "memories[2].size": [8192, 16384, 32768, 65536, 131072],             # weight buffer, bytes
    "memories[3].size": [_MB // 2, _MB, 2 * _MB, 3 * _MB, 4 * _MB],     # global buffer, bytes
    "memories[3].bandwidth": [512, 1024, 2048, 4096],                    # its port, bits per cycle
    "dram_bandwidth": [40, 80, 120, 160, 200],                           # bits per cycle
}
NAHAS_DATAFLOWS = [["K", "C", "OX", "OY"], ["K", "C", "FX", "FY"], ["K", "G", "OX", "OY"]]


def nahas_space(base: Accelerator = None, dataflows=NAHAS_DATAFLOWS) -> Accelerator:
    """``base`` (default ``edge_tpu_like()``) with ``NAHAS_RANGES`` and ``dataflows`` as search points."""
    acc = (base or edge_tpu_like()).clone(deep=True)
    updates = {path: pg.oneof(values) for path, values in NAHAS_RANGES.items()}
    if dataflows:
        updates["dataflow"] = pg.oneof([list(d) for d in dataflows])
    acc.rebind(updates, skip_notification=True)
    return acc.rebind(name="nahas_edge_tpu", skip_notification=True)
