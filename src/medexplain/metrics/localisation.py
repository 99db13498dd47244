"""Localisation of relevance against ground-truth masks: pointing game, relevance mass and rank, mask AUROC.

Maps and masks are ``(B, *spatial)`` (2D or 3D; a singleton channel axis is accepted and removed). A sample
whose mask is empty scores NaN, with an :class:`~medexplain.metrics._inputs.EmptyMaskWarning`; summaries
exclude such samples and count them. All functions return ``(B,)`` on the maps' device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medexplain.metrics._inputs import maps_and_mask, nan_where_empty, nan_where_undefined, rank_auroc
from medexplain.metrics.registry import register_metric


def dilate(mask: Tensor, radius: float) -> Tensor:
    """Dilate boolean ``mask`` (B, *spatial) by a Euclidean ball of ``radius`` pixels/voxels (2D and 3D)."""
    if radius <= 0:
        return mask
    spatial_dims = mask.ndim - 1
    r = int(radius)
    axis = torch.arange(-r, r + 1, device=mask.device, dtype=torch.float32)
    grids = torch.meshgrid(*([axis] * spatial_dims), indexing="ij")
    ball = (sum(g**2 for g in grids) <= radius**2).float()
    conv = getattr(F, f"conv{spatial_dims}d")
    hits = conv(mask.unsqueeze(1).float(), ball[None, None], padding=r)
    return hits.squeeze(1) > 0.5


@register_metric("pointing-game", category="localisation", higher_is_better=True, needs=("mask",))
def pointing_game(maps: Tensor, mask: Tensor, *, tolerance: float = 0.0) -> Tensor:
    """Pointing game (Zhang et al., ECCV 2016): 1 if the map's maximum falls in the mask, else 0.

    Args:
        maps: ``(B, *spatial)`` relevance.
        mask: ``(B, *spatial)`` binary ground truth.
        tolerance: a hit also counts within this Euclidean distance (pixels/voxels) of the mask; ``0`` is
            Quantus's ``PointingGame``.

    Ties: when several positions share the maximum (maps stored at low precision, saturated maps, a constant
    map), the score is the share of them that lie in the mask, the expected hit of a random tie-break. So a
    map that says nothing scores chance (the mask's share of the image), never a hit by any tied pixel.

    Returns:
        ``(B,)`` float scores in [0, 1] (in {0, 1} without ties); NaN for an empty mask, with a warning.
    """
    maps, mask = maps_and_mask(maps, mask)
    flat = maps.flatten(1)
    is_max = flat == flat.amax(1, keepdim=True)
    inside = (is_max & dilate(mask, tolerance).flatten(1)).sum(1)
    hit = (inside.to(torch.float64) / is_max.sum(1)).to(maps.dtype)
    return nan_where_empty(hit, mask, "pointing-game")


@register_metric("relevance-mass", category="localisation", higher_is_better=True, needs=("mask",))
def relevance_mass(maps: Tensor, mask: Tensor, *, absolute: bool = False) -> Tensor:
    """Relevance mass accuracy (Arras et al., Information Fusion 2022): the share of the positive relevance that
    lies in the mask, ``sum_mask R+ / sum R+`` with ``R+ = max(R, 0)`` (``absolute``: of ``|R|`` instead).

    The positive part (the evidence *for* the explained class) keeps the score in [0, 1] for signed maps
    (integrated gradients, LRP, BagNet evidence), where the signed ratio is unbounded; for maps without negative
    values (Grad-CAM, saliency) it is the plain ratio.

    Args:
        maps: ``(B, *spatial)`` relevance.
        mask: ``(B, *spatial)`` binary ground truth.
        absolute: use ``|maps|`` instead of the positive part.

    Returns:
        ``(B,)`` in [0, 1]; 1 when all (positive) relevance lies in the mask. NaN for an empty mask, and for a
        map without positive relevance (no mass to locate), each with a warning.
    """
    maps, mask = maps_and_mask(maps, mask)
    flat = (maps.abs() if absolute else maps.clamp(min=0)).flatten(1).to(torch.float64)
    total = flat.sum(1)
    inside = (flat * mask.flatten(1)).sum(1)
    scores = (inside / total.masked_fill(total == 0, 1)).to(maps.dtype)
    scores = nan_where_undefined(scores, total == 0, "relevance-mass", "map with zero total relevance")
    return nan_where_empty(scores, mask, "relevance-mass")


@register_metric("relevance-rank", category="localisation", higher_is_better=True, needs=("mask",))
def relevance_rank(maps: Tensor, mask: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al., Information Fusion 2022).

    With ``K`` the mask size, the fraction of the ``K`` most relevant positions that lie inside the mask.
    Positions tied at the K-th largest value are taken in flattened index order.

    Args:
        maps: ``(B, *spatial)`` relevance.
        mask: ``(B, *spatial)`` binary ground truth.

    Returns:
        ``(B,)`` in [0, 1]; NaN for an empty mask.
    """
    maps, mask = maps_and_mask(maps, mask)
    values, inside = maps.flatten(1).detach().cpu().numpy(), mask.flatten(1).cpu().numpy()
    sizes = inside.sum(1)
    hits = [_top_k_hits(row, positive, int(k)) for row, positive, k in zip(values, inside, sizes, strict=True)]
    scores = torch.tensor(hits, dtype=maps.dtype) / torch.from_numpy(sizes).clamp(min=1)
    return nan_where_empty(scores.to(maps.device), mask, "relevance-rank")


def _top_k_hits(values: np.ndarray, inside: np.ndarray, k: int) -> int:
    """How many of the ``k`` largest of ``values`` (N,) lie ``inside`` (N,) bool, ties at the k-th largest value
    taken in index order.

    One selection (``np.partition``, linear time) finds the k-th largest value; the positions above it are
    counted, and only the (usually few) positions equal to it are listed.
    """
    if k == 0:
        return 0
    threshold = np.partition(values, len(values) - k)[len(values) - k]
    above = values > threshold
    room = k - int(np.count_nonzero(above))
    tied = np.flatnonzero(values == threshold)[:room]
    return int(np.count_nonzero(above & inside)) + int(np.count_nonzero(inside[tied]))


@register_metric("mask-auroc", category="localisation", higher_is_better=True, needs=("mask",))
def mask_auroc(maps: Tensor, mask: Tensor) -> Tensor:
    """AUROC of the map as a pixel/voxel classifier of the mask (Quantus ``AUC``); ties count one half.

    Args:
        maps: ``(B, *spatial)`` relevance.
        mask: ``(B, *spatial)`` binary ground truth.

    Returns:
        ``(B,)``: 1 for a perfect map, ~0.5 for a random one, 0 for an inverted one. NaN for an empty mask
        (and for a mask covering the whole image, which has no negatives).
    """
    maps, mask = maps_and_mask(maps, mask)
    scores = rank_auroc(maps.flatten(1), mask.flatten(1)).to(maps.dtype)
    return nan_where_empty(scores, mask, "mask-auroc")
