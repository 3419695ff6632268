"""Legality of neural transformations by a zero-cost proxy (seed 001 §5.2, §7.4).

A transformed network is legal iff its Fisher Potential is not below the original's on
the same batch and seed: per layer (every transformed layer scores at least what the
original layer scored; the default, seed §7.4) or for the whole network. Illegal
candidates are rejected before any compilation or training; the result carries both
scores so a search records the rejection.

Weights are initialised per module from ``(seed, module name)``, so the original and a
candidate share the weights of every layer they have in common: the scores differ only
through the transformed layers.

Example::

    import torch, symnas as sn
    net = sn.nn.resnet18()
    site = sn.nn.transformable_convs(net)[0]
    candidate = sn.nn.replace_convs(net, {site.path: sn.nn.Conv(64, 3, groups=2)})
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    result = sn.proxies.LegalityCheck().check(net, candidate, x, y)
    print(result.legal, result.reason, result.as_metrics())
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Tuple

import pyglove as pg
import torch
from torch import nn

from symnas.nn.init import init_by_name, layer_seed
from symnas.proxies import base
from symnas.proxies.base import NonFiniteScore, ProxyError

MODES = ("per_layer", "network")


@dataclasses.dataclass(frozen=True)
class LegalityResult:
    """Outcome of a legality check; ``as_metrics()`` is what a search records."""
    legal: bool
    reason: str
    proxy: str
    mode: str
    original_score: float
    candidate_score: float
    per_layer: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=dict)  # name -> (orig, cand)

    @property
    def failing_layers(self) -> List[str]:
        return [n for n, (o, c) in self.per_layer.items() if not c >= o]

    def as_metrics(self) -> Dict[str, Any]:
        return {f"{self.proxy}_original": self.original_score, f"{self.proxy}_candidate": self.candidate_score,
                "legal": self.legal, "reason": self.reason, "legality_mode": self.mode}


def build_module(layer, in_shape, seed: int, name: str) -> nn.Module:
    """Builds one layer with weights that depend only on ``(seed, name)`` (as ``sn.nn.init_by_name``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed(seed, name))
        return layer.build(in_shape)


