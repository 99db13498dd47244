"""The metric registry: pure, batched functions returning per-sample scores ``(B,)``, with metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from medexplain.registry import Registry

CATEGORIES = ("localisation", "faithfulness", "robustness", "complexity", "sanity", "classification")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and needs.

    Attributes:
        category: one of :data:`CATEGORIES`.
        higher_is_better: direction of the score.
        needs_mask: takes a ground-truth mask ``(B, *spatial)``.
        needs_model: runs the model (faithfulness, robustness, sanity).
    """

    category: str
    higher_is_better: bool
    needs_mask: bool = False
    needs_model: bool = False


METRICS: Registry[Callable[..., Tensor]] = Registry("metric")


def register_metric(
    name: str, *, category: str, higher_is_better: bool, needs_mask: bool = False, needs_model: bool = False
):
    """Decorator adding a metric function to the registry with its :class:`MetricInfo`."""
    if category not in CATEGORIES:
        raise ValueError(f"metric {name!r}: category must be one of {CATEGORIES}, got {category!r}")
    info = MetricInfo(category, higher_is_better, needs_mask, needs_model)
    return METRICS.register(name, info=info)


def get_metric(name: str) -> Callable[..., Tensor]:
    """The metric function registered as ``name``."""
    return METRICS.get(name)


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of metric ``name``."""
    return METRICS.entry(name).metadata["info"]


def available(category: str | None = None) -> list[str]:
    """Names of the registered metrics, optionally of one category."""
    return [e.name for e in METRICS if category is None or e.metadata["info"].category == category]
