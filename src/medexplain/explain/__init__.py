"""Post-hoc explanations of any PyTorch classifier, 2D and 3D: ``create_explainer(name)(model, x, target)``."""

from medexplain.explain.base import EXPLAINERS, Explainer, available, create_explainer, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.targets import Target, resolve_target

__all__ = [
    "EXPLAINERS",
    "Explainer",
    "Explanation",
    "Target",
    "available",
    "create_explainer",
    "register_explainer",
    "resolve_target",
]
