"""Network transformations, accelerator and learning rate searched together through ``sn.search``.

``CoDesign`` is one symbolic object holding a whole-network transformation
(``sn.spaces.network_transformations``: per conv a neural step sequence, and optionally a loop
order that becomes the layer's temporal mapping), an ``Accelerator`` and, where training is run,
a learning rate. ``cosearch_space`` builds it with search points; any part can be fixed to search
the others (hardware only, network only). ``CoDesignEvaluator`` measures one design: its area
(rejected over ``area_budget``), its Fisher legality (as ``sn.proxies.LegalityCheck`` judges it,
from per-layer scores cached across trials), then its energy, latency and EDP on the
accelerator (``sn.hw.CostModel``, fast mapping), its weights and MACs. Any ``sn.algorithms``
algorithm drives it, one line to swap; several objectives give ``study.pareto_front()``.

Example::

    import symnas as sn
    space = sn.hw.cosearch_space("resnet18")
    evaluate = sn.hw.CoDesignEvaluator("resnet18", area_budget=sn.hw.area_mm2(sn.hw.edge_tpu_like()),
                                       batch=sn.hw.fisher_batch(32))
    study = sn.search(space, evaluate, sn.algorithms.RegularizedEvolution(seed=0), num_trials=100,
                      objectives={"score": "min"}, storage=None)
    print(study.best.describe(), study.trials["edp"].min())
"""
from __future__ import annotations

import io
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.errors import TrialRejected
from symnas.hw.accelerator import Accelerator
from symnas.hw.area import area_mm2, smallest_area_mm2
from symnas.hw.cost import CostModel
from symnas.hw.presets import edge_tpu_like, nahas_space
from symnas.hw.workload import ORDERS, Layer, network_layers, schedule_layers

__all__ = ["CoDesign", "CoDesignEvaluator", "cosearch_space", "loop_order_menu", "fisher_batch", "weights_of"]

# CIFAR-10 normalisation of benchmarks/train_cifar.py (the recipe the winners are trained with)
_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


class CoDesign(pg.Object):
    """A network transformation, the accelerator it runs on and, when trained, its learning rate."""

    network: Any                                # sn.spaces.NetworkTransformation
    accelerator: Accelerator
    learning_rate: Any = None                   # a float (or a pg.floatv in a space); None: no training

    def describe(self) -> str:
        changed = [f"{t.path.replace('layers[', '').replace(']', '')}={t.describe()}"
                   for t in self.network.layers if t.neural]
        lr = f"; lr {self.learning_rate:.3g}" if self.learning_rate is not None else ""
        return f"{self.accelerator.describe()}; {len(changed)} layers transformed{lr}"


def loop_order_menu(op) -> List[list]:
    """Program step lists that give a conv the canonical temporal orders (``sn.hw.ORDERS``): the default
    nest (output-stationary) and ``Reorder`` steps for weight- and input-stationary. The same steps
    reorder the CPU kernel's loops, so one step list drives both."""
    from symnas import program as P  # pylint: disable=import-outside-toplevel
    del op
    menu = [[]]
    for name in ("weight_stationary", "input_stationary"):
        menu.append([P.Reorder(list(ORDERS[name][1:]))])
    return menu


