"""Hyperparameter search points for a ``sn.train.Trainer``: learning rate (log scale), weight
decay (log scale) and mixup.

Example::

    import symnas as sn
    trainer = sn.train.Trainer(model=sn.nn.Conv(16, 3), data=sn.data.Digits(), epochs=2)
    space = sn.spaces.hyperparameter_space(trainer)     # lr, weight_decay, mixup searchable
    study = sn.search(space, algorithm=sn.algorithms.Random(seed=0), num_trials=10, storage=None)
"""
from typing import Any, Optional, Tuple

import pyglove as pg

__all__ = ["learning_rate", "weight_decay", "mixup_alpha", "hyperparameter_space"]


def learning_rate(low: float = 1e-4, high: float = 1e-1):
    """Learning rate on a log scale."""
    return pg.floatv(low, high, scale="log")


def weight_decay(low: float = 1e-6, high: float = 1e-2):
    """Weight decay on a log scale."""
    return pg.floatv(low, high, scale="log")


def mixup_alpha(choices: Tuple[float, ...] = (0.0, 0.2, 0.4)):
    """mixup's Beta(alpha, alpha) concentration; 0 turns mixup off."""
    return pg.oneof(list(choices))


def hyperparameter_space(trainer: Any, lr: Optional[Tuple[float, float]] = (1e-4, 1e-1),
                         decay: Optional[Tuple[float, float]] = (1e-6, 1e-2),
                         mixup: Optional[Tuple[float, ...]] = (0.0, 0.2, 0.4)):
    """A copy of ``trainer`` whose learning rate, weight decay and mixup are search points.

    Pass ``None`` for one of them to keep the trainer's value. Mixup is appended to the
    trainer's augmentation list (replacing a Mixup already there).
    """
    from symnas.train import Mixup, Trainer  # pylint: disable=import-outside-toplevel
    if not isinstance(trainer, Trainer):
        raise TypeError(f"Expected a sn.train.Trainer, got {type(trainer).__name__}.")
    space = trainer.clone(deep=True)
    updates = {}
    if lr is not None:
        updates["optimizer.lr"] = learning_rate(*lr)
    if decay is not None:
        updates["weight_decay"] = weight_decay(*decay)
    if mixup is not None:
        kept = [a for a in space.augmentation if not isinstance(a, Mixup)]
        updates["augmentation"] = kept + [Mixup(mixup_alpha(tuple(mixup)))]
    return space.rebind(updates) if updates else space
