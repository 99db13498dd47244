"""medexplain: interpretable deep learning for medical images, in 2D and 3D.

Inherently interpretable models (sparse BagNet), post-hoc explanations of any PyTorch classifier,
concept analysis, interpretability-guided training, counterfactual simulators, and the evaluation of
explanations against lesion masks and against the model itself.
"""

from medexplain.errors import MedexplainError
from medexplain.explain.explanation import Explanation

__version__ = "0.1.0"

__all__ = ["Explanation", "MedexplainError", "__version__"]
