"""Post-hoc explanations of any PyTorch classifier, 2D and 3D: ``create_explainer(name)(model, x, target)``."""

from medexplain.explain import attention, baselines, cam, evidence, gradients, integrated, lrp, occlusion
from medexplain.explain.base import EXPLAINERS, Explainer, available, create_explainer, register_explainer
from medexplain.explain.cam import cam_maps
from medexplain.explain.explanation import Explanation
from medexplain.explain.targets import Target, resolve_target

__all__ = [
    "EXPLAINERS",
    "Explainer",
    "Explanation",
    "Target",
    "attention",
    "available",
    "baselines",
    "cam",
    "cam_maps",
    "create_explainer",
    "evidence",
    "gradients",
    "integrated",
    "lrp",
    "occlusion",
    "register_explainer",
    "resolve_target",
]
