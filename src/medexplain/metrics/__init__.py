"""Evaluation of explanations: localisation, faithfulness, robustness, complexity and sanity, 2D and 3D.

Every registered metric is a pure, batched function returning per-sample scores ``(B,)`` on the inputs'
device. Conventions (shapes, empty masks, NaN) are in :mod:`medexplain.metrics._inputs`: maps and masks are
``(B, *spatial)``, a singleton channel ``(B, 1, *spatial)`` is accepted; an empty mask scores NaN with an
:class:`EmptyMaskWarning`; NaN in a map is an error.
"""

from medexplain.metrics import classification, complexity, faithfulness, localisation, overlap, robustness, sanity
from medexplain.metrics._inputs import EmptyMaskWarning, UndefinedScoreWarning
from medexplain.metrics.binarise import binarise, convex_hull, otsu_threshold, top_fraction
from medexplain.metrics.complexity import entropy, gini, top_k_mass
from medexplain.metrics.faithfulness import (
    deletion_auc,
    faithfulness_correlation,
    insertion_auc,
    perturbation_curve,
    pixel_flipping,
    pixel_flipping_curve,
    region_perturbation,
    region_perturbation_curve,
)
from medexplain.metrics.localisation import mask_auroc, pointing_game, relevance_mass, relevance_rank
from medexplain.metrics.overlap import dice_coefficient, hausdorff_distance, iou_score, structural_similarity
from medexplain.metrics.registry import (
    CATEGORIES,
    METRICS,
    NEEDS,
    Curve,
    MetricInfo,
    available,
    forward_passes,
    get_metric,
    metric_info,
    register_metric,
)
from medexplain.metrics.robustness import (
    auroc_under_noise,
    avg_sensitivity,
    max_sensitivity,
    noise_ssim,
    noisy_scores,
)
from medexplain.metrics.sanity import cascading_randomisation, model_randomisation
from medexplain.metrics.summary import bootstrap_interval, summarise

__all__ = [
    "CATEGORIES",
    "METRICS",
    "NEEDS",
    "Curve",
    "EmptyMaskWarning",
    "MetricInfo",
    "UndefinedScoreWarning",
    "auroc_under_noise",
    "available",
    "avg_sensitivity",
    "binarise",
    "bootstrap_interval",
    "cascading_randomisation",
    "classification",
    "complexity",
    "convex_hull",
    "deletion_auc",
    "dice_coefficient",
    "entropy",
    "faithfulness",
    "faithfulness_correlation",
    "forward_passes",
    "get_metric",
    "gini",
    "hausdorff_distance",
    "insertion_auc",
    "iou_score",
    "localisation",
    "mask_auroc",
    "max_sensitivity",
    "metric_info",
    "model_randomisation",
    "noise_ssim",
    "noisy_scores",
    "otsu_threshold",
    "overlap",
    "perturbation_curve",
    "pixel_flipping",
    "pixel_flipping_curve",
    "pointing_game",
    "region_perturbation",
    "region_perturbation_curve",
    "register_metric",
    "relevance_mass",
    "relevance_rank",
    "robustness",
    "sanity",
    "structural_similarity",
    "summarise",
    "top_fraction",
    "top_k_mass",
]