def cosearch_space(backbone: str = "resnet18", accelerator: Optional[Accelerator] = None, *,
                   network: bool = True, channel_shuffle: bool = True, loop_orders: bool = False,
                   keep: Sequence[str] = (), learning_rate: Any = None, num_classes: int = 10,
                   fixed_network: Any = None) -> CoDesign:
    """The joint space: ``backbone``'s transformation space x ``accelerator`` (default
    ``sn.hw.nahas_space()``; a concrete accelerator fixes it) x ``learning_rate`` (a value or a
    ``pg.floatv``; ``None`` when no training is run).

    ``network=False`` keeps the original network (hardware-only search); ``fixed_network`` (a concrete
    ``NetworkTransformation``) keeps that one. ``loop_orders`` adds, per conv, a choice of temporal
    loop order (``loop_order_menu``) as the layer's program steps; otherwise each layer is mapped with
    the best canonical order. ``channel_shuffle`` and ``keep`` are ``network_transformations``'.
    """
    from symnas.spaces.transformations import network_transformations  # pylint: disable=import-outside-toplevel
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    acc = nahas_space() if accelerator is None else accelerator
    if fixed_network is not None:
        net = fixed_network
    elif network:
        sites = snn.transformable_convs(snn.backbone(backbone, num_classes))
        templates = {s.key: (loop_order_menu(s.operator()) if loop_orders else [[]]) for s in sites}
        net = network_transformations(backbone, num_classes, templates=templates, channel_shuffle=channel_shuffle,
                                      keep=keep)
    else:
        net = original_transformation(backbone, num_classes)
    return CoDesign(network=net, accelerator=acc, learning_rate=learning_rate)


def original_transformation(backbone: str, num_classes: int = 10):
    """``backbone`` as a ``NetworkTransformation`` with every layer left original (nothing to search)."""
    from symnas.spaces.transformations import LayerTransformation, NetworkTransformation  # pylint: disable=import-outside-toplevel
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    sites = snn.transformable_convs(snn.backbone(backbone, num_classes))
    return NetworkTransformation(backbone, num_classes, (3, 32, 32), [LayerTransformation(s.path) for s in sites])


