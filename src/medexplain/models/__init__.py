"""Plain ``nn.Module`` classifiers for 2D and 3D inputs; interpretable ones expose ``evidence_map``."""

from medexplain.models import zoo  # noqa: F401  (registers the models)
from medexplain.models.bagnet import BagNet
from medexplain.models.checkpoint import load_weights, save_weights
from medexplain.models.modes import evaluation_mode
from medexplain.models.randomise import parameter_layers, randomised_copy
from medexplain.models.registry import MODELS, available, create_model, register_model
from medexplain.models.resnet import ResNet18
from medexplain.models.run import load, load_run, read_config, run_dataset, save_run

__all__ = [
    "MODELS",
    "BagNet",
    "ResNet18",
    "available",
    "create_model",
    "evaluation_mode",
    "load",
    "load_run",
    "load_weights",
    "parameter_layers",
    "randomised_copy",
    "read_config",
    "register_model",
    "run_dataset",
    "save_run",
    "save_weights",
]
