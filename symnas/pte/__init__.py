"""NAS as program transformation: make a network faster while a zero-cost proxy says it keeps its capacity.

One call, ``sn.pte.search(net, data=..., target_speedup=...)``, runs the method; its parts are small
objects you can use, swap or configure on their own: ``KernelTable`` (measured kernel latencies,
saved and reused), ``LayerMenu`` (what each layer may become), ``CandidateEvaluator`` (legality and
reward of a candidate, before any compile), ``ExactScreening`` and ``Repair`` (the whole-network
check), ``BudgetFill`` (spend the budget left on capacity).

Example::

    import symnas as sn
    result = sn.pte.search(sn.nn.resnet18(), data=sn.data.CIFAR10(), target_speedup=3.0, trials=300)
    print(result)
    result.save("resnet18_3x.json")
"""
from symnas.pte.evaluator import BoundEvaluator, CandidateEvaluator
from symnas.pte.exact import ExactCheck, release_memory
from symnas.pte.fill import BudgetFill, FillOutcome
from symnas.pte.kernel_table import KernelTable, KernelTableError, steps_key
from symnas.pte.menu import KernelMenu, LayerMenu, Option, describe_steps, template_name
from symnas.pte.repair import Repair, RepairOutcome
from symnas.pte.result import LegalityRecord, PTEResult, load
from symnas.pte.screening import ExactScreening
from symnas.pte.search import search
from symnas.pte.timing import (compare_networks, compile_choice, end_to_end_timings, kernel_share, relax_latency,
                               torch_conv_timings, torch_optimized)

__all__ = ["BoundEvaluator", "BudgetFill", "CandidateEvaluator", "ExactCheck", "ExactScreening", "FillOutcome",
           "KernelMenu", "KernelTable", "KernelTableError", "LayerMenu", "LegalityRecord", "Option", "PTEResult",
           "Repair", "RepairOutcome", "compare_networks", "compile_choice", "describe_steps", "end_to_end_timings",
           "kernel_share", "load", "relax_latency", "release_memory", "search", "steps_key", "template_name",
           "torch_conv_timings", "torch_optimized"]
