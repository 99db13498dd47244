"""Evaluation of explanations: localisation, faithfulness, robustness, complexity and sanity, 2D and 3D.

Every registered metric is a pure, batched function returning per-sample scores ``(B,)`` on the inputs'
device. Conventions (shapes, empty masks, NaN) are in :mod:`medexplain.metrics._inputs`.
"""

from medexplain.metrics import complexity, localisation, overlap
from medexplain.metrics._inputs import EmptyMaskWarning
from medexplain.metrics.binarise import binarise, convex_hull, otsu_threshold, top_fraction
from medexplain.metrics.complexity import entropy, gini, top_k_mass
from medexplain.metrics.localisation import mask_auroc, pointing_game, relevance_mass, relevance_rank
from medexplain.metrics.overlap import (
    dice_coefficient,
    hausdorff_distance,
    iou_score,
    structural_similarity,
)
from medexplain.metrics.registry import (
    CATEGORIES,
    METRICS,
    MetricInfo,
    available,
    get_metric,
    metric_info,
    register_metric,
)

__all__ = [
    "CATEGORIES",
    "METRICS",
    "EmptyMaskWarning",
    "MetricInfo",
    "available",
    "binarise",
    "complexity",
    "convex_hull",
    "dice_coefficient",
    "entropy",
    "get_metric",
    "gini",
    "hausdorff_distance",
    "iou_score",
    "localisation",
    "mask_auroc",
    "metric_info",
    "otsu_threshold",
    "overlap",
    "pointing_game",
    "register_metric",
    "relevance_mass",
    "relevance_rank",
    "structural_similarity",
    "top_fraction",
    "top_k_mass",
]
