"""Training as symbolic objects: Trainer, optimizers, LR schedules, augmentation, early stopping, paired runs."""
from symnas.train.augmentation import *  # noqa: F401,F403
from symnas.train.early_stopping import *  # noqa: F401,F403
from symnas.train.optimizers import *  # noqa: F401,F403
from symnas.train.paired import *  # noqa: F401,F403
from symnas.train.schedules import *  # noqa: F401,F403
from symnas.train.trainer import *  # noqa: F401,F403
