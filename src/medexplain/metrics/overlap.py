"""Overlap of binarised maps with masks: Dice, IoU, HD95, SSIM (as MONAI defines them), 2D and 3D.

The pure functions (:func:`dice_coefficient`, :func:`iou_score`, :func:`hausdorff_distance`,
:func:`structural_similarity`) take binary or real tensors ``(B, *spatial)``. The registered metrics take
relevance maps, binarise them (:func:`medexplain.metrics.binarise.binarise`: Otsu by default, optional convex
hull as in SIBnet) and compare with the mask. An empty mask scores NaN with an ``EmptyMaskWarning``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medexplain.errors import MedexplainError
from medexplain.metrics._inputs import maps_and_mask, nan_where_empty
from medexplain.metrics.binarise import binarise
from medexplain.metrics.registry import register_metric
from medexplain.ndimage import gaussian_window, separable_filter

_CDIST_CHUNK = 1 << 24  # distances held at once on an accelerator
_DENSE_SURFACE = 4  # bounding-box voxels per surface point below which distance transforms beat a k-d tree


def dice_coefficient(pred: Tensor, target: Tensor) -> Tensor:
    """Dice ``2|P∩T| / (|P| + |T|)`` of boolean ``(B, *spatial)`` tensors (MONAI ``compute_dice``); (B,).

    Both empty gives NaN (MONAI's ``ignore_empty=True``).
    """
    p, t = pred.flatten(1), target.flatten(1)
    inter = (p & t).sum(1).double()
    return (2 * inter / (p.sum(1) + t.sum(1)).double()).float()


def iou_score(pred: Tensor, target: Tensor) -> Tensor:
    """Jaccard index ``|P∩T| / |P∪T|`` of boolean ``(B, *spatial)`` tensors (MONAI ``compute_iou``); (B,)."""
    p, t = pred.flatten(1), target.flatten(1)
    return ((p & t).sum(1).double() / (p | t).sum(1).double()).float()


def surface(mask: Tensor) -> Tensor:
    """Boundary of boolean ``mask`` (B, *spatial): foreground positions with a background face-neighbour.

    Outside the image counts as background. This is MONAI's ``mask ^ binary_erosion(mask)`` (scipy's
    default cross-shaped structuring element, zero border).
    """
    spatial_dims = mask.ndim - 1
    padded = F.pad(mask.float(), [1, 1] * spatial_dims).bool()
    eroded = mask.clone()
    for axis in range(1, spatial_dims + 1):
        for start in (0, 2):
            window = [slice(None)] + [slice(1, 1 + n) for n in mask.shape[1:]]
            window[axis] = slice(start, start + mask.shape[axis])
            eroded &= padded[tuple(window)]
    return mask & ~eroded


def _nearest_distances(source: Tensor, target: Tensor) -> Tensor:
    """Euclidean distance from each point of ``source`` (N, d) to its nearest point of ``target`` (M, d).

    A k-d tree on the CPU (``torch.get_num_threads()`` workers), a chunked ``torch.cdist`` on an accelerator.
    """
    if source.is_cuda:
        chunk = max(1, _CDIST_CHUNK // max(1, len(target)))
        target = target.double()
        return torch.cat([torch.cdist(part.double(), target).amin(1) for part in source.split(chunk)])
    from scipy.spatial import cKDTree

    tree = cKDTree(target.numpy())
    distances = tree.query(source.numpy(), k=1, workers=torch.get_num_threads())[0]
    return torch.from_numpy(np.asarray(distances, dtype=np.float64))


def _surface_distances(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Directed distances between two non-empty surfaces ``a``, ``b`` (boolean, one sample's spatial shape).

    Exact either way: Euclidean distance transforms of the union's bounding box when the surfaces are dense in
    it (cheaper per voxel than a k-d tree per point), a nearest-point search otherwise.
    """
    points_a, points_b = a.nonzero(), b.nonzero()
    if a.is_cuda:
        return _nearest_distances(points_a, points_b), _nearest_distances(points_b, points_a)
    both = torch.cat([points_a, points_b])
    low, high = both.amin(0), both.amax(0) + 1
    box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
    volume = int(torch.prod(high - low))
    if volume > _DENSE_SURFACE * len(both):
        return _nearest_distances(points_a, points_b), _nearest_distances(points_b, points_a)
    from scipy.ndimage import distance_transform_edt

    to_b = distance_transform_edt(~b[box].numpy())
    to_a = distance_transform_edt(~a[box].numpy())
    local_a, local_b = (points_a - low).numpy(), (points_b - low).numpy()
    return torch.from_numpy(to_b[tuple(local_a.T)]), torch.from_numpy(to_a[tuple(local_b.T)])


