"""Concept bottleneck model (Koh et al., "Concept Bottleneck Models", ICML 2020), 2D and 3D.

``x -> concept logits`` is any registered model built with one output per concept (a multi-label head on its
backbone); ``concept probabilities = sigmoid(concept logits)``; ``class logits = W p + b`` through one linear
layer whose weights say how much each concept counts for each class. Because the class depends on the image only
through ``p``, an expert can correct a concept at test time (*intervention*): replace ``p_l`` by the annotated
0/1 value and the class logits change by ``W[:, l] (c_l - p_l)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from medexplain.models.registry import create_model


class ConceptBottleneck(nn.Module):
    """``(B, C, *spatial) -> (B, K)`` class logits through ``L`` concept probabilities.

    Args:
        concept_model: maps ``(B, C, *spatial)`` to ``(B, L)`` concept logits.
        num_concepts: ``L``.
        num_classes: ``K``.
    """

    def __init__(self, concept_model: nn.Module, num_concepts: int, num_classes: int) -> None:
        super().__init__()
        self.concept_model = concept_model
        self.classifier = nn.Linear(num_concepts, num_classes)
        self.num_concepts = num_concepts

    def concept_logits(self, x: Tensor) -> Tensor:
        """``(B, L)`` concept logits."""
        return self.concept_model(x)

    def concept_probabilities(self, x: Tensor) -> Tensor:
        """``(B, L)`` probabilities that each concept is present."""
        return torch.sigmoid(self.concept_logits(x))

    def classify(self, concepts: Tensor) -> Tensor:
        """``(B, K)`` class logits of concept values ``(B, L)`` (probabilities, or an expert's 0/1)."""
        return self.classifier(concepts)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.concept_probabilities(x))


def intervene(probabilities: Tensor, expert: Tensor, k: int) -> Tensor:
    """Replace, per image, the ``k`` least certain predicted concepts by the expert's values.

    probabilities ``(B, L)``; expert ``(B, L)`` in {0, 1}, NaN where the expert gave none (never chosen).
    "Least certain" is the smallest ``|p - 0.5|`` (ties: lower concept index first), as in Koh et al.'s
    uncertainty-ordered intervention. Returns ``(B, L)``; ``k >= L`` replaces every annotated concept.
    """
    if probabilities.shape != expert.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and expert {tuple(expert.shape)} differ")
    certainty = (probabilities - 0.5).abs()
    annotated = ~torch.isnan(expert)
    certainty = torch.where(annotated, certainty, torch.full_like(certainty, torch.inf))
    order = torch.sort(certainty, dim=1, stable=True).indices[:, : max(0, min(k, probabilities.shape[1]))]
    chosen = torch.zeros_like(annotated).scatter_(1, order, True) & annotated
    return torch.where(chosen, expert.to(probabilities.dtype), probabilities)


def concept_bottleneck(
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    spatial_dims: int = 2,
    num_concepts: int = 1,
    backbone: str = "resnet18",
    backbone_args: dict[str, Any] | None = None,
) -> ConceptBottleneck:
    """A concept bottleneck (Koh et al. 2020) on the registered ``backbone`` with ``num_concepts`` outputs; 2D/3D."""
    concept_model = create_model(
        backbone,
        in_channels=in_channels,
        num_classes=num_concepts,
        spatial_dims=spatial_dims,
        **dict(backbone_args or {}),
    )
    return ConceptBottleneck(concept_model, num_concepts, num_classes)