def fisher_batch(n: int = 128, seed: int = 0, root: Optional[str] = None, synthetic: bool = False):
    """``n`` random CIFAR-10 training images (normalised NCHW float) and labels for Fisher legality.

    Reads ``cifar10_jpeg.npz`` under ``root`` (default ``$SYMNAS_DATA``, as ``sn.data.CIFAR10``) and decodes
    only the ``n`` drawn images. ``synthetic=True`` draws Gaussian images and random labels instead (for
    demonstrations without the data; Fisher legality on them says little).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"fisher_batch needs a positive number of images, got {n!r}")
    if synthetic:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)
    from symnas.data.datasets import _resolve  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    path = _resolve(root, ("cifar10_jpeg.npz", "cifar10/cifar10_jpeg.npz"), "CIFAR10")
    with np.load(path) as data:
        raw, offsets, labels = data["train_jpeg"].tobytes(), data["train_offsets"], data["y_train"]
    index = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(raw[offsets[i]:offsets[i + 1]])).convert("RGB"))
                       for i in index]).astype(np.float32) / 255
    images = (images - np.array(_MEAN, np.float32)) / np.array(_STD, np.float32)
    return (torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
            torch.from_numpy(labels[index].astype(np.int64)))


def weights_of(layers: Sequence[Layer]) -> int:
    """Weights of ``layers`` (convolution and dense; biases and batch norms not counted)."""
    return sum(l.G * l.K * l.C * l.FY * l.FX if l.kind == "conv" else l.K * l.C for l in layers)


class CoDesignEvaluator:
    """Measures a ``CoDesign`` (module docstring); a callable for ``sn.search``.

    Args:
      backbone: the network the designs transform (``sn.nn.backbone`` name).
      objective: ``"edp"``, ``"latency_ms"`` or ``"energy_uj"``: the metric copied into ``score``.
      area_budget: mm²; a design over it violates the budget (``None``: no limit). A budget below the smallest
        accelerator of ``space`` (when given) raises ``ValueError`` at once.
      legality: ``"per_layer"`` (default, as ``sn.proxies.LegalityCheck``: every transformed layer scores at least
        the original layer) or ``"network"`` (the sums), or ``None`` (no check).
      batch: ``(images, labels)`` for the proxy (``fisher_batch``); needed unless ``legality`` is ``None``.
      repair: with per-layer legality, a layer whose transformation is illegal keeps its original operator (its
        program steps stay) and the rest of the design is costed, as ``nas_pte``'s per-layer rejection does
        (metric ``reverted_layers``; ``repaired(design)`` gives that design). ``False``: the design violates.
      penalize: how a design that violates the area budget or legality ends. ``True`` (default): the trial
        completes with ``feasible=False``, its ``violation`` (relative area excess plus relative proxy
        deficit) and ``score = penalty x (1 + violation)``, ``penalty`` being a thousand times the original
        network's objective on ``reference`` (default ``edge_tpu_like()``): every algorithm then learns its way
        back to feasible designs (evolution keeps only completed trials in its population). ``False``: the
        trial is rejected (``sn.TrialRejected``) with the reason, as a Pareto search wants.
      cost_model: a ``sn.hw.CostModel`` (default: the fast mapping, EDP among mappings).
      train: optional ``train(network, learning_rate) -> accuracy`` run on feasible designs (metric ``accuracy``).
      exact_batch: ``(images, labels)`` for the whole-network legality check inside the search (per-layer legality
        with ``repair`` only). The cached per-layer scores judge each layer alone; the whole network can disagree
        (other transformed layers change the gradients a layer sees), so a winner found on them may lose layers
        in the final check and no longer fit the accelerator it was searched with. With ``exact_batch``, a feasible
        design whose score is within ``exact_margin`` (relative) of the best exactly-checked score so far gets its
        network checked as ``exact_repair`` does (up to ``exact_rounds`` rounds of reverting the failing layers),
        the verdict cached per network; designs with a checked network are costed as repaired (metrics
        ``exact_checked``, ``exact_reverted``), and one whose network stays illegal violates (or is rejected).
        The search then climbs on designs that pass the final check. ``None`` (default): no check in the loop.
      proxy, seed, context: the legality check's proxy, seed and isolated-scoring context.

    Metrics of a feasible design: ``score`` (the objective; minimise it), ``log_score`` (its log10: for
    algorithms that learn from reward differences, such as ``Reinforce``, penalties and feasible designs then
    sit on one scale), ``edp`` (µJ·ms), ``latency_ms``,
    ``energy_uj``, ``area_mm2``, ``weights``, ``macs``, ``utilization``, ``<proxy>_candidate`` /
    ``<proxy>_original``, ``legal``, ``feasible``. An accelerator that cannot run a layer rejects the trial
    with ZigZag's reason (``sn.hw.HardwareError``).
    """

    def __init__(self, backbone: str = "resnet18", *, objective: str = "edp", area_budget: Optional[float] = None,
                 legality: Optional[str] = "per_layer", batch=None, repair: bool = True, penalize: bool = True,
                 reference: Optional[Accelerator] = None, cost_model: Optional[CostModel] = None,
                 train: Optional[Callable[[Any, Optional[float]], float]] = None, proxy: str = "fisher",
                 seed: int = 0, context: str = "block", num_classes: int = 10, space: Any = None,
                 exact_batch=None, exact_margin: float = 0.0, exact_rounds: int = 3):
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        if objective not in ("edp", "latency_ms", "energy_uj"):
            raise ValueError(f"objective must be 'edp', 'latency_ms' or 'energy_uj', got {objective!r}")
        if area_budget is not None and (isinstance(area_budget, bool) or not isinstance(area_budget, (int, float))
                                        or not area_budget > 0):
            raise ValueError(f"area_budget must be a positive number of mm², got {area_budget!r}")
        if legality not in (None, "network", "per_layer"):
            raise ValueError(f"legality must be 'network', 'per_layer' or None, got {legality!r}")
        if legality is not None and batch is None:
            raise ValueError("Fisher legality needs a batch: pass batch=sn.hw.fisher_batch(...) or legality=None")
        if space is not None and area_budget is not None:
            smallest = smallest_area_mm2(space.accelerator if isinstance(space, CoDesign) else space)
            if smallest > area_budget:
                raise ValueError(f"no accelerator of the space meets the area budget: the smallest has "
                                 f"{smallest:.3f} mm², the budget is {area_budget:.3f} mm²")
        if exact_batch is not None and (legality != "per_layer" or not repair):
            raise ValueError("exact_batch (the whole-network check in the loop) needs legality='per_layer' with repair")
        if isinstance(exact_margin, bool) or not isinstance(exact_margin, (int, float)) or not exact_margin >= 0:
            raise ValueError(f"exact_margin must be a non-negative number, got {exact_margin!r}")
        self.exact_batch, self.exact_margin, self.exact_rounds = exact_batch, float(exact_margin), exact_rounds
        self._exact_cache: Dict[str, Tuple[frozenset, bool]] = {}   # network key -> (paths it reverts, legal)
        self._best_exact = math.inf
        self.backbone, self.objective, self.area_budget = backbone, objective, area_budget
        self.legality_mode, self.penalize = legality, penalize
        self.repair = repair and legality == "per_layer"
        self.cost_model = cost_model or CostModel()
        self.train = train
        self.original = snn.backbone(backbone, num_classes)
        self.base_layers = network_layers(self.original)
        sites = snn.transformable_convs(self.original)
        self.sites = {s.path: s for s in sites}
        self._ops = {s.path: s.operator() for s in sites}
        self._layers_cache: Dict[Tuple[str, str], List[Layer]] = {}
        self.scorer = None
        self._original_scores = None
        self.setup_seconds = 0.0
        if legality is not None:
            from symnas.proxies import LegalityCheck  # pylint: disable=import-outside-toplevel
            start = time.perf_counter()
            self.legality = LegalityCheck(proxy=proxy, mode=legality, seed=seed)
            inputs, targets = batch
            self.scorer = self.legality.isolated_scorer(self.original, inputs, targets, context=context)
            self.setup_seconds = time.perf_counter() - start
        self.original_weights = weights_of(self.base_layers)
        reference_cost = self.cost_model.network_cost(self.base_layers, reference or edge_tpu_like())
        self.penalty = 1e3 * reference_cost.as_metrics()[objective]

    # ---- parts --------------------------------------------------------------------------------
    def layers(self, network, reverted: Sequence[str] = ()) -> List[Layer]:
        """The layers of the transformed network (original ones where a layer has no steps; the layers at the
        paths in ``reverted`` keep their program steps but not their neural ones)."""
        replaced: Dict[str, List[Layer]] = {}
        for t in network.layers:
            neural = [] if t.path in reverted else list(t.neural)
            if not neural and not t.program:
                continue
            site = self.sites.get(t.path)
            if site is None:
                raise ValueError(f"{t.path!r} is not a transformable layer of {self.backbone}")
            key = (t.path, pg.format(neural, compact=True) + pg.format(list(t.program), compact=True))
            if key not in self._layers_cache:
                schedule = _schedule(self._ops[t.path], neural + list(t.program))
                self._layers_cache[key] = schedule_layers(schedule, site.torch_name)
            replaced[site.torch_name] = self._layers_cache[key]
        layers: List[Layer] = []
        for layer in self.base_layers:
            layers.extend(replaced.get(layer.name, [layer]))
        return layers

    def legality_check(self, network):
        """The proxy's verdict from cached per-layer scores (``IsolatedLayerScorer.check``)."""
        replacements = {t.path: t.schedule(self._ops[t.path]) for t in network.layers if t.neural}
        return self.scorer.check(replacements)

    def illegal_layers(self, network) -> List[str]:
        """Paths of the transformed layers whose own score falls below the original layer's (or is not finite):
        the per-layer rule, each layer scored once per option and cached."""
        from symnas.proxies import NonFiniteScore  # pylint: disable=import-outside-toplevel
        illegal = []
        for t in network.layers:
            if not t.neural:
                continue
            original = self.scorer.original_scores[self.sites[t.path].torch_name]
            try:
                if not self.scorer.score(t.path, t.schedule(self._ops[t.path])) >= original:
                    illegal.append(t.path)
            except NonFiniteScore:
                illegal.append(t.path)
        return illegal

    def repaired(self, design: CoDesign) -> CoDesign:
        """``design`` with its illegal layer transformations reverted (per-layer legality with ``repair``), as the
        evaluator costed it; unchanged otherwise."""
        if self.scorer is None or not self.repair:
            return design
        illegal = set(self.illegal_layers(design.network))
        design = _reverted(design, illegal) if illegal else design
        checked = self._exact_cache.get(_network_key(design.network)) if self.exact_batch is not None else None
        return _reverted(design, checked[0]) if checked and checked[0] else design

    def constraints(self, design: CoDesign) -> Tuple[Dict[str, Any], float, List[str], List[str]]:
        """(metrics, violation, reasons, reverted paths) of the area budget and the legality check;
        violation 0 = feasible. With ``repair`` (per-layer legality), illegal layers are reverted, not violated."""
        area = area_mm2(design.accelerator)
        metrics: Dict[str, Any] = {"area_mm2": area}
        violation, reasons, reverted = 0.0, [], []
        if self.area_budget is not None and area > self.area_budget:
            violation += area / self.area_budget - 1
            reasons.append(f"area {area:.3f} mm² exceeds the budget of {self.area_budget:.3f} mm²")
        if self.scorer is not None and self.repair:
            reverted = self.illegal_layers(design.network)
            kept = {t.path: t.schedule(self._ops[t.path]) for t in design.network.layers
                    if t.neural and t.path not in reverted}
            metrics.update(self.scorer.check(kept).as_metrics())
            metrics["reverted_layers"] = len(reverted)
        elif self.scorer is not None:
            result = self.legality_check(design.network)
            metrics.update(result.as_metrics())
            if not result.legal:
                violation += _deficit(result)
                reasons.append(f"illegal: {result.reason}")
        return metrics, violation, reasons, reverted

    # ---- evaluation ---------------------------------------------------------------------------
    def __call__(self, design: CoDesign) -> Dict[str, Any]:
        metrics, violation, reasons, reverted = self.constraints(design)
        if violation > 0:
            if not self.penalize:
                raise TrialRejected("; ".join(reasons), metrics)
            metrics.update(feasible=False, violation=violation, reason="; ".join(reasons),
                           score=self.penalty * (1 + violation))
            metrics["log_score"] = math.log10(metrics["score"])
            return metrics
        acc = design.accelerator
        layers = self.layers(design.network, reverted)
        cost = self.cost_model.network_cost(layers, acc)
        macs = sum(l.macs for l in layers)
        metrics.update(cost.as_metrics())
        metrics.update(weights=weights_of(layers), macs=macs,
                       utilization=macs / (acc.num_pes * max(cost.latency_cycles, 1.0)),
                       feasible=True, violation=0.0)
        for name in ("edp", "latency_ms", "energy_uj"):
            if not math.isfinite(metrics[name]):
                raise TrialRejected(f"{name} is {metrics[name]}", metrics)
        metrics["score"] = metrics[self.objective]
        metrics["log_score"] = math.log10(max(metrics["score"], 1e-30))
        if self.exact_batch is not None:
            metrics = self._exact_in_loop(design, reverted, metrics)
            if not metrics.get("feasible"):
                return metrics
        if self.train is not None:
            network = self.repaired(design).network if reverted else design.network
            metrics["accuracy"] = float(self.train(network.network(), design.learning_rate))
        return metrics

    def _exact_in_loop(self, design: CoDesign, reverted: Sequence[str], metrics: Dict[str, Any]) -> Dict[str, Any]:
        """``metrics`` after the whole-network check of the design's (per-layer repaired) network: cached per
        network; run when the design comes within ``exact_margin`` of the best checked score (``exact_batch``)."""
        repaired = _reverted(design, set(reverted)) if reverted else design
        if not any(t.neural for t in repaired.network.layers):     # the original network: legal
            metrics.update(exact_checked=False, exact_reverted=0)
            return metrics
        key = _network_key(repaired.network)
        if key not in self._exact_cache:
            if not metrics["score"] <= self._best_exact * (1 + self.exact_margin):
                metrics.update(exact_checked=False, exact_reverted=0)
                return metrics
            fixed, verdict, _ = self.exact_repair(repaired, self.exact_batch, self.exact_rounds)
            kept = {t.path for t in fixed.network.layers if t.neural}
            self._exact_cache[key] = (frozenset(t.path for t in repaired.network.layers if t.neural) - kept,
                                      bool(verdict.legal))
        extra, legal = self._exact_cache[key]
        metrics.update(exact_checked=True, exact_reverted=len(extra))
        if not legal:
            reason = "the network fails the whole-network legality check after repairs"
            if not self.penalize:
                raise TrialRejected(reason, metrics)
            metrics.update(feasible=False, violation=1.0, reason=reason, score=self.penalty * 2)
            metrics["log_score"] = math.log10(metrics["score"])
            return metrics
        if extra:
            layers = self.layers(design.network, list(reverted) + sorted(extra))
            cost = self.cost_model.network_cost(layers, design.accelerator)
            macs = sum(l.macs for l in layers)
            metrics.update(cost.as_metrics())
            metrics.update(weights=weights_of(layers), macs=macs, reverted_layers=len(reverted) + len(extra),
                           utilization=macs / (design.accelerator.num_pes * max(cost.latency_cycles, 1.0)))
            metrics["score"] = metrics[self.objective]
            metrics["log_score"] = math.log10(max(metrics["score"], 1e-30))
        self._best_exact = min(self._best_exact, metrics["score"])
        return metrics

    def exact_legality(self, design: CoDesign, batch):
        """The whole-network check (``LegalityCheck.check``), not the cached per-layer approximation."""
        if self.scorer is None:
            raise ValueError("this evaluator has no legality check")
        inputs, targets = batch
        if self._original_scores is None:
            self._original_scores = self.legality.layer_scores(self.original, inputs, targets)
        return self.legality.check(self.original, design.network.network(), inputs, targets,
                                   original_scores=self._original_scores)

    def exact_repair(self, design: CoDesign, batch, rounds: int = 3):
        """(design, verdict, rounds used): the whole-network check, and while it fails (per-layer mode) the
        failing layers reverted to their original operator and the check run again, up to ``rounds`` times.
        Isolated layer scores can disagree with the whole network's (other transformed layers change the
        gradients a layer sees), so a finalist may need this."""
        verdict = self.exact_legality(design, batch)
        used = 0
        while not verdict.legal and verdict.mode == "per_layer" and verdict.failing_layers and used < rounds:
            by_name = {site.torch_name: path for path, site in self.sites.items()}
            failing = {by_name[name] for name in verdict.failing_layers}
            design = _reverted(design, failing)
            verdict = self.exact_legality(design, batch)
            used += 1
        return design, verdict, used


