"""How many model evaluations per image a model-bound metric needs: the floor of its cost.

Faithfulness metrics need forward passes (the clean input included); robustness and sanity metrics need
explainer calls (each one or more forward and backward passes, depending on the explainer). Benchmarks
multiply this by the model's batched cost per image to get the floor a metric can at best reach.
"""

from __future__ import annotations

from collections.abc import Callable

from medexplain.errors import MedexplainError

_PER_IMAGE: dict[str, Callable[..., int]] = {
    "deletion-auc": lambda steps=20, **_: steps + 1,
    "insertion-auc": lambda steps=20, **_: steps + 1,
    "pixel-flipping": lambda steps=20, **_: steps + 1,
    "region-perturbation": lambda regions=100, **_: regions + 1,
    "faithfulness-correlation": lambda runs=100, **_: runs + 1,
    "max-sensitivity": lambda samples=10, with_maps=True, **_: samples + (0 if with_maps else 1),
    "avg-sensitivity": lambda samples=10, with_maps=True, **_: samples + (0 if with_maps else 1),
    "noise-ssim": lambda samples=5, with_maps=True, **_: samples + (0 if with_maps else 1),
    "model-randomisation": lambda layers, with_maps=True, **_: layers + (0 if with_maps else 1),
}


def forward_passes(metric: str, **params: int) -> int:
    """Model evaluations per image of ``metric`` with ``params`` (its keyword arguments).

    ``with_maps=False`` counts the clean explanation that robustness/sanity metrics compute when given no
    maps; ``model-randomisation`` needs ``layers`` (``len(parameter_layers(model))`` by default). Region
    perturbation needs fewer when the image has fewer than ``regions`` patches.
    """
    if metric not in _PER_IMAGE:
        raise MedexplainError(f"{metric!r} is not a model-bound metric; known: {', '.join(sorted(_PER_IMAGE))}")
    return _PER_IMAGE[metric](**params)
