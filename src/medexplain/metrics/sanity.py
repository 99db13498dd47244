"""Sanity check: cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018).

Layers are re-initialised one after another from the output towards the input ("top down", cumulative),
and after each step the maps are compared with those of the trained model. A map that stays similar while
the weights it should depend on are destroyed fails the check. Re-initialisation is seeded
(``reset_parameters`` under a forked RNG, or a normal draw with the parameter's own standard deviation for
modules without it).

No copy of the model is made: the buffers, and each layer's parameters when its turn comes, are swapped for
copies of themselves, which are re-initialised (or updated by forward passes), and the original storage is
swapped back at the end (also when the explainer fails), so the model comes back bit for bit, with the same
parameter objects, flags and hooks. While the check runs, the model computes with the randomised layers: do
not use it from another thread meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.budget import inputs_per_call
from medexplain.explain.targets import Target
from medexplain.metrics._inputs import average_ranks, pearson
from medexplain.metrics.registry import register_metric
from medexplain.metrics.robustness import ExplainerFn, clean_maps, explain_maps, map_similarity, target_classes
from medexplain.models.randomise import parameter_layers, randomise_layer

SIMILARITIES = ("spearman", "ssim")


def _swap_for_copies(tensors: Iterable[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Swap each tensor's storage for a copy of itself (same tensor objects, new storage); returns the
    ``(tensor, original storage)`` pairs that swap them back."""
    swapped = []
    for tensor in tensors:
        swapped.append((tensor, tensor.data))
        tensor.data = tensor.data.clone()
    return swapped


def _similarity_to(reference: Tensor, kind: str) -> Callable[[Tensor], Tensor]:
    """``maps -> (B,)`` similarity of ``|maps|`` to ``|reference|`` (both ``(B, *spatial)``); for Spearman the
    reference's ranks are computed once."""
    if kind == "spearman":
        ranks = average_ranks(reference.flatten(1).abs())
        return lambda maps: pearson(ranks, average_ranks(maps.flatten(1).abs())).float()
    return lambda maps: map_similarity(reference.abs(), maps.abs())


def cascading_randomisation(
    maps: Tensor | None,
    *,
    model: nn.Module,
    x: Tensor,
    explainer: ExplainerFn,
    target: Target = None,
    similarity: str = "spearman",
    seed: int = 0,
    layers: int | None = None,
    max_memory: int | None = None,
) -> tuple[list[str], Tensor]:
    """Similarity between the original maps and the maps after each cumulative randomisation step.

    Args:
        maps: ``(B, *spatial)`` maps of the trained model (computed when ``None``).
        model: classifier; randomised in place during the call, restored exactly at the end (module docstring).
        x: ``(B, C, *spatial)``.
        explainer: ``(model, x, target) -> maps``; the target stays the class resolved on the trained model.
        similarity: ``"spearman"`` (rank correlation of ``|maps|``, Quantus's ``MPRT`` default) or ``"ssim"``
            (of min-max normalised ``|maps|``).
        layers: randomise only the first ``layers`` parameter layers from the top (all when ``None``): the
            modules with parameters that a forward pass calls (:func:`~medexplain.models.parameter_layers`).
        max_memory: bytes of activations per explainer call, counted as one forward + backward per input
            (:func:`medexplain.explain.budget.inputs_per_call`; ``None``: one forward + backward of ``x``, at
            least 64 MiB).

    Returns:
        the randomised layer names in order, and similarities ``(B, L)``. One explainer call per layer.
    """
    if similarity not in SIMILARITIES:
        raise MedexplainError(f"unknown similarity {similarity!r}; use one of {', '.join(SIMILARITIES)}")
    modules = dict(model.named_modules())
    names = parameter_layers(model, x[:1])[:layers]
    if not names:
        raise MedexplainError("cascading randomisation: the model has no parameters to randomise")
    scores = []
    originals = _swap_for_copies(model.buffers())  # forward passes in training mode update buffers: the copies
    try:
        per_call = inputs_per_call(model, x, max_memory)
        classes = target_classes(model, x, target, per_call)
        similarity_to_original = _similarity_to(clean_maps(maps, explainer, model, x, classes, per_call), similarity)
        for step, name in enumerate(names):
            originals += _swap_for_copies(modules[name].parameters(recurse=False))
            randomise_layer(modules[name], seed + step)
            scores.append(similarity_to_original(explain_maps(explainer, model, x, classes, per_call)))
    finally:
        for tensor, storage in reversed(originals):  # reversed: a tensor shared by two layers ends as it began
            tensor.data = storage
    return names, torch.stack(scores, 1)


def _layer_count(layers: int | None) -> int:
    """One explainer call per randomised layer: the cost needs the count (``len(parameter_layers(model))``)."""
    if layers is None:
        raise MedexplainError("model-randomisation: its cost depends on the model; give layers (a count)")
    return int(layers)


@register_metric(
    "model-randomisation", category="sanity", higher_is_better=False, needs=("explainer",),
    passes=lambda p: _layer_count(p["layers"]),
)
def model_randomisation(
    maps: Tensor | None,
    *,
    model: nn.Module,
    x: Tensor,
    explainer: ExplainerFn,
    target: Target = None,
    similarity: str = "spearman",
    seed: int = 0,
    layers: int | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Mean similarity of the maps to the trained model's over the cascading randomisation steps; (B,).

    Low is good (the explanation depends on the weights). See :func:`cascading_randomisation`.
    """
    return cascading_randomisation(
        maps,
        model=model,
        x=x,
        explainer=explainer,
        target=target,
        similarity=similarity,
        seed=seed,
        layers=layers,
        max_memory=max_memory,
    )[1].mean(1)
