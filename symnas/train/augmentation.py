"""Batch augmentations on tensors (no per-image Python loop): random crop (zero or reflection padded), flip, mixup.

Each takes a seeded ``torch.Generator`` so training stays deterministic for a fixed seed.

Example::

    sn.train.Trainer(..., augmentation=[sn.train.RandomCrop(4, padding_mode="reflect"), sn.train.HorizontalFlip(),
                                        sn.train.Mixup(pg.floatv(0.0, 0.4))])
"""
from __future__ import annotations

import numpy as np
import pyglove as pg
import torch
import torch.nn.functional as F

__all__ = ["Augmentation", "RandomCrop", "HorizontalFlip", "Mixup"]


class Augmentation(pg.Object):
    """Base: ``apply(x, generator) -> x`` on a batch; label-mixing ones override ``mix``."""
    mixes_labels = False

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x


class RandomCrop(Augmentation):
    """Pads by ``padding`` pixels and crops back at a random offset per image.

    ``padding_mode``: ``"constant"`` (zeros) or ``"reflect"`` (mirrors the border, no black frame).
    """
    padding: int = 4
    padding_mode: str = "constant"

    def _on_bound(self):
        super()._on_bound()
        if self.padding_mode not in ("constant", "reflect"):
            raise ValueError(f"RandomCrop: padding_mode must be 'constant' or 'reflect', got {self.padding_mode!r}.")

    def apply(self, x, generator):
        if self.padding < 0:
            raise ValueError(f"RandomCrop: padding must be >= 0, got {self.padding}.")
        if self.padding == 0:
            return x
        n, c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p), mode=self.padding_mode)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])      # (n, h)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])      # (n, w)
        idx_n = torch.arange(n, device=x.device)[:, None, None, None]
        idx_c = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


class HorizontalFlip(Augmentation):
    """Mirrors each image left-right with probability ``p``."""
    p: float = 0.5

    def apply(self, x, generator):
        flip = (torch.rand(x.shape[0], generator=generator) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class Mixup(Augmentation):
    """mixup (Zhang et al. 2018): convex combination of image pairs and of their losses.

    ``alpha`` is the Beta(alpha, alpha) concentration; 0 turns it off.
    """
    alpha: float = 0.2
    mixes_labels = True

    def mix(self, x, y, generator):
        """Returns ``(mixed_x, y, y_permuted, lam)``; the loss is lam*CE(y) + (1-lam)*CE(y_perm)."""
        if self.alpha < 0:
            raise ValueError(f"Mixup: alpha must be >= 0, got {self.alpha}.")
        if self.alpha == 0:
            return x, y, y, 1.0
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
        lam = float(np.random.default_rng(seed).beta(self.alpha, self.alpha))
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam
