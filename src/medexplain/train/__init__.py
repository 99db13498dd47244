"""Training: ``train(TrainConfig(...), data, out)`` for any registered model, composable losses (sparsity, SIBnet),
augmentation, resumable runs."""

from medexplain.train.augment import Augment
from medexplain.train.config import MONITORS, OPTIMIZERS, TrainConfig
from medexplain.train.loop import train
from medexplain.train.losses import LOSSES, Objective, sparsity_penalty

__all__ = [
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "Augment",
    "Objective",
    "TrainConfig",
    "sparsity_penalty",
    "train",
]
