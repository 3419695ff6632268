"""``sn.pte.search``: make a network faster by program and neural transformations that keep it legal.

One call runs the whole method:

1. **kernel table** (``KernelTable``, ``LayerMenu``): every distinct conv shape x neural option x
   program template is compiled with TVM and timed at batch 1 (or read from a saved table);
2. **search** (``CandidateEvaluator`` + any ``sn.algorithms`` algorithm through ``sn.search``):
   ``trials`` candidates, one transformation per conv; each layer transformation scored by Fisher
   Potential alone, illegal candidates rejected before anything is compiled, legal ones costed by
   the table;
3. **exact check** (``ExactScreening``, ``Repair``): the best candidates are checked as whole
   networks; the first that passes is kept, or the best is repaired until it passes;
4. **budget fill** (``BudgetFill``, with ``target_speedup``): what the budget leaves is spent on
   capacity, each upgrade kept only while the network stays legal;
5. **measurement**: the original and the result compiled (flat plan) and timed in one process.

Example::

    import symnas as sn
    result = sn.pte.search(sn.nn.resnet18(), data=sn.data.CIFAR10(), target_speedup=3.0,
                           legality="network", trials=300)
    print(result)                    # measured speedup, params, legality
    model = result.network.build((3, 32, 32))     # train it: sn.train.Trainer(model=result.network, ...)
    result.save("resnet18_3x.json")
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional

from symnas.pte.evaluator import CandidateEvaluator
from symnas.pte.exact import ExactCheck, release_memory
from symnas.pte.fill import BudgetFill
from symnas.pte.kernel_table import KernelTable
from symnas.pte.menu import LayerMenu
from symnas.pte.repair import Repair
from symnas.pte.result import LegalityRecord, PTEResult
from symnas.pte.screening import ExactScreening

__all__ = ["search"]

DEFAULT_FILL = BudgetFill(by="snip", checks=100)


def search(network, data=None, target_speedup: Optional[float] = None, legality: str = "network",
           trials: int = 1000, algorithm=None, *, objective: str = "latency", rejection: str = "layer",
           kernel_table: Optional[KernelTable] = None, menu: Optional[LayerMenu] = None,
           screening: Optional[ExactScreening] = None, repair: Optional[Repair] = None,
           fill: Optional[BudgetFill] = DEFAULT_FILL, batch_size: int = 128, proxy: str = "fisher",
           context: str = "block", seed: int = 0, measure: bool = True, rounds: int = 5,
           log: Optional[Callable[[str], None]] = None) -> PTEResult:
    """Searches transformations of ``network`` (a symbolic ``sn.nn`` network, e.g. ``sn.nn.resnet34()``).

    ``data``: a ``sn.data`` dataset; a minibatch of ``batch_size`` training images (drawn by ``seed``)
    judges legality. ``target_speedup``: the latency budget as a speedup over the original's kernel
    sum; with ``objective="latency"`` the fastest legal network is found first and ``fill`` spends the
    rest of the budget on capacity (``fill=None``: no fill, the fastest legal network); with
    ``objective="fisher"|"params"`` the search looks for the most Fisher Potential / conv weights
    within the budget. ``legality``: ``"network"`` (the network's score, the default) or
    ``"per_layer"`` (every transformed layer's, stricter). ``algorithm``: any ``sn.algorithms``
    algorithm (default: regularized evolution, population 20). ``kernel_table``: where latencies come
    from and are saved (default: measured here, not saved). ``menu``: what each layer may become
    (default: every grouping with channel shuffle). ``measure``: time the result against the original
    (``rounds`` interleaved rounds). ``log``: called with one line per stage (e.g. ``print``).
    """
    if data is None:
        raise ValueError("sn.pte.search needs data= (e.g. sn.data.CIFAR10()): a minibatch of it judges legality")
    if target_speedup is not None and not target_speedup > 0:
        raise ValueError(f"target_speedup must be positive, got {target_speedup}")
    if objective != "latency" and target_speedup is None:
        raise ValueError(f"objective={objective!r} searches within a latency budget: give target_speedup")
    if not trials >= 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    evaluator = CandidateEvaluator(legality=legality, rejection=rejection, objective=objective,
                                   target_speedup=target_speedup or 1.0, proxy=proxy, context=context, seed=seed)
    run = _Run(network, data, evaluator, log or (lambda line: None), seed, batch_size)
    run.draw_batch()            # a missing data set fails here, before minutes of kernel compiles
    # (an empty KernelTable is falsy: defaults are chosen by `is None`)
    run.tables(KernelTable() if kernel_table is None else kernel_table,
               LayerMenu(channel_shuffle=True) if menu is None else menu)
    run.search(trials, algorithm)
    run.exact(ExactScreening(candidates=40 if legality == "network" else 10) if screening is None else screening,
              Repair() if repair is None else repair)
    if target_speedup is not None and fill is not None:
        run.fill(fill, target_speedup)
    result = run.result()
    if measure:
        result.measure(rounds=rounds, seed=seed)
        run.log(f"measured: {result}")
    return result


class _Run:
    """The state of one ``search`` call, stage by stage."""

    def __init__(self, network, data, evaluator: CandidateEvaluator, log: Callable[[str], None], seed: int,
                 batch_size: int):
        self.network, self.data, self.spec, self.log, self.seed = network, data, evaluator, log, seed
        self.batch_size = batch_size
        self.times: Dict[str, float] = {}
        self.record: Dict[str, Any] = {"screened": [], "moves": [], "repair_rounds": 0, "fill_upgrades": [],
                                       "fill_checks": 0}

    def draw_batch(self) -> None:
        start = time.perf_counter()
        self.x, self.y = self.data.batch(self.batch_size, seed=self.seed)
        if tuple(self.x.shape[1:]) != (3, 32, 32):
            raise ValueError(f"sn.pte.search: the data's images are {tuple(self.x.shape[1:])}; the network and its "
                             "kernels are measured on 3x32x32 images (CIFAR-10)")
        self.times["data"] = time.perf_counter() - start

    def tables(self, table: KernelTable, menu: LayerMenu) -> None:
        start = time.perf_counter()
        self.table = table
        loaded = table.load()
        for warning in table.warnings:
            self.log(f"warning: {warning}")
        self.menu = menu.build(self.network, table)
        if table.path:
            table.save()
        self.times["kernel_table"] = time.perf_counter() - start
        self.log(f"kernel table: {loaded} latencies read, {table.compiles} kernels compiled and timed "
                 f"in {self.times['kernel_table']:.0f} s; original kernels {self.menu.original_ms:.3f} ms")

    def search(self, trials: int, algorithm) -> None:
        from symnas import algorithms  # pylint: disable=import-outside-toplevel
        from symnas import search as loop  # pylint: disable=import-outside-toplevel
        from symnas import spaces  # pylint: disable=import-outside-toplevel
        from symnas.materialize import Materializer  # pylint: disable=import-outside-toplevel
        start = time.perf_counter()
        self.evaluator = self.spec.bind(self.network, self.menu, self.x, self.y)
        self.times["proxy_setup"] = time.perf_counter() - start
        self.space = spaces.network_transformations(self.network, menu=self.menu.neural(), templates=self.menu.templates,
                                                    keep=self.menu.keep)
        self.algorithm = algorithm or algorithms.RegularizedEvolution(population_size=20, tournament_size=5,
                                                                     seed=self.seed)
        self.study = loop(self.space, self.evaluator, self.algorithm, num_trials=trials, storage=None,
                          progress=False, name="sn.pte", record_objects=False)
        self.scorings_in_search = self.evaluator.scorer.evaluations
        self.per_layer_optimum()
        self.times["search"] = time.perf_counter() - start
        self.decode = Materializer(self.space).materialize
        if not self.study.completed:
            errors = [r.error for r in self.study.records if getattr(r, "error", None)]
            raise RuntimeError(f"no candidate was evaluated: {len(self.study.records)} trials failed, the first "
                               f"with {errors[0] if errors else 'no error recorded'}")
        self.best = self.decode(self.study.best_trial.to_dna())
        if self.spec.legality == "network" or self.spec.objective != "latency":
            self.greedy_ms = math.inf   # the per-layer optimum is the fastest network under per-layer legality only
        self.search_ms = self.evaluator(self.best)["latency_ms"] or math.inf
        self.log(f"search: {trials} candidates in {self.times['search']:.1f} s; "
                 f"{self._rejected()} illegal; best legal kernels {self.search_ms:.3f} ms")

    def per_layer_optimum(self) -> None:
        """Scores every option of every layer (the per-layer optimum needs them, and so do repair
        and fill once the scorer's activations are freed)."""
        menu, evaluator = self.menu, self.evaluator
        self.greedy = {}
        for s in menu.sites:
            choices = [(menu.options[s.key][i].latency_ms, i) for i in range(len(menu.options[s.key]))
                       if i == 0 or evaluator.layer(s.path, i)[0]]
            self.greedy[s.path] = min(choices)
        self.greedy_ms = menu.fixed_ms + sum(v[0] for v in self.greedy.values())
        self.nas_legal = {s.path: evaluator.layer_legal(s.path, menu.nas_only[s.key].neural) for s in menu.sites}
        evaluator.release()
        release_memory()

    def _rejected(self) -> int:
        return sum(1 for r in self.study.completed if r.metrics.get("network_rejected"))

    def exact(self, screening: ExactScreening, repair: Repair) -> None:
        """Screens the search's best legal candidates exactly, then repairs the chosen one."""
        start = time.perf_counter()
        self.check = ExactCheck(self.network, self.menu, self.x, self.y, self.spec.legality_check())
        algorithm = type(self.algorithm).__name__
        if self.greedy_ms < self.search_ms:
            self.chosen_from = "the per-layer optimum over all scored options"
            self.choice = {p: self.menu.option_choice(p, i) for p, (_, i) in self.greedy.items()}
            shortlist = []
        else:
            self.chosen_from = f"the best of the {algorithm} search"
            self.choice = self.evaluator.choice(self.best)
            shortlist = screening.shortlist(self.study, self.decode, self.evaluator)
        passed, self.record["screened"] = screening.run(self.check, shortlist)
        if passed is not None:
            self.choice = shortlist[passed]
            if passed:
                self.chosen_from += f" that passes the exact check (rank {passed + 1} of its legal candidates)"
        if shortlist:
            self.log(f"exact check of the search's {len(self.record['screened'])} best legal candidates: "
                     + (f"passed by rank {passed + 1}" if passed is not None else "none passed; repairing the best"))
        outcome = repair.run(self.check, self.evaluator, self.choice, legal=passed is not None)
        self.choice, self.legal = outcome.choice, outcome.legal
        self.record.update(moves=outcome.moves, repair_rounds=outcome.rounds)
        if outcome.moves:
            self.log(f"repair: {outcome.rounds} rounds, {len(outcome.moves)} layer moves")
        self.times["exact"] = time.perf_counter() - start

    def fill(self, fill: BudgetFill, target_speedup: float) -> None:
        """Spends the latency budget left on capacity (only a network legal by the exact check)."""
        if not self.legal:
            self.log("budget fill skipped: the chosen network is not legal by the exact check")
            return
        start = time.perf_counter()
        outcome = fill.run(self.check, self.evaluator, self.choice, self.menu.original_ms / target_speedup)
        self.choice = outcome.choice
        self.record.update(fill_upgrades=outcome.upgrades, fill_checks=outcome.checks)
        self.times["fill"] = time.perf_counter() - start
        self.log(f"budget fill (by {fill.by}): {len(outcome.upgrades)} upgrades kept of {outcome.checks} checked "
                 f"(kernels {outcome.latency_ms:.2f} ms of {outcome.budget_ms:.2f})")

    def result(self) -> PTEResult:
        """The final exact checks in both modes, the parameters, and the result."""
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        import torch  # pylint: disable=import-outside-toplevel
        network = self.check.network_of(self.choice)
        exact = {mode: self.spec.legality_check(mode).check(self.network, network, self.x, self.y,
                                                             original_scores=self.check.original_scores)
                 for mode in ("per_layer", "network")}
        params = {}
        for label, net in (("original", self.network), ("ours", network)):
            torch.manual_seed(self.seed)
            params[label] = snn.count_params(net.build((3, 32, 32)))
        verdict = exact[self.spec.legality]
        record = LegalityRecord(
            mode=self.spec.legality, proxy=self.spec.proxy, legal=verdict.legal,
            original_score=verdict.original_score, candidate_score=verdict.candidate_score,
            exact={m: {**r.as_metrics(), "failing": r.failing_layers} for m, r in exact.items()},
            candidates_rejected=self._rejected(), candidates=len(self.study.completed),
            layer_transformations_scored=len(self.evaluator.scored),
            layer_transformations_illegal=sum(1 for v in self.evaluator.scored.values() if not v[0]),
            chosen_from=self.chosen_from, **self.record)
        return PTEResult(network, self.network, self.choice, self._programs(), self._kernel_ms(), params, record,
                         self._search_record(), layers=self._layer_rows(), study=self.study)

    def _layer_rows(self) -> list:
        """Per searched layer: its shape, kernel latencies (original, NAS-only, ours), what it runs and
        its proxy score alone (original -> ours)."""
        from symnas.spaces import describe_neural  # pylint: disable=import-outside-toplevel
        from symnas.pte.menu import template_name  # pylint: disable=import-outside-toplevel
        menu, rows = self.menu, []
        for s in menu.sites:
            n, pr = self.choice[s.path]
            index = menu.index(s.key, n)
            original = self.evaluator.scorer.original_scores[s.torch_name]
            ours = self.evaluator.layer(s.path, index)[1] if index else original
            rows.append(dict(layer=s.torch_name, path=s.path, shape=f"{s.in_shape[0]}->{s.out_shape[0]} "
                             f"{s.in_shape[1]}x{s.in_shape[2]} s{s.layer.stride}",
                             original_ms=menu.options[s.key][0].latency_ms, nas_only_ms=menu.nas_only[s.key].latency_ms,
                             ours_ms=menu.table.measure(menu.ops[s.key], n, pr), neural=describe_neural(n),
                             template=template_name(pr), score_original=original, score_ours=ours,
                             nas_only_legal=self.nas_legal[s.path]))
        return rows

    def _programs(self) -> Dict[str, Dict[str, list]]:
        """Conv path -> program steps to compile each network with (the table's fastest templates)."""
        menu = self.menu
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        original = {s.path: list(menu.options[s.key][0].program)
                    for s in snn.transformable_convs(self.network, include_all=True)}
        ours = {p: v for p, v in original.items() if p not in self.choice or not self.choice[p][0]}
        ours.update({p: list(pr) for p, (n, pr) in self.choice.items() if not n})
        nas_only = dict(original)
        nas_only.update({s.path: list(menu.nas_only[s.key].program) for s in menu.sites})
        return {"original": original, "ours": ours, "nas_only": nas_only}

    def _kernel_ms(self) -> Dict[str, float]:
        menu = self.menu
        return {"original": menu.original_ms, "ours": menu.latency(self.choice), "search_best": self.search_ms,
                "per_layer_optimum": self.greedy_ms,
                "nas_only": menu.fixed_ms + sum(menu.nas_only[s.key].latency_ms for s in menu.sites)}

    def _search_record(self) -> Dict[str, Any]:
        trials = self.study.records
        return {"trials": len(trials), "failed": sum(1 for r in trials if r.status != "completed"),
                "algorithm": type(self.algorithm).__name__, "seconds": dict(self.times),
                "layer_scorings": self.evaluator.scorer.evaluations, "scorings_in_search": self.scorings_in_search,
                "scoring_seconds": self.evaluator.scorer.seconds, "kernel_compiles": self.table.compiles,
                "batch_size": self.batch_size, "seed": self.seed, "exact_checks": self.check.checks,
                "uncompilable_layer_choices": self.evaluator.counts["uncompilable"],
                "proposed_layer_transformations": self.evaluator.counts["transformed"],
                "nas_only_layers_legal": self.nas_legal}
