"""Training as symbolic objects: Trainer, optimizers, LR schedules, augmentation, early stopping, paired runs."""
from symnas._deprecation import renamed_names
from symnas.train.augmentation import *  # noqa: F401,F403
from symnas.train.early_stopping import *  # noqa: F401,F403
from symnas.train.optimizers import *  # noqa: F401,F403
from symnas.train.paired import *  # noqa: F401,F403
from symnas.train.schedules import *  # noqa: F401,F403
from symnas.train.trainer import *  # noqa: F401,F403


# renamed LRSchedule / StepDecay (not sn.program's Schedule / Step); the old names still work, with a warning
__getattr__ = renamed_names(__name__, globals(), {"Schedule": "LRSchedule", "Step": "StepDecay"})