def _reverted(design: CoDesign, paths) -> CoDesign:
    """``design`` with the layers at ``paths`` back to their original operator (program steps kept)."""
    from symnas.spaces.transformations import LayerTransformation  # pylint: disable=import-outside-toplevel
    network = design.network.clone(deep=True)
    for i, t in enumerate(network.layers):
        if t.path in paths:
            network.rebind({f"layers[{i}]": LayerTransformation(t.path, [], list(t.program))}, skip_notification=True)
    return CoDesign(network=network, accelerator=design.accelerator, learning_rate=design.learning_rate)


def _network_key(network) -> str:
    return pg.format(network, compact=True)


def _schedule(op, steps):
    from symnas.program import Schedule  # pylint: disable=import-outside-toplevel
    return Schedule(op, steps)


def _deficit(result) -> float:
    """How far an illegal result is below the original: the relative shortfall of the network's score, or of
    each failing layer's (summed) in per-layer mode; non-finite scores count as 1."""
    if not math.isfinite(result.candidate_score):
        return 1.0
    if result.mode == "network":
        return max(0.0, 1 - result.candidate_score / max(result.original_score, 1e-30))
    return sum(max(0.0, 1 - c / max(o, 1e-30)) for o, c in result.per_layer.values() if not c >= o) or 1.0
