"""The candidate evaluator: a transformed network -> legality, latency and reward, before any compile.

Each layer transformation of a candidate is scored alone by a zero-cost proxy (Fisher Potential
by default) inside the original network, on one minibatch at initialisation, and cached per
(layer, option); its kernel's latency comes from the kernel table. A candidate is then judged:

- ``legality="per_layer"``: every transformed layer scores at least the original layer;
  ``rejection="layer"`` gives an illegal layer its original operator back and keeps the rest of the
  candidate, ``rejection="network"`` rejects the whole candidate;
- ``legality="network"``: the network's sum of layer scores is not below the original's.

The reward: ``objective="latency"`` makes the fastest legal network best; ``"fisher"`` /
``"params"`` the legal network of highest Fisher Potential / most conv weights within the latency
budget (the original's kernel sum / ``target_speedup``). An illegal candidate ranks below every
legal one, fewer failing layers above more, so an algorithm can learn its way to legality.

Example::

    evaluator = sn.pte.CandidateEvaluator(legality="network").bind(network, menu, x, y)
    metrics = evaluator(candidate)        # {"legal": ..., "latency_ms": ..., "reward": ...}
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import pyglove as pg


__all__ = ["CandidateEvaluator", "BoundEvaluator"]

LEGALITY = ("per_layer", "network")
REJECTION = ("layer", "network")
OBJECTIVES = ("latency", "fisher", "params")


class CandidateEvaluator(pg.Object):
    """How candidates are judged; ``bind(network, menu, x, y)`` gives the evaluator of one search.

    ``proxy``: the zero-cost proxy of ``sn.proxies`` that judges legality; ``context``: ``"block"``
    scores a layer inside its block with the original's gradient at the block's output (Fisher
    only, fast), ``"tail"`` runs the rest of the network (exact, any proxy). ``seed``: the weights'.
    """
    legality: str = "per_layer"
    rejection: str = "layer"
    objective: str = "latency"
    target_speedup: float = 3.0
    proxy: str = "fisher"
    context: str = "block"
    seed: int = 0

    def _on_bound(self):
        super()._on_bound()
        for name, allowed in (("legality", LEGALITY), ("rejection", REJECTION), ("objective", OBJECTIVES),
                              ("context", ("block", "tail"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"CandidateEvaluator: {name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if not self.target_speedup > 0:
            raise ValueError(f"CandidateEvaluator: target_speedup must be positive, got {self.target_speedup}.")
        if self.proxy != "fisher" and self.context == "block":
            raise ValueError(f"CandidateEvaluator: proxy {self.proxy!r} needs context='tail' (the block context "
                             "reuses output gradients and is defined for fisher).")
        from symnas.proxies import get  # pylint: disable=import-outside-toplevel
        get(self.proxy)   # an unknown proxy fails here, not in the middle of a search

    def legality_check(self, mode: str = None):
        """The exact (whole-network) check with this evaluator's proxy and seed."""
        from symnas.proxies import LegalityCheck  # pylint: disable=import-outside-toplevel
        return LegalityCheck(seed=self.seed, mode=mode or self.legality, proxy=self.proxy)

    def bind(self, network, menu, inputs, targets) -> "BoundEvaluator":
        """Scores the original once on ``inputs``/``targets`` and returns the candidate evaluator."""
        return BoundEvaluator(self, network, menu, inputs, targets)


