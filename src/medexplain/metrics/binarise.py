"""Binarising relevance maps: Otsu, top-k %, value threshold; optional convex hull (SIBnet's evaluation).

Maps are ``(B, *spatial)`` (2D or 3D); every function returns a boolean tensor of the same shape on the
maps' device. Thresholds are strict: a position is foreground when its value is *above* the threshold, as
in ``skimage.filters.threshold_otsu`` usage (``image > threshold``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from medexplain.errors import MedexplainError
from medexplain.metrics._inputs import as_float

METHODS = ("otsu", "top-k", "value")


def otsu_threshold(maps: Tensor, bins: int = 256) -> Tensor:
    """Otsu's threshold (Otsu, IEEE TSMC 1979) per sample, from a ``bins``-bin histogram over [min, max].

    Equals ``skimage.filters.threshold_otsu(nbins=bins)``: the centre of the bin that maximises the
    between-class variance. A constant map's threshold is its value (so it binarises to all background).

    Args:
        maps: ``(B, *spatial)``.

    Returns:
        ``(B,)`` thresholds.
    """
    flat = as_float(maps).flatten(1).to(torch.float64)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    width = (high - low).clamp(min=torch.finfo(torch.float64).tiny)
    index = ((flat - low) / width * bins).floor().clamp(0, bins - 1).long()
    counts = torch.zeros(flat.shape[0], bins, dtype=torch.float64, device=flat.device).scatter_add_(
        1, index, torch.ones_like(flat)
    )
    steps = torch.arange(bins, dtype=torch.float64, device=flat.device)
    centres = low + (steps + 0.5) * (high - low) / bins
    weight_low = counts.cumsum(1)
    weight_high = counts.flip(1).cumsum(1).flip(1)
    moment = counts * centres
    mean_low = moment.cumsum(1) / weight_low.clamp(min=1)
    mean_high = moment.flip(1).cumsum(1).flip(1) / weight_high.clamp(min=1)
    between = weight_low[:, :-1] * weight_high[:, 1:] * (mean_low[:, :-1] - mean_high[:, 1:]) ** 2
    threshold = centres.gather(1, between.argmax(1, keepdim=True)).squeeze(1)
    constant = (high == low).squeeze(1)
    return torch.where(constant, low.squeeze(1), threshold).float()


def top_fraction(maps: Tensor, fraction: float) -> Tensor:
    """The ``round(fraction * N)`` (at least one) most relevant positions of each map, ``(B, *spatial)`` bool."""
    if not 0 < fraction <= 1:
        raise MedexplainError(f"top-k fraction must be in (0, 1], got {fraction}")
    flat = as_float(maps).flatten(1)
    k = max(1, round(fraction * flat.shape[1]))
    selected = torch.zeros_like(flat, dtype=torch.bool)
    selected.scatter_(1, flat.topk(k, dim=1).indices, True)
    return selected.view(maps.shape)


def convex_hull(mask: Tensor) -> Tensor:
    """Fill the convex hull of each binary mask (2D or 3D), as SIBnet does before scoring saliency.

    The hull of the foreground pixel/voxel centres (scipy's Qhull); every position inside it (to 1e-9)
    becomes foreground. Masks with fewer than ``d + 1`` points in general position are returned unchanged.

    Args:
        mask: ``(B, *spatial)`` bool.

    Returns:
        ``(B, *spatial)`` bool, a superset of ``mask``.
    """
    from scipy.spatial import ConvexHull, QhullError

    out = mask.detach().cpu().numpy().astype(bool).copy()
    for sample in out:
        points = np.argwhere(sample)
        if len(points) <= sample.ndim:
            continue
        try:
            hull = ConvexHull(points)
        except QhullError:  # all points on a line/plane: the hull has no volume
            continue
        box = tuple(slice(lo, hi + 1) for lo, hi in zip(points.min(0), points.max(0), strict=True))
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
        sample[box] |= (grid @ hull.equations[:, :-1].T + hull.equations[:, -1] <= 1e-9).all(-1)
    return torch.from_numpy(out).to(mask.device)


def binarise(
    maps: Tensor, method: str = "otsu", *, value: float = 0.5, fraction: float = 0.1, hull: bool = False
) -> Tensor:
    """Binary maps ``(B, *spatial)`` from relevance maps ``(B, *spatial)``.

    Args:
        maps: relevance; a boolean tensor is taken as already binary (only ``hull`` applies).
        method: ``"otsu"`` (per-sample Otsu threshold), ``"top-k"`` (the ``fraction`` most relevant
            positions) or ``"value"`` (``maps > value``).
        value: threshold for ``"value"``.
        fraction: share of positions kept by ``"top-k"``.
        hull: fill the convex hull of the result (SIBnet's evaluation, Mahapatra et al., MedIA 2022).
    """
    if maps.dtype == torch.bool:
        binary = maps
    elif method == "otsu":
        maps = as_float(maps)
        threshold = otsu_threshold(maps)
        binary = maps > threshold.view(-1, *[1] * (maps.ndim - 1))
    elif method == "top-k":
        binary = top_fraction(maps, fraction)
    elif method == "value":
        binary = as_float(maps) > value
    else:
        raise MedexplainError(f"unknown binarisation {method!r}; use one of {', '.join(METHODS)}")
    return convex_hull(binary) if hull else binary
