"""Fisher Potential (Turner et al., BlockSwap; seed 001 eq. 4-5): legality measure of transformed layers."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from symnas.proxies.base import (LayerSelection, NonFiniteScore, Proxy, ProxyError, classification_loss,
                                 conv_types, select_modules)


class FisherHooks:
    """Hooks on the raw outputs of modules that accumulate each module's Fisher score.

    For a module output A (N, C, H, W) with gradient g = dL/dA, the channel score is
    Delta_c = 0.5 * mean_n (sum_ij A_ncij g_ncij)^2 and the layer score is sum_c Delta_c
    (BlockSwap's ``fisher`` hook). Use as a context manager around forward + backward;
    ``hooks.backward(loss)`` in place of ``loss.backward()`` computes only the gradients
    the scores need (no weight gradients: about a third less work).
    """

    def __init__(self, modules: Dict[str, nn.Module]):
        self.modules = modules
        self.scores: Dict[str, float] = {}
        self._handles = []
        self._outputs = []      # (name, output, its version) of this pass, for backward(); cleared on exit

    def __enter__(self) -> "FisherHooks":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        # the outputs hold their graphs, whose hooks hold this object: drop the references
        self._outputs = []

    def backward(self, loss: torch.Tensor, also: Sequence[torch.Tensor] = ()) -> None:
        """Back-propagates ``loss`` to the hooked outputs (and the tensors ``also``, whose ``.grad`` it
        sets) only: the gradients of the weights, and of what comes before the first hooked output, are
        not computed. The scores are those of ``loss.backward()``."""
        for name, output, version in self._outputs:
            if output._version != version:
                raise _modified_in_place(name)
        inputs = [output for _, output, _ in self._outputs] + [t for t in also if t.requires_grad]
        if not inputs:
            raise ProxyError("Fisher Potential: no hooked output takes part in the loss's graph")
        self._outputs = []      # this pass's outputs are spent; a next forward pass hooks its own
        torch.autograd.backward(loss, inputs=inputs)

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            # detach() shares the version counter, so the hook needs no reference to ``output``:
            # output -> hook -> output would be a reference cycle that keeps the whole autograd
            # graph (every saved activation) alive until the garbage collector happens to run.
            # ``_outputs`` (for backward()) holds it only until the context exits
            act = output.detach()
            version = act._version
            self._outputs.append((name, output, version))

            def on_grad(grad):
                if act._version != version:
                    raise _modified_in_place(name)
                g = act * grad
                per_sample_channel = g.flatten(2).sum(-1) if g.dim() > 2 else g
                delta = 0.5 * per_sample_channel.pow(2).mean(0)
                self.scores[name] = self.scores.get(name, 0.0) + float(delta.sum())

            output.register_hook(on_grad)
        return hook


def _modified_in_place(name: str) -> ProxyError:
    return ProxyError(f"the output of layer {name!r} was modified in place before the backward pass "
                      f"(use ReLU(inplace=False) after it)")


class FisherPotential(Proxy):
    """Fisher Potential: per layer sum over output channels of 0.5 * mean_n (sum_ij A * dL/dA)^2.

    The model runs in train mode on one batch with the mean cross-entropy loss
    (BlockSwap's reference). Scored layers default to every ``nn.Conv2d``; pass
    ``layers`` (module names) to hook the raw outputs of the transformable convs,
    which may be whole transformed-kernel modules. The network score is the sum
    over layers. The model's gradients and BN statistics are changed by the call;
    score a fresh copy when that matters.

    Example::

        import torch, symnas as sn
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(64, 10))
        s = sn.proxies.FisherPotential().score(net, torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,)))
        print(s.total, s.per_layer)   # {'0': ...}
    """

    name = "fisher"

    def _score(self, model, inputs, targets, layers: LayerSelection) -> Dict[str, float]:
        modules = select_modules(model, layers, conv_types())
        if not modules:
            raise ProxyError("Fisher Potential: the model has no transformable (conv) layer to score")
        was_training = model.training
        model.train()
        model.zero_grad(set_to_none=True)
        try:
            with FisherHooks(modules) as hooks:
                loss = classification_loss(model, inputs, targets)
                if not torch.isfinite(loss):
                    raise NonFiniteScore(f"fisher: non-finite loss {loss.item()}")
                hooks.backward(loss)
        finally:
            model.train(was_training)
        missing = [n for n in modules if n not in hooks.scores]
        if missing:
            raise ProxyError(f"Fisher Potential: layers {missing} took no part in the forward/backward pass")
        return {n: hooks.scores[n] for n in modules}