class BoundEvaluator:
    """Evaluates the candidates of one search (``CandidateEvaluator.bind``); call it on a candidate."""

    def __init__(self, spec: CandidateEvaluator, network, menu, inputs, targets):
        self.spec, self.menu = spec, menu
        self.scorer = spec.legality_check().isolated_scorer(network, inputs, targets, context=spec.context)
        self.fisher_original = sum(self.scorer.original_scores.values())
        self.original_ms, self.fixed_ms = menu.original_ms, menu.fixed_ms
        # the search's budget: objectives other than latency look for the best network within it
        self.budget = self.original_ms / spec.target_speedup if spec.objective != "latency" else math.inf
        self._layer: Dict[Tuple[str, int], tuple] = {}     # (path, option) -> (legal, cand, orig, reason)
        self._weights: Dict[Tuple[Any, int], int] = {}     # (shape key, option) -> conv weights
        self.original_weights = sum(self.weights(s.key, 0) for s in menu.sites)
        self.counts = {"transformed": 0, "uncompilable": 0}

    # ------------------------------------------------------------------ per layer

    def layer(self, path: str, index: int) -> tuple:
        """``(legal, score, original score, reason)`` of option ``index`` at layer ``path`` (cached)."""
        if (path, index) not in self._layer:
            from symnas import program as P  # pylint: disable=import-outside-toplevel
            from symnas.proxies import NonFiniteScore  # pylint: disable=import-outside-toplevel
            site = self.menu.site[path]
            orig = self.scorer.original_scores[site.torch_name]
            try:
                cand = self.scorer.score(path, P.Schedule(site.operator(), list(self.menu.options[site.key][index].neural)))
                self._layer[(path, index)] = (cand >= orig, cand, orig, "")
            except NonFiniteScore as e:
                self._layer[(path, index)] = (False, float("nan"), orig, e.reason)
        return self._layer[(path, index)]

    def layer_legal(self, path: str, steps) -> bool:
        """Whether ``steps`` (any neural sequence, in the menu or not) is legal at ``path`` alone."""
        from symnas import program as P  # pylint: disable=import-outside-toplevel
        from symnas.proxies import NonFiniteScore  # pylint: disable=import-outside-toplevel
        site = self.menu.site[path]
        in_menu = self.menu.find(site.key, steps)
        if in_menu is not None:
            return self.layer(path, in_menu)[0]
        try:
            return self.scorer.score(path, P.Schedule(site.operator(), list(steps))) >= \
                self.scorer.original_scores[site.torch_name]
        except NonFiniteScore:
            return False

    def weights(self, key, index: int) -> int:
        if (key, index) not in self._weights:
            from symnas import program as P  # pylint: disable=import-outside-toplevel
            self._weights[(key, index)] = P.Schedule(self.menu.ops[key], list(self.menu.options[key][index].neural)).params
        return self._weights[(key, index)]

    @property
    def scored(self) -> Dict[Tuple[str, int], tuple]:
        """Every (layer, option) scored so far -> (legal, score, original score, reason)."""
        return dict(self._layer)

    # ------------------------------------------------------------------ per candidate

    def reward(self, latency: float, fisher: float, weights: int) -> float:
        """The reward of a legal network: -latency, or within the budget the ratio of its Fisher
        Potential / conv weights to the original's (> 0; over the budget, faster above slower)."""
        if self.spec.objective == "latency" or latency > self.budget:
            return -latency
        return fisher / self.fisher_original if self.spec.objective == "fisher" else weights / self.original_weights

    def __call__(self, candidate) -> Dict[str, Any]:
        self.counts["transformed"] += sum(1 for l in candidate.layers if l.neural)
        state = {"latency": self.fixed_ms, "fisher": self.fisher_original, "weights": self.original_weights,
                 "failing": [], "illegal": []}
        for layer in candidate.layers:
            self._add_layer(layer, state)
        if self.spec.legality == "network":
            state["failing"] = [] if state["fisher"] >= self.fisher_original else ["network"] * max(1, len(state["failing"]))
        elif self.spec.rejection == "layer" and state["failing"]:
            return self._layers_rejected(state)
        return self._metrics(state)

    def _add_layer(self, layer, state: dict) -> None:
        menu = self.menu
        key = menu.key[layer.path]
        index = menu.index(key, layer.neural)
        layer_ms = menu.table.measure(menu.ops[key], layer.neural, layer.program)
        if not math.isfinite(layer_ms):
            # this template does not compile for this neural sequence: like an illegal layer
            # transformation, the layer keeps its original operator (best compiled kernel)
            self.counts["uncompilable"] += 1
            state["latency"] += menu.options[key][0].latency_ms
            return
        state["latency"] += layer_ms
        if index:
            ok, cand, orig, _ = self.layer(layer.path, index)
            state["fisher"] += cand - orig
            state["weights"] += self.weights(key, index) - self.weights(key, 0)
            if not ok:
                state["failing"].append(menu.site[layer.path].torch_name)
                state["illegal"].append((key, layer_ms, cand - orig, index))

    def _layers_rejected(self, state: dict) -> Dict[str, Any]:
        # each illegal layer transformation is rejected on its own: that layer keeps the original
        # operator (its best compiled kernel) and the rest of the candidate goes on
        latency, fisher, weights = state["latency"], state["fisher"], state["weights"]
        for key, layer_ms, gain, index in state["illegal"]:
            latency += self.menu.options[key][0].latency_ms - layer_ms
            fisher -= gain
            weights -= self.weights(key, index) - self.weights(key, 0)
        failing = state["failing"]
        return {"fisher_original": self.fisher_original, "fisher_candidate": fisher, "legal": True,
                "network_rejected": True, "rejected_layers": len(failing),
                "reward": self.reward(latency, fisher, weights), "conv_weights": weights, "latency_ms": latency,
                "reason": f"{len(failing)} illegal layer transformations rejected (kept the original layer), "
                          f"first {failing[0]}"}

    def _metrics(self, state: dict) -> Dict[str, Any]:
        failing, latency, fisher = state["failing"], state["latency"], state["fisher"]
        metrics = {"fisher_original": self.fisher_original, "fisher_candidate": fisher,
                   "legal": not failing, "network_rejected": bool(failing), "rejected_layers": len(failing)}
        if failing:
            # rejected before compilation; ranked below every legal network, fewer failing layers above more
            proxy = self.spec.proxy
            metrics.update(reward=-(self.original_ms * (1 + len(failing)) + latency), latency_ms=None,
                           reason=(f"{proxy} below the original in {len(failing)} layers (first {failing[0]})"
                                   if self.spec.legality == "per_layer" else
                                   f"network {proxy} {fisher:.4g} < original {self.fisher_original:.4g}"))
        else:
            metrics.update(reward=self.reward(latency, fisher, state["weights"]), latency_ms=latency,
                           conv_weights=state["weights"], reason="legal")
        return metrics

    def choice(self, candidate) -> Dict[str, Tuple[list, list]]:
        """The network a candidate stands for, path -> (neural, program): under per-layer rejection
        an illegal layer has its original operator."""
        out = {}
        spec = self.spec
        for layer in candidate.layers:
            index = self.menu.index(self.menu.key[layer.path], layer.neural)
            if (spec.legality == "per_layer" and spec.rejection == "layer" and index
                    and not self.layer(layer.path, index)[0]):
                out[layer.path] = self.menu.original_choice(layer.path)
            else:
                out[layer.path] = (list(layer.neural), list(layer.program))
        return out

    def release(self) -> None:
        """Frees the scorer's activations (cached scores stay readable)."""
        self.scorer.release()
