"""Complexity of explanations: Gini sparseness, entropy, mass in the top k %.

Maps are ``(B, ...)`` (any trailing shape: ``(B, *spatial)`` or ``(B, 1, *spatial)`` flatten alike) and are
taken in absolute value, as Quantus's ``Sparseness`` and ``Complexity`` do by default. (B,) scores.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medexplain.errors import MedexplainError
from medexplain.metrics._inputs import as_float, sorted_values
from medexplain.metrics.registry import register_metric

GINI_EPS = 1e-7
"""Added to every |relevance| before the Gini index (as Quantus), so an all-zero map scores 0, not 0/0."""


@register_metric("gini", category="complexity", higher_is_better=True)
def gini(maps: Tensor) -> Tensor:
    """Gini index of ``|maps|`` (Chalasani et al., ICML 2020; Quantus ``Sparseness``); (B,) in [0, 1).

    ``sum_i (2i - n - 1) a_(i) / (n sum_i a_(i))`` over the ascending-sorted ``a = |maps| + 1e-7``:
    ~0 for a uniform map, ~1 for all relevance on one position.
    """
    flat = as_float(maps).flatten(1).abs()
    n = flat.shape[1]
    ordered = sorted_values(flat).to(torch.float64)  # sorting in the map's dtype keeps the order
    weights = 2 * torch.arange(1, n + 1, device=flat.device, dtype=torch.float64) - n - 1
    # the offset drops out of the numerator (the weights sum to zero) and adds n * eps to the total
    return ((ordered @ weights) / (n * (ordered.sum(1) + n * GINI_EPS))).to(flat.dtype)


@register_metric("entropy", category="complexity", higher_is_better=False)
def entropy(maps: Tensor) -> Tensor:
    """Shannon entropy (nats) of ``|maps|`` normalised to sum 1 (Bhatt et al., IJCAI 2020; Quantus ``Complexity``).

    (B,) in [0, log n]; an all-zero map counts as uniform (log n).
    """
    flat = as_float(maps).flatten(1).abs().to(torch.float64)
    total = flat.sum(1, keepdim=True)
    share = torch.where(total > 0, flat / total.clamp(min=torch.finfo(torch.float64).tiny), 1.0 / flat.shape[1])
    return -(share * torch.log(share + 1e-12)).sum(1).to(as_float(maps).dtype)


@register_metric("top-k-mass", category="complexity", higher_is_better=True)
def top_k_mass(maps: Tensor, *, fraction: float = 0.1) -> Tensor:
    """Share of total ``|relevance|`` held by the ``ceil(fraction * n)`` most relevant positions; (B,).

    ``fraction`` for a uniform map, 1 for a map concentrated in the top ``fraction``; an all-zero map counts as
    uniform.
    """
    if not 0 < fraction <= 1:
        raise MedexplainError(f"top-k-mass fraction must be in (0, 1], got {fraction}")
    flat = as_float(maps).flatten(1).abs().to(torch.float64)
    k = math.ceil(fraction * flat.shape[1])
    total = flat.sum(1)
    top = flat.topk(k, dim=1).values.sum(1)
    return torch.where(total > 0, top / total.clamp(min=torch.finfo(torch.float64).tiny), k / flat.shape[1]).to(
        as_float(maps).dtype
    )
