"""NASWOT (Mellor et al. 2021): how distinct the ReLU activation patterns of a batch are at initialisation."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from symnas.proxies.base import NonFiniteScore, Proxy, ProxyError, run_forward, select_modules


class NASWOT(Proxy):
    """log|K_H| with K_H = sum over ReLU layers of c c^T + (1-c)(1-c)^T, c the binary codes of each example.

    ``per_layer`` holds each ReLU layer's own log-determinant (a diagnostic; the
    network score is the log-determinant of the summed kernel, not their sum).
    Needs ``nn.ReLU`` modules; no targets are needed.

    Example::

        import torch, symnas as sn
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU())
        print(sn.proxies.NASWOT().score(net, torch.randn(4, 3, 2, 2)).total)
    """

    name = "naswot"

    def _score(self, model, inputs, targets, layers) -> Tuple[Dict[str, float], float]:
        relus = select_modules(model, layers, (nn.ReLU,))
        if not relus:
            raise ProxyError("NASWOT: the model has no nn.ReLU module to read activation patterns from")
        n = len(inputs)
        kernels: Dict[str, torch.Tensor] = {}
        handles = []

        def make_hook(name):
            def hook(module, args):
                codes = (args[0].detach().flatten(1) > 0).double()
                k = codes @ codes.t() + (1.0 - codes) @ (1.0 - codes).t()
                kernels[name] = kernels.get(name, torch.zeros(n, n, dtype=torch.float64)) + k
            return hook

        for name, module in relus.items():
            handles.append(module.register_forward_pre_hook(make_hook(name)))
        try:
            with torch.no_grad():
                run_forward(model, inputs)
        finally:
            for h in handles:
                h.remove()
        sign, logdet = torch.linalg.slogdet(sum(kernels.values()))
        if sign <= 0 or not torch.isfinite(logdet):
            raise NonFiniteScore("naswot: the activation-pattern kernel is singular (identical codes)")
        per_layer = {name: float(torch.linalg.slogdet(k)[1]) for name, k in kernels.items()}
        return per_layer, float(logdet)
