"""Pruning candidate kernels before and during training (seed 003 §7), on symnas' own machinery.

- :class:`CanvasPruning`: Canvas's two training-time rules as one ``pg.tuning`` early-stopping
  policy (``sn.search(..., early_stopping=...)``, ``pg.sample(..., early_stopping_policy=...)``):
  a trial whose accuracy at an epoch falls below ``lambda(epoch) * best(epoch)``
  (``sn.train.AccuracyCurveStopping``, lambda = theta + (1 - theta) * epoch / max_step), or whose
  training loss at an epoch is above that epoch's milestone (``loss_milestones[epoch - 1]``; Canvas checks
  milestones inside the first epoch, ``sn.train.Trainer`` reports once per epoch, so the first
  milestone is checked at the first epoch's end), is stopped.
- :class:`ProxyFilter`: a zero-cost proxy (``sn.proxies``: snip, synflow, naswot, fisher,
  grad_norm) on one batch at initialisation; a kernel whose network scores below ``min_ratio``
  times the reference (the original network's score, or the best admitted so far) is rejected
  before any training, with both scores recorded.

Example::

    import symnas as sn
    policy = sn.kas.CanvasPruning(max_step=10, theta=0.5, loss_milestones=[2.2])
    screen = sn.kas.ProxyFilter(proxy="snip", min_ratio=0.5)
"""
from __future__ import annotations

import copy
from typing import List, Optional

import pyglove as pg
import torch

from symnas.kas.kernel import KernelRejected
from symnas.kas.torch_module import set_native
from symnas.train.early_stopping import AccuracyCurveStopping

__all__ = ["CanvasPruning", "ProxyFilter"]


class CanvasPruning(AccuracyCurveStopping):
    """Accuracy-curve pruning plus training-loss milestones: ``loss_milestones[i]`` is the largest
    training loss allowed at epoch ``i + 1`` (None: no limit)."""
    loss_milestones: List[Optional[float]] = []
    loss_metric: str = "train_loss"

    def should_stop_early(self, trial: pg.tuning.Trial) -> bool:
        if super().should_stop_early(trial):
            return True
        if not trial.measurements:
            return False
        latest = trial.measurements[-1]
        step = int(latest.step)
        limit = self.loss_milestones[step - 1] if 1 <= step <= len(self.loss_milestones) else None
        loss = (latest.metrics or {}).get(self.loss_metric)
        return limit is not None and loss is not None and float(loss) > limit


@pg.members([
    ("proxy", pg.typing.Str(default="snip"), "A sn.proxies name (snip, synflow, naswot, fisher, grad_norm)."),
    ("min_ratio", pg.typing.Float(min_value=0.0, default=0.5),
     "Reject a network scoring below this fraction of the reference."),
    ("reference", pg.typing.Float().noneable(),
     "The reference score (e.g. the original network's); None: the best score admitted so far."),
    ("seed", pg.typing.Int(default=0), "Seed of the proxy's randomness."),
])
class ProxyFilter(pg.Object):
    """Screens networks by a zero-cost proxy before they are trained."""

    def _on_bound(self):
        super()._on_bound()
        self._best: Optional[float] = None

    def score(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The proxy's total on a copy of ``model`` whose kernels run primitive by primitive (the same
        numbers as the native ops, but every weighted primitive is called as a module, so the proxy's
        hooks see it)."""
        from symnas import proxies  # pylint: disable=import-outside-toplevel
        generic = set_native(copy.deepcopy(model), False)
        return proxies.get(self.proxy, seed=self.seed).score(generic, inputs, targets).total

    def admit(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The network's score; raises KernelRejected (recorded as rejected) when it is too low."""
        value = self.score(model, inputs, targets)
        reference = self.reference if self.reference is not None else self._best
        if reference is not None and value < self.min_ratio * reference:
            raise KernelRejected(f"{self.proxy} score {value:.4g} is below {self.min_ratio:g} x the reference "
                                 f"{reference:.4g}", metrics={self.proxy: value, f"{self.proxy}_reference": reference})
        self._best = value if self._best is None else max(self._best, value)
        return value