def seeded_build(net, in_shape=(3, 32, 32), seed: int = 0) -> nn.Module:
    """``net.build(in_shape)`` with each layer initialised from ``(seed, its name)`` (``sn.nn.init_by_name``).

    Two networks that differ in some layers then have identical weights in all others.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = net.build(in_shape)
    return init_by_name(model, seed)


class LegalityCheck(pg.Object):
    """Rejects transformed networks whose proxy score falls below the original's.

    ``mode='per_layer'`` (default) compares each transformed layer with the same
    layer of the original; ``mode='network'`` compares the sums over all
    transformable layers. ``proxy`` is any name of ``sn.proxies.get``.
    """
    proxy: str = "fisher"
    mode: str = "per_layer"
    seed: int = 0
    in_shape: Tuple[int, int, int] = (3, 32, 32)

    def _on_bound(self):
        super()._on_bound()
        if self.mode not in MODES:
            raise ValueError(f"unknown legality mode {self.mode!r}; use one of {MODES}")
        from symnas.proxies import get  # pylint: disable=import-outside-toplevel
        get(self.proxy)  # an unknown proxy name fails here, not in the middle of a search

    def _proxy(self):
        from symnas.proxies import get  # pylint: disable=import-outside-toplevel
        return get(self.proxy, seed=self.seed)

    def layer_scores(self, net, inputs: torch.Tensor, targets: torch.Tensor) -> Dict[str, float]:
        """Proxy score of each transformable layer of ``net`` (torch module name -> score)."""
        from symnas.nn.backbones import transformable_convs  # pylint: disable=import-outside-toplevel
        sites = transformable_convs(net, self.in_shape)
        model = seeded_build(net, self.in_shape, self.seed)
        return self._proxy().score(model, inputs, targets, layers=[s.torch_name for s in sites]).per_layer

    def check(self, original, candidate, inputs: torch.Tensor, targets: torch.Tensor,
              original_scores: Optional[Dict[str, float]] = None) -> LegalityResult:
        """Scores both networks on the same batch and seed (``original_scores`` may be reused)."""
        if original_scores is None:
            original_scores = self.layer_scores(original, inputs, targets)
        try:
            cand_scores = self.layer_scores(candidate, inputs, targets)
        except NonFiniteScore as e:
            return LegalityResult(False, f"non-finite: {e.reason}", self.proxy, self.mode,
                                  sum(original_scores.values()), float("nan"))
        changed = _changed_sites(original, candidate, self.in_shape)
        return decide(self.proxy, self.mode, original_scores, cand_scores, changed)

    def isolated_scorer(self, original, inputs: torch.Tensor, targets: torch.Tensor,
                        context: str = "block") -> "IsolatedLayerScorer":
        """A cached scorer of single-layer replacements, for searches over many candidates."""
        return IsolatedLayerScorer(self, original, inputs, targets, context)


def _changed_sites(original, candidate, in_shape) -> List[str]:
    from symnas.nn.backbones import transformable_convs  # pylint: disable=import-outside-toplevel
    before = {s.torch_name: s.layer for s in transformable_convs(original, in_shape)}
    after = {s.torch_name: s.layer for s in transformable_convs(candidate, in_shape)}
    if set(before) != set(after):
        raise ValueError("the candidate's transformable layers are not those of the original network "
                         f"({len(after)} vs {len(before)})")
    return [n for n in before if not pg.eq(before[n], after[n])]


def decide(proxy: str, mode: str, original: Dict[str, float], candidate: Dict[str, float],
           changed: List[str]) -> LegalityResult:
    """The legality rule, given per-layer scores of the original and the candidate."""
    orig_total, cand_total = sum(original.values()), sum(candidate.values())
    per_layer = {n: (original[n], candidate[n]) for n in changed}
    if mode == "network":
        legal = cand_total >= orig_total
        reason = ("legal" if legal else
                  f"{proxy} of the network {cand_total:.4g} < original {orig_total:.4g}")
    else:
        failing = [n for n, (o, c) in per_layer.items() if not c >= o]
        legal = not failing
        if legal:
            reason = "legal"
        else:
            worst = min(failing, key=lambda n: per_layer[n][1] / max(per_layer[n][0], 1e-30))
            reason = (f"{proxy} below the original in {len(failing)} of {len(changed)} transformed layers "
                      f"(e.g. {worst}: {per_layer[worst][1]:.4g} < {per_layer[worst][0]:.4g})")
    return LegalityResult(legal, reason, proxy, mode, orig_total, cand_total, per_layer)


class IsolatedLayerScorer:
    """Scores one replaced layer at a time in the context of the original network, with caching.

    ``context='tail'`` is exact: the replaced layer's score with the rest of the
    network unchanged; only the top-level blocks from the one holding the layer to
    the output run (block inputs are cached). ``context='block'`` (Fisher only) runs
    just the block holding the layer and back-propagates the original network's
    gradient at that block's output: exact within the block (its batch norms and
    shortcut included), first-order for the layers after it, and an order of
    magnitude cheaper. Scores are cached per ``(layer path, replacement)``; a
    candidate network is then judged from cached layer scores (``check``): per
    layer as ``LegalityCheck`` judges a single-layer change; in network mode as the
    original total plus the changes of the replaced layers (additive approximation).
    """

    def __init__(self, legality: LegalityCheck, original, inputs: torch.Tensor, targets: torch.Tensor,
                 context: str = "block"):
        from symnas.nn.backbones import transformable_convs  # pylint: disable=import-outside-toplevel
        from symnas.proxies.fisher import FisherHooks  # pylint: disable=import-outside-toplevel
        if context not in ("block", "tail"):
            raise ValueError(f"context must be 'block' or 'tail', got {context!r}")
        if context == "block" and legality.proxy != "fisher":
            raise ValueError("context='block' reuses output gradients and is defined for the fisher proxy; "
                             "use context='tail' for other proxies")
        self.legality, self.context = legality, context
        self.original = original
        self.inputs, self.targets = inputs, targets
        self.sites = {s.path: s for s in transformable_convs(original, legality.in_shape)}
        self.model = seeded_build(original, legality.in_shape, legality.seed)
        if not isinstance(self.model, nn.Sequential):
            raise TypeError("isolated scoring needs a network built as nn.Sequential (a sn.nn.Sequential)")
        names = [s.torch_name for s in self.sites.values()]
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        # One pass gives the original layer scores, every block's input and its output gradient.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(legality.seed)
            with FisherHooks({n: self.model.get_submodule(n) for n in names}) as hooks:
                x, self._block_inputs, outputs = inputs, [], []
                for block in self.model:
                    self._block_inputs.append(x.detach())
                    x = base.run_forward(block, x)
                    outputs.append(x)
                loss = nn.functional.cross_entropy(x, targets)
                if not torch.isfinite(loss):
                    raise NonFiniteScore("the original network's loss is not finite")
                hooks.backward(loss, also=outputs)      # no weight gradients
        self._block_grads = [o.grad for o in outputs]
        if legality.proxy == "fisher":
            self.original_scores = dict(hooks.scores)
        else:
            self.original_scores = legality._proxy().score(self.model, inputs, targets, layers=names).per_layer
        self.model.zero_grad(set_to_none=True)
        self._cache: Dict[Tuple[str, str], Any] = {}
        self._prefix_cache: Dict[Tuple[int, str], Any] = {}
        self.evaluations = 0
        self.seconds = 0.0        # spent scoring replacements (not counting cache hits)

    def release(self) -> None:
        """Frees the cached activations, gradients and model (11 GB for DenseNet-161 at batch 128);
        cached scores stay readable, and scoring anything new raises ``RuntimeError``."""
        self.model, self._block_inputs, self._block_grads = None, None, None
        self._prefix_cache.clear()

    def score(self, path: str, replacement) -> float:
        """Proxy score of the layer at ``path`` when it is replaced by ``replacement`` (a layer or Schedule).

        Raises ``NonFiniteScore`` when the replacement makes activations or gradients non-finite.
        """
        from symnas.nn.backbones import TransformedConv  # pylint: disable=import-outside-toplevel
        from symnas.nn.layers import Layer  # pylint: disable=import-outside-toplevel
        if path not in self.sites:
            raise KeyError(f"{path!r} is not a transformable layer of the network")
        if not isinstance(replacement, Layer):
            if not hasattr(replacement, "to_torch"):
                raise TypeError(f"a replacement is a sn.nn layer or a sn.program.Schedule, got "
                                f"{type(replacement).__name__}")
            replacement = TransformedConv(replacement)
        key = (path, pg.format(replacement, compact=True))
        if key in self._cache:
            cached = self._cache[key]
            if isinstance(cached, Exception):
                raise cached
            return cached
        if self.model is None:
            raise RuntimeError(f"this scorer was released: {path!r} with this replacement was never scored, "
                               "and scoring needs a new scorer")
        site = self.sites[path]
        name = site.torch_name
        top_name = name.split(".")[0]
        top = int(top_name)
        original_module = self.model.get_submodule(name)
        start = time.perf_counter()
        module = build_module(replacement, site.in_shape, self.legality.seed, name)
        self.model.set_submodule(name, module)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.legality.seed)
                result = self._score_replaced(top, name[len(top_name):])
        except NonFiniteScore as e:
            self._cache[key] = e
            raise
        finally:
            self.model.set_submodule(name, original_module)
            self.model.zero_grad(set_to_none=True)
            self.seconds += time.perf_counter() - start
        self.evaluations += 1
        self._cache[key] = result
        return result

    def _score_replaced(self, top: int, inner_name: str) -> float:
        from symnas.proxies.fisher import FisherHooks  # pylint: disable=import-outside-toplevel
        if self.context == "tail":
            tail = nn.Sequential(*list(self.model)[top:])
            name = "0" + inner_name
            return self.legality._proxy().score(tail, self._block_inputs[top], self.targets,
                                                layers=[name]).per_layer[name]
        block = self.model[top]
        block.train()
        layer = block.get_submodule(inner_name[1:]) if inner_name else block
        captured = []
        handle = layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            with FisherHooks({"layer": layer}) as hooks:
                out, grad = self._run_block_from(top, block, inner_name[1:])
                # one reduction instead of an elementwise check: any NaN/inf makes the sum non-finite
                if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():
                    raise NonFiniteScore(f"non-finite activations after the replaced layer {inner_name[1:]!r}")
                # only the gradient at the layer's output is needed: no weight gradients and no
                # backward through the layer itself or the layers before it (about half the work)
                targets = [o for o in captured if isinstance(o, torch.Tensor) and o.requires_grad]
                if targets:
                    torch.autograd.backward(out, grad, inputs=targets)
                captured.clear()
        finally:
            handle.remove()
        value = hooks.scores.get("layer")
        if value is None:
            raise ProxyError("the replaced layer took no part in its block's forward pass")
        if value != value or value in (float("inf"), float("-inf")):
            raise NonFiniteScore(f"fisher: non-finite score {value} in the replaced layer")
        return value

    def _run_block_from(self, top: int, block: nn.Module, inner: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """What the layer ``inner`` replaced reaches of the block's output, computed from that layer
        on, and the original network's gradient there.

        When the layer is a direct child of a residual body or of a concatenation branch
        (``body.3``, ``branches.0.5``), what does not depend on it (the layers before it,
        the shortcut, the other branches) is the original network's and is computed once
        per block and layer position; only the layers from the replaced one to the block's
        output run. In a concatenation only the branch's own channels depend on the layer:
        the branch's output is returned with its slice of the block's gradient (the
        concatenation's backward is that slice). Any other layout runs the whole block.
        """
        from symnas.nn.layers import _ConcatModule, _ResidualModule  # pylint: disable=import-outside-toplevel
        x, grad = self._block_inputs[top], self._block_grads[top]
        parts = inner.split(".")
        if isinstance(block, _ResidualModule) and len(parts) == 2 and parts[0] == "body":
            chain, index, branch = block.body, parts[1], None
        elif (isinstance(block, _ConcatModule) and len(parts) == 3 and parts[0] == "branches"
              and parts[1].isdigit()):
            chain, index, branch = block.branches[int(parts[1])], parts[2], int(parts[1])
        else:
            return base.run_forward(block, x), grad
        if not isinstance(chain, nn.Sequential) or not index.isdigit():
            return base.run_forward(block, x), grad
        index = int(index)
        key = (top, inner)
        if key not in self._prefix_cache:
            # the original layers before the replaced one, and the shortcut or the branch's place
            # among the concatenated channels, once
            with torch.no_grad():
                hidden = chain[:index](x) if index else x
                if branch is None:
                    beside = block.shortcut(x)
                else:
                    # the other branches' widths (none in a DenseNet layer); the replaced branch has the rest
                    widths = [b(x).shape[1] if j != branch else 0 for j, b in enumerate(block.branches)]
                    start = (x.shape[1] if block.include_input else 0) + sum(widths[:branch])
                    beside = (start, grad.shape[1] - start - sum(widths[branch + 1:]))
            self._prefix_cache[key] = (hidden, beside)
        hidden, beside = self._prefix_cache[key]
        y = base.run_forward(chain[index:], hidden)
        if branch is None:
            return block.post(y + beside), grad
        start, width = beside
        if y.shape[1] != width or y.shape[2:] != grad.shape[2:]:
            raise ProxyError(f"the replaced layer changes the shape of its branch's output to "
                             f"{tuple(y.shape[1:])} (the original's: {(width,) + tuple(grad.shape[2:])})")
        return y, grad[:, start:start + width]

    def check(self, replacements: Dict[str, Any]) -> LegalityResult:
        """Legality of the network with ``replacements`` (path -> layer or Schedule) from cached scores."""
        proxy, mode = self.legality.proxy, self.legality.mode
        original = {s.torch_name: self.original_scores[s.torch_name] for s in self.sites.values()}
        candidate = dict(original)
        changed = []
        for path, replacement in replacements.items():
            if path not in self.sites:
                raise KeyError(f"{path!r} is not a transformable layer of the network")
            name = self.sites[path].torch_name
            try:
                candidate[name] = self.score(path, replacement)
            except NonFiniteScore as e:
                return LegalityResult(False, f"non-finite: {e.reason} (layer {name})", proxy, mode,
                                      sum(original.values()), float("nan"))
            changed.append(name)
        return decide(proxy, mode, original, candidate, changed)
