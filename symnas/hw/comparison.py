"""Separate versus joint search of network and accelerator, at the same trial count (NAHAS's comparison).

``compare_searches`` runs, for one backbone, the arms

* (a) the original network on the preset accelerator (no search);
* (b) hardware only: the original network, the accelerator searched (``nahas_space`` around the preset);
* (c) network only: the transformation sequence searched, on the preset;
* (d) sequential: (c)'s network, then the accelerator searched for it (``trials`` more trials: twice the
  others' in all);
* (s) sequential at the same trial count: a network search of ``trials / 2`` trials on the preset, then an
  accelerator search of the other half for its winner;
* (e) joint: network and accelerator searched together;

each search with ``trials`` trials of the same algorithm (minimising ``log_score``: the order of the score,
on a scale that reward-difference learners such as ``Reinforce`` can use), the area budget of the preset
and Fisher legality. A winner is the best of up to ``finalists`` feasible trials (in order of score) whose network passes
the exact whole-network legality check (``LegalityCheck.check``), after reverting the layers that check
finds illegal for up to ``repair_rounds`` rounds (``CoDesignEvaluator.exact_repair``), costed again with
ZigZag's full LOMA mapping search (``loma``). ``format_table`` prints the comparison.

Example::

    import symnas as sn
    results = sn.hw.compare_searches("resnet18", trials=100, batch=sn.hw.fisher_batch(64), loma="none")
    print(sn.hw.format_table(results))
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional

import pyglove as pg

from symnas.hw.area import area_mm2
from symnas.hw.cosearch import CoDesign, CoDesignEvaluator, cosearch_space, original_transformation
from symnas.hw.cost import CostModel
from symnas.hw.presets import nahas_space, preset as preset_by_name

__all__ = ["ArmResult", "compare_searches", "recost_with_loma", "format_table", "ARMS"]

ARMS = {"a": "original on the preset", "b": "hardware only", "c": "network only",
        "d": "sequential (c, then hardware)", "s": "sequential, same trials (N/2 + N/2)", "e": "joint"}
_ORDER = "abcdse"


@dataclasses.dataclass
class ArmResult:
    """One arm's winner: the design, its metrics (fast mapping), its LOMA costs and how the search went."""

    arm: str
    design: Optional[CoDesign]       # None: no feasible design was found
    metrics: Dict[str, Any]
    trials: int                      # trials this arm ran (d: plus the network search it reuses)
    seconds: float                   # wall time of the search, set-up included
    feasible: int                    # feasible trials
    loma: Optional[Dict[str, float]] = None
    exact_legal: Optional[bool] = None
    exact_reason: str = ""
    checked: int = 0                 # finalists checked exactly before one passed
    study: Any = None

    @property
    def label(self) -> str:
        return ARMS[self.arm]


def _default_algorithm(seed: int):
    from symnas.algorithms import RegularizedEvolution  # pylint: disable=import-outside-toplevel
    return RegularizedEvolution(population_size=20, tournament_size=5, seed=seed)


def _best_finalist(arm: str, space: CoDesign, evaluator: CoDesignEvaluator, study, seconds: float, spent: int, *,
                   finalists: int, batch, repair_rounds: int, log: Callable[[str], None]) -> ArmResult:
    """One arm's winner: the best feasible designs of ``study`` in order, each (up to ``finalists``
    distinct repaired designs) through the exact whole-network legality check with repair."""
    from symnas.materialize import Materializer  # pylint: disable=import-outside-toplevel
    materializer = Materializer(space)

    def decode(dna):      # the design as the evaluator costed it (illegal layers reverted under repair)
        return evaluator.repaired(materializer.materialize(dna.use_spec(materializer.dna_spec)))
    records = [r for r in study.completed if r.metrics.get("feasible")]
    records.sort(key=lambda r: r.metrics["score"])
    if not records:
        log(f"  ({arm}) {ARMS[arm]}: no feasible design in {len(study.records)} trials")
        return ArmResult(arm, None, {}, spent, seconds, 0, study=study)
    checked, best, seen = 0, None, set()      # best: (edp, metrics, design, verdict)
    exact = evaluator.scorer is not None
    for record in records:
        if len(seen) >= max(1, finalists):
            break
        design = decode(record.to_dna())
        key = pg.format(design, compact=True)
        if key in seen:
            continue                  # another proposal that the repair made the same design
        seen.add(key)
        if best is not None and record.metrics["edp"] >= best[0]:
            break                     # reverting layers only adds work: no later finalist can win
        if not exact or not any(t.neural for t in design.network.layers):
            metrics, verdict = dict(record.metrics), None
        else:
            checked += 1
            design, verdict, rounds = evaluator.exact_repair(design, batch, repair_rounds)
            if not verdict.legal:
                log(f"  ({arm}) finalist {checked} fails the exact check after {rounds} repairs: {verdict.reason}")
                continue
            metrics = evaluator(design) if rounds else dict(record.metrics)
            if rounds:
                log(f"  ({arm}) finalist {checked} passes the exact check after reverting layers in {rounds} "
                    f"round(s): EDP {record.metrics['edp']:.4g} -> {metrics['edp']:.4g}")
        if best is None or metrics["edp"] < best[0]:
            best = (metrics["edp"], metrics, design, verdict)
    if best is None:
        log(f"  ({arm}) {ARMS[arm]}: no finalist passes the exact legality check")
        return ArmResult(arm, None, {}, spent, seconds, len(records), exact_legal=False, checked=checked,
                         study=study)
    _, metrics, design, verdict = best
    out = ArmResult(arm, design, metrics, spent, seconds, len(records),
                    exact_legal=None if verdict is None else bool(verdict.legal),
                    exact_reason="" if verdict is None else verdict.reason, checked=checked, study=study)
    return out


