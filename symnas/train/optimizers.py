"""Optimizers as symbolic objects: hyperparameters (searchable) in, ``torch.optim`` out.

Example::

    import pyglove as pg, symnas as sn
    opt = pg.oneof([sn.train.Adam(2e-2), sn.train.RMSProp(pg.floatv(1e-6, 1e-3))])
    torch_opt = sn.train.SGD(0.1, momentum=0.9).build(model.parameters(), weight_decay=5e-4)
"""
from __future__ import annotations

from typing import Iterable, Tuple

import pyglove as pg
import torch

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp"]


class Optimizer(pg.Object):
    """Base: ``lr`` is the peak learning rate; ``build(params, weight_decay)`` -> torch optimizer."""
    lr: float = 1e-3

    def _on_bound(self):
        super()._on_bound()
        # Search points (pg.floatv, ...) are checked once they are materialised.
        if isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool):
            if not self.lr > 0:
                raise ValueError(
                    f"{type(self).__name__}: the learning rate must be positive, got lr={self.lr}.")

    def build(self, params: Iterable[torch.nn.Parameter], weight_decay: float = 0.0):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        return self._build(list(params), weight_decay)

    def _build(self, params, weight_decay: float):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with (Nesterov) momentum."""
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False

    def _build(self, params, weight_decay):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               nesterov=self.nesterov and self.momentum > 0,
                               weight_decay=weight_decay)


class Adam(Optimizer):
    """Adam; weight decay is added to the gradient (L2), as in torch.optim.Adam."""
    lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def _build(self, params, weight_decay):
        return torch.optim.Adam(params, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                weight_decay=weight_decay)


class AdamW(Optimizer):
    """AdamW (decoupled weight decay); the Trainer's ``weight_decay`` is the decay used."""
    lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def _build(self, params, weight_decay):
        return torch.optim.AdamW(params, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                 weight_decay=weight_decay)


class RMSProp(Optimizer):
    """RMSProp."""
    lr: float = 1e-2
    alpha: float = 0.99
    momentum: float = 0.0
    eps: float = 1e-8

    def _build(self, params, weight_decay):
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha, momentum=self.momentum,
                                   eps=self.eps, weight_decay=weight_decay)