def hausdorff_distance(pred: Tensor, target: Tensor, percentile: float = 95.0) -> Tensor:
    """Symmetric percentile Hausdorff distance between the surfaces of boolean ``(B, *spatial)`` tensors.

    Equals MONAI's ``compute_hausdorff_distance(percentile=...)`` (Euclidean, unit spacing): the maximum of
    the two directed ``percentile``-th distances (linear interpolation, ``torch.quantile``) between surface
    points (:func:`surface`). Surfaces are found for the whole batch at once; distances come from distance
    transforms or a k-d tree on the CPU (whichever is cheaper for the sample) and ``torch.cdist`` on an
    accelerator.

    Returns:
        ``(B,)`` float32. NaN when both are empty; when exactly one is empty, the image diagonal (the largest
        possible distance; MONAI returns inf).
    """
    if pred.shape != target.shape:
        raise MedexplainError(f"pred shape {tuple(pred.shape)} and target shape {tuple(target.shape)} differ")
    q = percentile / 100.0
    diagonal = math.sqrt(sum((n - 1) ** 2 for n in pred.shape[1:]))
    edges_pred, edges_target = surface(pred.bool()), surface(target.bool())
    device = pred.device if pred.is_cuda else torch.device("cpu")
    edges_pred, edges_target = edges_pred.to(device), edges_target.to(device)
    scores = torch.empty(pred.shape[0], dtype=torch.float64)
    for i in range(pred.shape[0]):
        has_pred, has_target = bool(edges_pred[i].any()), bool(edges_target[i].any())
        if not (has_pred and has_target):
            scores[i] = diagonal if has_pred or has_target else float("nan")
            continue
        forward, backward = _surface_distances(edges_pred[i], edges_target[i])
        scores[i] = torch.maximum(torch.quantile(forward, q), torch.quantile(backward, q)).cpu()
    return scores.float().to(pred.device)


def structural_similarity(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Mean SSIM (Wang et al., IEEE TIP 2004) of ``a`` and ``b`` ``(B, *spatial)``, as MONAI's ``SSIMMetric``.

    Gaussian window (``win_size``, ``sigma``) applied separably without padding; the per-sample mean of the
    SSIM map. Each spatial size must be at least ``win_size``.

    Returns:
        ``(B,)`` in [-1, 1].
    """
    if a.shape != b.shape:
        raise MedexplainError(f"SSIM inputs differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[1:]) < win_size:
        raise MedexplainError(f"SSIM needs every spatial size >= win_size {win_size}, got {tuple(a.shape[1:])}")
    x, y = a.float().unsqueeze(1), b.float().unsqueeze(1)
    window = gaussian_window(win_size, sigma, x.device, x.dtype)
    stats = separable_filter(torch.cat([x, y, x * x, y * y, x * y]), window).chunk(5)
    mu_x, mu_y, xx, yy, xy = stats
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def _binary_and_mask(
    maps: Tensor, mask: Tensor, method: str, value: float, fraction: float, hull: bool
) -> tuple[Tensor, Tensor]:
    already_binary = maps.dtype == torch.bool
    maps, mask = maps_and_mask(maps.float() if already_binary else maps, mask)
    maps = maps.bool() if already_binary else maps
    return binarise(maps, method, value=value, fraction=fraction, hull=hull), mask


@register_metric("dice", category="localisation", higher_is_better=True, needs=("mask",))
def dice(
    maps: Tensor,
    mask: Tensor,
    *,
    binarisation: str = "otsu",
    value: float = 0.5,
    fraction: float = 0.1,
    hull: bool = False,
) -> Tensor:
    """Dice between the binarised map and the mask (``(B, *spatial)`` each); (B,), NaN for an empty mask.

    ``binarisation``/``value``/``fraction``/``hull`` as in :func:`medexplain.metrics.binarise.binarise`.
    """
    binary, mask = _binary_and_mask(maps, mask, binarisation, value, fraction, hull)
    return nan_where_empty(dice_coefficient(binary, mask), mask, "dice")


@register_metric("iou", category="localisation", higher_is_better=True, needs=("mask",))
def iou(
    maps: Tensor,
    mask: Tensor,
    *,
    binarisation: str = "otsu",
    value: float = 0.5,
    fraction: float = 0.1,
    hull: bool = False,
) -> Tensor:
    """Intersection over union of the binarised map and the mask; (B,), NaN for an empty mask."""
    binary, mask = _binary_and_mask(maps, mask, binarisation, value, fraction, hull)
    return nan_where_empty(iou_score(binary, mask), mask, "iou")


@register_metric("hd95", category="localisation", higher_is_better=False, needs=("mask",))
def hd95(
    maps: Tensor,
    mask: Tensor,
    *,
    binarisation: str = "otsu",
    value: float = 0.5,
    fraction: float = 0.1,
    hull: bool = False,
) -> Tensor:
    """95th-percentile Hausdorff distance (pixels/voxels) between binarised map and mask (MONAI's HD95).

    (B,); NaN for an empty mask; the image diagonal when the binarised map is empty. See
    :func:`hausdorff_distance`.
    """
    binary, mask = _binary_and_mask(maps, mask, binarisation, value, fraction, hull)
    return nan_where_empty(hausdorff_distance(binary, mask, 95.0), mask, "hd95")


@register_metric("ssim", category="localisation", higher_is_better=True, needs=("mask",))
def ssim(
    maps: Tensor,
    mask: Tensor,
    *,
    binarisation: str = "otsu",
    value: float = 0.5,
    fraction: float = 0.1,
    hull: bool = False,
) -> Tensor:
    """SSIM between the binarised map and the mask, both in {0, 1} (SIBnet's evaluation); (B,).

    Uses :func:`structural_similarity` with MONAI's defaults (11-wide Gaussian window, sigma 1.5, data range 1).
    NaN for an empty mask.
    """
    binary, mask = _binary_and_mask(maps, mask, binarisation, value, fraction, hull)
    return nan_where_empty(structural_similarity(binary.float(), mask.float()), mask, "ssim")