def compare_searches(backbone: str = "resnet18", trials: int = 200, *, preset: str = "edge_tpu_like",
                     hardware_space: Any = None, algorithm: Callable[[int], Any] = _default_algorithm,
                     seed: int = 0, batch=None, legality: str = "per_layer", objective: str = "edp",
                     finalists: int = 10, repair_rounds: int = 3, loma: str = "targets", arms: str = "abcdse",
                     channel_shuffle: bool = True, exact_in_loop: bool = False,
                     progress: bool = False, log: Callable[[str], None] = print) -> List[ArmResult]:
    """Runs the arms named in ``arms`` (module docstring) and returns their results in order.

    ``algorithm(seed)`` makes a fresh algorithm per search (default: regularized evolution, population 20,
    tournament 5); ``batch`` is the Fisher batch (``fisher_batch``); ``hardware_space`` the accelerator space
    (default ``nahas_space(preset)``). Each search starts with empty caches, so its time includes its own
    cost-model and proxy evaluations. ``loma``: which winners ZigZag's full LOMA search re-costs: ``"all"``,
    ``"targets"`` (default: (a), (e) and the best of (b)-(d), (s) by the fast EDP, the three the targets compare;
    LOMA takes 5040 orders for a grouped layer, minutes each on two cores) or ``"none"``. ``exact_in_loop``: every
    search with a network half runs the whole-network legality check inside the loop on its best designs
    (``CoDesignEvaluator``'s ``exact_batch``, with ``batch``), so its winners need no repair afterwards.
    """
    from symnas.search import search  # pylint: disable=import-outside-toplevel
    if loma not in ("all", "targets", "none"):
        raise ValueError(f"loma must be 'all', 'targets' or 'none', got {loma!r}")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {sorted(ARMS)}")
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    base = preset_by_name(preset)
    hw_space = hardware_space if hardware_space is not None else nahas_space(base)
    budget = area_mm2(base)
    log(f"{backbone}: area budget {budget:.3f} mm² ({preset}), {trials} trials per search, objective {objective}")
    results: Dict[str, ArmResult] = {}

    def run_search(arm: str, space: CoDesign, with_legality: bool, count: int = trials) -> ArmResult:
        start = time.perf_counter()
        evaluator = CoDesignEvaluator(backbone, objective=objective, area_budget=budget,
                                      legality=legality if with_legality else None,
                                      batch=batch if with_legality else None, reference=base, space=space,
                                      cost_model=CostModel(objective=_zigzag_objective(objective)),
                                      exact_batch=batch if with_legality and exact_in_loop else None,
                                      exact_rounds=repair_rounds)
        study = search(space, evaluator, algorithm(seed), num_trials=count, objectives={"log_score": "min"},
                       storage=None, progress=progress, record_objects=False, name=f"hw_{backbone}_{arm}")
        seconds = time.perf_counter() - start
        result = _best_finalist(arm, space, evaluator, study, seconds, count, finalists=finalists, batch=batch,
                                repair_rounds=repair_rounds, log=log)
        if result.design is not None:
            log(f"  ({arm}) {ARMS[arm]}: {count} trials in {seconds:.1f} s, {result.feasible} feasible, "
                f"best EDP {result.metrics['edp']:.4g}")
        return result

    if "a" in arms:
        start = time.perf_counter()
        evaluator = CoDesignEvaluator(backbone, objective=objective, legality=None, reference=base,
                                      cost_model=CostModel(objective=_zigzag_objective(objective)))
        design = CoDesign(network=original_transformation(backbone), accelerator=base)
        results["a"] = ArmResult("a", design, evaluator(design), 1, time.perf_counter() - start, 1, exact_legal=True,
                                 exact_reason="the original")
        log(f"  (a) {ARMS['a']}: EDP {results['a'].metrics['edp']:.4g}")
    if "b" in arms:
        results["b"] = run_search("b", cosearch_space(backbone, hw_space, network=False), with_legality=False)
        results["b"].exact_legal, results["b"].exact_reason = True, "the original"
    if "c" in arms or "d" in arms:
        results["c"] = run_search("c", cosearch_space(backbone, base, channel_shuffle=channel_shuffle),
                                  with_legality=True)
    if "d" in arms:
        # without a feasible network from (c), (d) searches hardware for the original network
        network = (results["c"].design.network if results["c"].design is not None
                   else original_transformation(backbone))
        results["d"] = run_search("d", cosearch_space(backbone, hw_space, fixed_network=network), with_legality=False)
        results["d"].trials += results["c"].trials
        results["d"].exact_legal, results["d"].exact_reason = results["c"].exact_legal, results["c"].exact_reason
    if "s" in arms:
        half = max(1, trials // 2)
        first = run_search("s", cosearch_space(backbone, base, channel_shuffle=channel_shuffle), with_legality=True,
                           count=half)
        network = first.design.network if first.design is not None else original_transformation(backbone)
        second = run_search("s", cosearch_space(backbone, hw_space, fixed_network=network), with_legality=False,
                            count=max(1, trials - half))
        second.trials += first.trials
        second.seconds += first.seconds
        second.exact_legal, second.exact_reason = first.exact_legal, first.exact_reason
        results["s"] = second
    if "e" in arms:
        results["e"] = run_search("e", cosearch_space(backbone, hw_space, channel_shuffle=channel_shuffle),
                                  with_legality=True)
    ordered = [results[a] for a in _ORDER if a in results and (a in arms or a == "c" and "d" in arms)]
    recost_with_loma(ordered, backbone, which=loma, objective=objective, preset=preset, log=log)
    return ordered


def recost_with_loma(results: List[ArmResult], backbone: str, which: str = "targets", objective: str = "edp",
                     preset: str = "edge_tpu_like", log: Callable[[str], None] = print) -> None:
    """Costs the winners again with ZigZag's full LOMA search (``ArmResult.loma``); ``which`` as in
    ``compare_searches``' ``loma``."""
    if which not in ("all", "targets", "none"):
        raise ValueError(f"loma must be 'all', 'targets' or 'none', got {which!r}")
    if which == "none":
        return
    full = CostModel(mapping="loma", objective=_zigzag_objective(objective))
    separate = [r for r in results if r.arm in "bcds" and r.design is not None]
    wanted = {r.arm for r in results if r.design is not None} if which == "all" else (
        {"a", "e"} | ({min(separate, key=lambda r: r.metrics["edp"]).arm} if separate else set()))
    evaluator = CoDesignEvaluator(backbone, objective=objective, legality=None, reference=preset_by_name(preset),
                                  cost_model=full)
    for result in results:
        if result.design is None or result.arm not in wanted:
            continue
        start = time.perf_counter()
        cost = full.network_cost(evaluator.layers(result.design.network), result.design.accelerator)
        result.loma = dict(cost.as_metrics(), seconds=time.perf_counter() - start)
        log(f"  ({result.arm}) LOMA: EDP {result.loma['edp']:.4g} ({result.loma['seconds']:.0f} s)")


def _zigzag_objective(objective: str) -> str:
    return {"edp": "edp", "latency_ms": "latency", "energy_uj": "energy"}[objective]


def format_table(results: List[ArmResult]) -> str:
    """A markdown table: EDP, latency, energy, area, weights, legality, trials and search time per arm, with
    EDP ratios to (a) and, for (e), to the best of (b)-(d)."""
    by_arm = {r.arm: r for r in results if r.design is not None}
    base = by_arm.get("a")
    separate = [by_arm[a] for a in "bcds" if a in by_arm]
    lines = ["| arm | EDP µJ·ms (fast) | vs (a) | EDP (LOMA) | vs (a), LOMA | latency ms | energy µJ | area mm² | "
             "weights | legal (exact) | trials | search s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.design is None:
            lines.append(f"| ({r.arm}) {r.label} | no feasible design | | | | | | | | | {r.trials} | {r.seconds:.0f} |")
            continue
        m = r.metrics
        ratio = f"{base.metrics['edp'] / m['edp']:.2f}x" if base else ""
        loma = f"{r.loma['edp']:.4g}" if r.loma else "-"
        loma_ratio = f"{base.loma['edp'] / r.loma['edp']:.2f}x" if base and base.loma and r.loma else "-"
        legal = "-" if r.exact_legal is None else ("yes" if r.exact_legal else f"no ({r.exact_reason[:40]})")
        lines.append(f"| ({r.arm}) {r.label} | {m['edp']:.4g} | {ratio} | {loma} | {loma_ratio} | "
                     f"{m['latency_ms']:.4f} | {m['energy_uj']:.1f} | {m['area_mm2']:.3f} | {m['weights'] / 1e6:.2f}M | "
                     f"{legal} | {r.trials} | {r.seconds:.0f} |")
    if "e" in by_arm and separate:
        joint = by_arm["e"]
        best = min(separate, key=lambda r: r.metrics["edp"])
        lines.append("")
        lines.append("joint (e), EDP ratios (fast mapping): " + ", ".join(
            f"over ({r.arm}) {r.metrics['edp'] / joint.metrics['edp']:.2f}x" for r in separate)
            + f"; over the best separate ({best.arm}) {best.metrics['edp'] / joint.metrics['edp']:.2f}x")
        with_loma = [r for r in separate if r.loma]
        if joint.loma and with_loma:
            best_loma = min(with_loma, key=lambda r: r.loma["edp"])
            lines.append(f"with LOMA: joint over ({best_loma.arm}) {best_loma.loma['edp'] / joint.loma['edp']:.2f}x")
    return "\n".join(lines)
