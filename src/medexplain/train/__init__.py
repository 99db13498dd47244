"""Training: ``train(...)`` for any registered model, composable losses (sparsity), augmentation, resumable runs."""

from medexplain.train.augment import Augment
from medexplain.train.loop import MONITORS, OPTIMIZERS, train
from medexplain.train.losses import LOSSES, Objective, sparsity_penalty

__all__ = [
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "Augment",
    "Objective",
    "sparsity_penalty",
    "train",
]
