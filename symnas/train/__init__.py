"""Training as symbolic objects: Trainer, optimizers, LR schedules, augmentation, early stopping, paired runs."""
from symnas.train.augmentation import *  # noqa: F401,F403
from symnas.train.early_stopping import *  # noqa: F401,F403
from symnas.train.optimizers import *  # noqa: F401,F403
from symnas.train.paired import *  # noqa: F401,F403
from symnas.train.schedules import *  # noqa: F401,F403
from symnas.train.trainer import *  # noqa: F401,F403


def __getattr__(name):
    if name in ("Schedule", "Step"):   # renamed LRSchedule / StepDecay (not sn.program's Schedule / Step)
        from symnas.train import schedules  # pylint: disable=import-outside-toplevel
        return getattr(schedules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
