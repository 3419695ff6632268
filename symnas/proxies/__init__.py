"""Zero-cost proxies: score a network at initialisation on one batch, per layer and in total.

``get(name)`` swaps the measure with one argument (seed 001 §5.2)::

    import torch, symnas as sn
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(64, 10))
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
    for name in sn.proxies.available():
        print(name, sn.proxies.get(name, seed=0).score(net, x, y).total)
"""
from typing import Dict, List, Type

from symnas.proxies.base import NonFiniteScore, Proxy, ProxyError, ProxyScore
from symnas.proxies.fisher import FisherHooks, FisherPotential
from symnas.proxies.grad_norm import GradNorm
from symnas.proxies.legality import IsolatedLayerScorer, LegalityCheck, LegalityResult, seeded_build
from symnas.proxies.naswot import NASWOT
from symnas.proxies.snip import SNIP
from symnas.proxies.synflow import Synflow

_REGISTRY: Dict[str, Type[Proxy]] = {
    "fisher": FisherPotential,
    "snip": SNIP,
    "synflow": Synflow,
    "naswot": NASWOT,
    "grad_norm": GradNorm,
}
_ALIASES = {"fisher_potential": "fisher", "gradnorm": "grad_norm"}


def available() -> List[str]:
    """Names accepted by ``get``."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> Proxy:
    """The proxy called ``name`` (case-insensitive; e.g. 'fisher', 'snip'), constructed with ``kwargs``."""
    if isinstance(name, Proxy):
        return name
    key = str(name).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown proxy {name!r}; available: {', '.join(available())}")
    return _REGISTRY[key](**kwargs)


__all__ = ["Proxy", "ProxyScore", "ProxyError", "NonFiniteScore", "FisherPotential", "FisherHooks", "SNIP",
           "Synflow", "NASWOT", "GradNorm", "get", "available", "LegalityCheck", "LegalityResult",
           "IsolatedLayerScorer", "seeded_build"]
