"""Synflow (Tanaka et al. 2020): data-free synaptic flow through the network with |weights|."""
from __future__ import annotations

from typing import Dict

import torch

from symnas.proxies.base import Proxy, check_finite_grads, run_forward, training_copy, weight_layers


class Synflow(Proxy):
    """Per layer sum |w * dR/dw| with R = sum of the outputs of the all-|w| network on an all-ones input.

    Runs on a float64 copy in eval mode (BN uses its running statistics, as
    in the zero-cost-proxies reference), so the caller's model is untouched;
    only the input's shape is taken from ``inputs`` and no targets are needed.

    Example::

        import torch, symnas as sn
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        print(sn.proxies.Synflow().score(net, torch.randn(4, 3, 2, 2)).total)
    """

    name = "synflow"

    def _score(self, model, inputs, targets, layers) -> Dict[str, float]:
        net = training_copy(model).double().eval()
        with torch.no_grad():
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        params = weight_layers(net, layers if not isinstance(layers, dict) else list(layers))
        net.zero_grad(set_to_none=True)
        ones = torch.ones((1,) + tuple(inputs.shape[1:]), dtype=torch.float64)
        run_forward(net, ones).sum().backward()
        check_finite_grads(params, self.name)
        with torch.no_grad():
            return {n: float(sum((p * p.grad).abs().sum() for p in ps if p.grad is not None))
                    for n, ps in params.items()}
