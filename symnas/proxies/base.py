"""The contract every zero-cost proxy follows: score an initialised torch model on one batch."""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Dict, Iterable, List, Optional, Sequence, Union

import pyglove as pg
import torch
from torch import nn


class ProxyError(ValueError):
    """A proxy could not produce a score (bad batch, no scorable layer)."""


class NonFiniteScore(ProxyError):
    """NaN or inf in the activations, gradients or scores; ``reason`` says where."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ProxyScore:
    """A network score and its per-layer parts (layer name -> score).

    ``total`` is the network score: the sum of ``per_layer`` for additive proxies
    (Fisher, SNIP, GradNorm, Synflow); NASWOT's total is its log-determinant.
    """
    name: str
    total: float
    per_layer: Dict[str, float]

    def as_metrics(self, prefix: Optional[str] = None) -> Dict[str, float]:
        return {prefix or self.name: self.total}


LayerSelection = Union[None, Sequence[str], Dict[str, nn.Module]]


class Proxy(pg.Object):
    """Base class: ``score(model, inputs, targets, layers=None) -> ProxyScore``.

    Subclasses implement ``_score``. The model is scored as given (its current
    weights); ``score`` seeds torch's RNG with ``seed`` around the call so the
    result depends only on the weights, the batch and the seed. ``layers`` names
    the modules (``model.named_modules()`` names) whose scores are reported;
    ``None`` means every module the proxy scores by default (convs, and linears
    for weight-based proxies).

    Example::

        import torch, symnas as sn
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
        x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
        print(sn.proxies.get("fisher").score(net, x, y).total)
    """

    name = "proxy"
    seed: int = 0

    def score(self, model: nn.Module, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None,
              layers: LayerSelection = None) -> ProxyScore:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}.score needs a torch nn.Module, got {type(model).__name__}")
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
            raise ProxyError(f"inputs must be a batched tensor (N, ...), got "
                             f"{getattr(inputs, 'shape', type(inputs).__name__)}")
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or len(targets) != len(inputs):
                raise ProxyError(f"targets must be a 1-D tensor of {len(inputs)} class indices, got "
                                 f"{getattr(targets, 'shape', type(targets).__name__)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            result = self._score(model, inputs, targets, layers)
        per_layer, total = result if isinstance(result, tuple) else (result, None)
        if not per_layer:
            raise ProxyError(f"{self.name}: the model has no layer this proxy scores")
        for layer, value in per_layer.items():
            if not math.isfinite(value):
                raise NonFiniteScore(f"{self.name}: non-finite score {value} in layer {layer!r}")
        total = sum(per_layer.values()) if total is None else total
        if not math.isfinite(total):
            raise NonFiniteScore(f"{self.name}: non-finite network score {total}")
        return ProxyScore(self.name, float(total), dict(per_layer))

    def _score(self, model, inputs, targets, layers):
        """Returns name -> layer score, or (name -> layer score, network score) when not additive."""
        raise NotImplementedError


def select_modules(model: nn.Module, layers: LayerSelection,
                   default_types: Iterable[type]) -> Dict[str, nn.Module]:
    """Resolves ``layers`` (None, names, or a name->module dict) to a name->module dict."""
    if isinstance(layers, dict):
        return dict(layers)
    named = dict(model.named_modules())
    if layers is None:
        types = tuple(default_types)
        return {n: m for n, m in named.items() if isinstance(m, types)}
    missing = [n for n in layers if n not in named]
    if missing:
        raise ProxyError(f"layers {missing} are not modules of the model "
                         f"(known: {sorted(n for n in named if n)[:8]}...)")
    return {n: named[n] for n in layers}


def run_forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Runs the model, turning a shape mismatch into a ProxyError that names the batch shape."""
    try:
        return model(inputs)
    except RuntimeError as e:
        raise ProxyError(f"the batch of shape {tuple(inputs.shape)} does not fit the model: {e}") from e


def classification_loss(model: nn.Module, inputs: torch.Tensor, targets: Optional[torch.Tensor]) -> torch.Tensor:
    if targets is None:
        raise ProxyError("this proxy needs class targets")
    logits = run_forward(model, inputs)
    if logits.dim() != 2 or logits.shape[0] != len(targets):
        raise ProxyError(f"the model must return logits of shape (N, classes); got {tuple(logits.shape)}")
    if int(targets.max()) >= logits.shape[1] or int(targets.min()) < 0:
        raise ProxyError(f"targets range [{int(targets.min())}, {int(targets.max())}] exceeds the "
                         f"{logits.shape[1]} classes of the model")
    return nn.functional.cross_entropy(logits, targets)


def conv_types() -> tuple:
    """2-D convolution module types scored by default: torch's and transformed kernels (``Schedule.to_torch``)."""
    from symnas.program.torch_module import TorchKernelModule  # pylint: disable=import-outside-toplevel
    return nn.Conv2d, TorchKernelModule


def weight_layers(model: nn.Module, layers: LayerSelection) -> Dict[str, List[torch.nn.Parameter]]:
    """name -> weight parameters (every parameter with more than one dimension) of the selected modules
    (convs, transformed convs and linears by default)."""
    modules = select_modules(model, layers, conv_types() + (nn.Conv1d, nn.Linear))
    result = {}
    for name, module in modules.items():
        # a transformed conv holds one weight per kernel part ("weights.0", ...); biases and batch-norm
        # scales are one-dimensional
        params = [p for p in module.parameters() if p.dim() > 1]
        if params:
            result[name] = params
    return result


def check_finite_grads(params_by_layer: Dict[str, List[torch.nn.Parameter]], proxy: str) -> None:
    for name, params in params_by_layer.items():
        for p in params:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise NonFiniteScore(f"{proxy}: non-finite gradient in layer {name!r}")


def loss_gradients(model: nn.Module, inputs: torch.Tensor, targets: Optional[torch.Tensor],
                   layers: LayerSelection, proxy: str) -> Dict[str, List[torch.nn.Parameter]]:
    """Weights of the selected layers with ``.grad`` = d(cross-entropy)/dw on the batch (train mode)."""
    params = weight_layers(model, layers)
    model.train()
    model.zero_grad(set_to_none=True)
    classification_loss(model, inputs, targets).backward()
    check_finite_grads(params, proxy)
    return params


def training_copy(model: nn.Module) -> nn.Module:
    """A copy to score, so the caller's module (weights, grads, BN statistics) is untouched."""
    return copy.deepcopy(model)
