"""Evaluation of explanations: localisation, faithfulness, robustness, complexity and sanity, 2D and 3D."""

from medexplain.metrics.registry import (
    CATEGORIES,
    METRICS,
    MetricInfo,
    available,
    get_metric,
    metric_info,
    register_metric,
)

__all__ = ["CATEGORIES", "METRICS", "MetricInfo", "available", "get_metric", "metric_info", "register_metric"]
