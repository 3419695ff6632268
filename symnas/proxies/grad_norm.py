"""GradNorm (Abdelfattah et al. 2021): per layer L2 norm of the loss gradient at initialisation."""
from __future__ import annotations

from typing import Dict

from symnas.proxies.base import Proxy, loss_gradients


class GradNorm(Proxy):
    """Per layer ||dL/dw||_2 of its weights, summed over layers (train mode, cross-entropy).

    Example::

        import torch, symnas as sn
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        print(sn.proxies.GradNorm().score(net, torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])).total)
    """

    name = "grad_norm"

    def _score(self, model, inputs, targets, layers) -> Dict[str, float]:
        params = loss_gradients(model, inputs, targets, layers, self.name)
        return {n: float(sum(p.grad.norm() for p in ps if p.grad is not None)) for n, ps in params.items()}
