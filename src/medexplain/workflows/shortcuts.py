"""The audit's shortcut check: does a method's relevance sit on a region that should not decide the diagnosis (the
image border, the background outside the field of view, a landmark such as the optic disc) out of proportion to
that region's size?

A model can be accurate for the wrong reason: a fundus classifier that reads the size of the black frame, or the
optic disc, instead of the lesions. For each image and method, the share of the map's positive relevance inside
the region is set against the region's share of the image. Over the images, the **density ratio**
``(S / A) / ((1 - S) / (1 - A))`` (``S``: mean relevance share, ``A``: mean area share) says how many times more
relevance a pixel of the region holds than a pixel outside it (1: in proportion). A method is flagged on a region
when the lower end of the ratio's 95 % bootstrap interval over images exceeds ``PROPORTION``.

Regions: ``border`` (the outer ``BORDER`` of every side), ``background`` (pixels at the image's darkest level, in
every channel: the frame around a fundus or a scan's air; used only when it covers at least ``MIN_AREA`` of the
image), ``outside <mask>`` for a field-of-view mask column, and ``<mask>`` for a landmark mask column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medexplain.data.dataset import ImageDataset
from medexplain.errors import MedexplainError
from medexplain.workflows.explanations import StoredExplanations

PROPORTION = 2.0
BORDER = 0.1
BACKGROUND_LEVEL = 0.02
MIN_AREA = 0.01
_CLIP = 1e-6


def border_region(spatial: Sequence[int], width: float = BORDER) -> Tensor:
    """``(*spatial)`` bool: the outer ``width`` (share of the side, at least one pixel) along every axis."""
    inside = torch.ones(tuple(spatial), dtype=torch.bool)
    for axis, size in enumerate(spatial):
        band = max(1, math.ceil(width * size))
        index = [slice(None)] * len(spatial)
        index[axis] = slice(band, max(band, size - band))
        keep = torch.zeros_like(inside)
        keep[tuple(index)] = True
        inside &= keep
    return ~inside


def background_region(image: Tensor, level: float = BACKGROUND_LEVEL) -> Tensor:
    """``(*spatial)`` bool: pixels within ``level`` of the image's value range above its minimum, in every
    channel of ``image`` ``(C, *spatial)``."""
    low = image.flatten(1).min(dim=1).values
    span = image.flatten(1).max(dim=1).values - low
    near = image <= (low + level * span).view(-1, *([1] * (image.ndim - 1)))
    return near.all(dim=0)


def relevance_share(relevance: Tensor, region: Tensor) -> float:
    """Share of the positive part of ``relevance`` ``(*spatial)`` inside ``region``; NaN without positive
    relevance."""
    positive = relevance.double().clamp(min=0)
    total = float(positive.sum())
    return float(positive[region].sum()) / total if total > 0 else math.nan


def density_ratio(share: np.ndarray, area: np.ndarray) -> np.ndarray:
    """``(S / A) / ((1 - S) / (1 - A))`` of the mean relevance share ``S`` and the mean area share ``A`` over the
    last axis (per image); one ratio per row of ``share`` and ``area``."""
    s, a = (np.clip(np.mean(v, axis=-1), _CLIP, 1 - _CLIP) for v in (share, area))
    return (s / a) / ((1 - s) / (1 - a))


def _regions(sample_image: Tensor, masks: dict[str, Tensor], landmarks: Sequence[str], field: str | None,
             border: float) -> dict[str, Tensor]:  # fmt: skip
    regions = {"border": border_region(sample_image.shape[1:], border)}
    if field is not None:
        regions[f"outside {field}"] = masks[field][0] < 0.5
    else:
        regions["background"] = background_region(sample_image)
    for name in landmarks:
        regions[name] = masks[name][0] >= 0.5
    return regions


def shortcut_check(
    stored: StoredExplanations,
    dataset: ImageDataset,
    methods: Sequence[str],
    *,
    landmarks: Sequence[str] = (),
    field: str | None = None,
    border: float = BORDER,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{region: {method: {"relevance_share", "area_share", "ratio", "ratio_ci", "flagged", "n"}}}`` over the
    stored items (first explained target), for the regions described in the module docstring.

    ``landmarks`` and ``field`` name mask columns of ``dataset`` (e.g. ``disc``; ``fov``); without ``field``, the
    background is found in each image.
    """
    missing = [name for name in (*landmarks, *([field] if field else [])) if name not in dataset.mask_names]
    if missing:
        raise MedexplainError(f"mask {missing[0]!r} is not in the dataset; its masks: "
                              f"{', '.join(dataset.mask_names) or 'none'}")  # fmt: skip
    shares: dict[str, dict[str, list[float]]] = {}
    areas: dict[str, list[float]] = {}
    for item in stored.items:
        sample = dataset[item.index]
        maps = {method: stored.load(item, method)[0] for method in methods}
        for region_name, region in _regions(sample.image, sample.masks, landmarks, field, border).items():
            areas.setdefault(region_name, []).append(float(region.double().mean()))
            for method, relevance in maps.items():
                shares.setdefault(region_name, {}).setdefault(method, []).append(relevance_share(relevance, region))
    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for region_name, per_method in shares.items():
        area = np.asarray(areas[region_name])
        if region_name == "background" and area.mean() < MIN_AREA:
            continue
        draws = rng.integers(0, len(area), size=(resamples, len(area)))
        result[region_name] = {}
        for method, values in per_method.items():
            share = np.asarray(values)
            keep = ~np.isnan(share)
            if not keep.any():
                result[region_name][method] = {"relevance_share": math.nan, "area_share": float(area.mean()),
                                               "ratio": math.nan, "ratio_ci": [math.nan, math.nan],
                                               "flagged": False, "n": 0}  # fmt: skip
                continue
            s, a = share[keep], area[keep]
            kept_draws = draws[:, : len(s)] % len(s)
            low, high = (float(q) for q in np.quantile(density_ratio(s[kept_draws], a[kept_draws]), [0.025, 0.975]))
            result[region_name][method] = {
                "relevance_share": float(s.mean()), "area_share": float(a.mean()), "ratio": float(density_ratio(s, a)),
                "ratio_ci": [low, high], "flagged": bool(low > PROPORTION), "n": int(keep.sum()),
            }  # fmt: skip
    return result
