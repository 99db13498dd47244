"""Plain ``nn.Module`` classifiers for 2D and 3D inputs; interpretable ones expose ``evidence_map``."""

from medexplain.models.registry import MODELS, available, create_model, register_model

__all__ = ["MODELS", "available", "create_model", "register_model"]
