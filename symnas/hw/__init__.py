"""Symbolic accelerators, costed by ZigZag, searched together with the network (``sn.hw``).

* ``Accelerator`` / ``Memory``: a PE array, its dataflow, a memory hierarchy, DRAM bandwidth,
  precision, clock; any field a search point. Presets from zigzag-dse's shipped inputs:
  ``edge_tpu_like()``, ``tpu_like()``, ``eyeriss_like()``; ``nahas_space()`` searches the
  edge-TPU template over NAHAS-style ranges.
* ``area_mm2`` (MACs + SRAM bits at 22 nm; sources in ``sn.hw.technology``).
* ``CostModel``: energy, latency and EDP of ``Layer``s on an accelerator through ZigZag, a fast
  fixed-order mapping cached per (layer, accelerator, mapping), and ZigZag's full LOMA search.
* ``network_layers(net)`` / ``schedule_layers(schedule)`` / ``torch_layers(module)``: the layers of
  symnas networks, original or transformed (a schedule's loop order is the temporal mapping).
* ``cosearch_space`` / ``CoDesign`` / ``CoDesignEvaluator``: network x transformations x hardware
  through ``sn.search``; ``compare_searches`` runs the separated and joint searches side by side.

Example::

    import symnas as sn
    acc = sn.hw.edge_tpu_like()
    cost = sn.hw.CostModel().network_cost(sn.hw.network_layers(sn.nn.resnet18()), acc)
    print(f"{cost.latency_ms:.3f} ms, {cost.energy_uj:.1f} uJ, {sn.hw.area_mm2(acc):.2f} mm2")
"""
from symnas.hw.accelerator import DATAFLOWS, LOOPS, OPERANDS, Accelerator, Memory
from symnas.hw.area import area_breakdown, area_mm2, smallest_area_mm2
from symnas.hw.cost import CostModel, LayerCost, NetworkCost
from symnas.hw.cosearch import (CoDesign, CoDesignEvaluator, cosearch_space, fisher_batch, loop_order_menu,
                                original_transformation, weights_of)
from symnas.hw.errors import HardwareError
from symnas.hw.presets import NAHAS_RANGES, PRESETS, edge_tpu_like, eyeriss_like, nahas_space, preset, tpu_like
from symnas.hw.workload import ORDERS, Layer, network_layers, schedule_layers, schedule_loop_order, torch_layers

__all__ = ["Accelerator", "Memory", "LOOPS", "OPERANDS", "DATAFLOWS", "area_mm2", "area_breakdown",
           "smallest_area_mm2", "CostModel", "LayerCost", "NetworkCost", "CoDesign", "CoDesignEvaluator",
           "cosearch_space", "fisher_batch", "loop_order_menu", "original_transformation", "weights_of",
           "HardwareError", "PRESETS", "NAHAS_RANGES", "edge_tpu_like", "eyeriss_like", "nahas_space", "preset",
           "tpu_like", "ORDERS", "Layer", "network_layers", "schedule_layers", "schedule_loop_order",
           "torch_layers"]
from symnas.hw.comparison import ARMS, ArmResult, compare_searches, format_table, recost_with_loma  # noqa: E402
from symnas.hw.validation import RankReport, fast_vs_full, random_pairs, transformed_layers  # noqa: E402

__all__ += ["ARMS", "ArmResult", "compare_searches", "format_table", "recost_with_loma", "RankReport", "fast_vs_full", "random_pairs",
            "transformed_layers"]
