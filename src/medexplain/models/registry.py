"""The model registry: ``create_model(name, in_channels=..., num_classes=..., spatial_dims=...)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from medexplain.errors import MedexplainError
from medexplain.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, **metadata: Any):
    """Decorator adding a model factory to the registry. Metadata: ``interpretable`` (has ``evidence_map``)."""
    return MODELS.register(name, **metadata)


def create_model(
    name: str, *, in_channels: int = 3, num_classes: int = 2, spatial_dims: int = 2, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name`` for ``(B, in_channels, *spatial)`` inputs and ``num_classes`` logits."""
    factory = MODELS.get(name)
    if spatial_dims not in (1, 2, 3):
        raise MedexplainError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    if in_channels < 1 or num_classes < 1:
        raise MedexplainError(f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}")
    parameters = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(k for k in kwargs if k not in parameters)
    if unknown and not accepts_any:
        valid = ", ".join(k for k in parameters if k not in ("in_channels", "num_classes", "spatial_dims"))
        raise MedexplainError(f"model {name!r} has no argument {unknown[0]!r}; its arguments: {valid or 'none'}")
    return factory(in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims, **kwargs)


def available() -> list[str]:
    """Names of the registered models."""
    return MODELS.available()
