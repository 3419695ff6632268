"""SNIP (Lee et al. 2019) as a network score: sum over weights of |w * dL/dw| at initialisation."""
from __future__ import annotations

from typing import Dict

import torch

from symnas.proxies.base import Proxy, loss_gradients


class SNIP(Proxy):
    """Connection sensitivity: per layer sum |w * dL/dw| over the layer's weights (train mode, cross-entropy).

    Example::

        import torch, symnas as sn
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        print(sn.proxies.SNIP().score(net, torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])).total)
    """

    name = "snip"

    def _score(self, model, inputs, targets, layers) -> Dict[str, float]:
        params = loss_gradients(model, inputs, targets, layers, self.name)
        with torch.no_grad():
            return {n: float(sum((p * p.grad).abs().sum() for p in ps if p.grad is not None))
                    for n, ps in params.items()}
