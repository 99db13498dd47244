"""Binarisation and overlap metrics: equal MONAI (HD95, Dice, IoU, SSIM) and scikit-image (Otsu), 2D and 3D."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu

from medexplain.errors import MedexplainError
from medexplain.metrics import (
    EmptyMaskWarning,
    binarise,
    convex_hull,
    dice_coefficient,
    get_metric,
    hausdorff_distance,
    iou_score,
    otsu_threshold,
    structural_similarity,
    top_fraction,
)

SHAPES = {"2d": (4, 40, 48), "3d": (3, 20, 24, 22)}


def _blobs(shape: tuple[int, ...], seed: int, level: float = 0.5) -> torch.Tensor:
    """Smooth random blobs: thresholded box-filtered noise, several components per sample."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(shape, generator=g)
    pool = getattr(F, f"avg_pool{len(shape) - 1}d")
    return pool(noise[:, None], 5, 1, 2)[:, 0] > level


def _monai(fn, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(pred[:, None].float(), target[:, None].float(), include_background=True, **kwargs)[:, 0]


@pytest.mark.parametrize("dims", SHAPES)
def test_hd95_dice_iou_equal_monai(dims) -> None:
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

    pred, target = _blobs(SHAPES[dims], 0, 0.52), _blobs(SHAPES[dims], 1)
    expected_hd = _monai(compute_hausdorff_distance, pred, target, percentile=95)
    torch.testing.assert_close(hausdorff_distance(pred, target), expected_hd, atol=1e-4, rtol=0)
    expected_hd100 = _monai(compute_hausdorff_distance, pred, target)
    torch.testing.assert_close(hausdorff_distance(pred, target, 100.0), expected_hd100, atol=1e-4, rtol=0)
    torch.testing.assert_close(dice_coefficient(pred, target), _monai(compute_dice, pred, target), atol=1e-4, rtol=0)
    torch.testing.assert_close(iou_score(pred, target), _monai(compute_iou, pred, target), atol=1e-4, rtol=0)
    assert (expected_hd > 0).all()  # the inputs do not overlap trivially


@pytest.mark.parametrize("dims", SHAPES)
def test_ssim_equals_monai(dims) -> None:
    from monai.metrics import SSIMMetric

    g = torch.Generator().manual_seed(2)
    a = torch.rand(SHAPES[dims], generator=g)
    b = (a + 0.3 * torch.rand(SHAPES[dims], generator=g)).clamp(0, 1)
    expected = SSIMMetric(spatial_dims=len(SHAPES[dims]) - 1, data_range=1.0)(a[:, None], b[:, None])[:, 0]
    torch.testing.assert_close(structural_similarity(a, b), expected, atol=1e-4, rtol=0)
    binary, mask = _blobs(SHAPES[dims], 3), _blobs(SHAPES[dims], 4)
    expected = SSIMMetric(spatial_dims=len(SHAPES[dims]) - 1)(binary[:, None].float(), mask[:, None].float())[:, 0]
    torch.testing.assert_close(get_metric("ssim")(binary, mask), expected, atol=1e-4, rtol=0)


def test_hausdorff_hand_cases() -> None:
    a = torch.zeros(1, 10, 10, dtype=torch.bool)
    b = torch.zeros(1, 10, 10, dtype=torch.bool)
    a[0, 0, 0] = True
    b[0, 3, 4] = True
    assert hausdorff_distance(a, b).item() == pytest.approx(5.0)
    assert hausdorff_distance(a, a).item() == 0.0
    # squares 0..4 and 2..6: every surface point of one is within 2 px of the other, corners at sqrt(8)
    a[:] = False
    b[:] = False
    a[0, 0:5, 0:5] = True
    b[0, 2:7, 2:7] = True
    assert hausdorff_distance(a, b, 100.0).item() == pytest.approx(math.sqrt(8))


def test_empty_prediction_and_empty_mask() -> None:
    mask = _blobs((2, 16, 16), 0)
    mask[1] = False
    empty = torch.zeros_like(mask)
    assert hausdorff_distance(empty[:1], mask[:1]).item() == pytest.approx(math.sqrt(2 * 15**2))
    assert math.isnan(hausdorff_distance(empty[1:], mask[1:]).item())
    for name in ("dice", "iou", "hd95", "ssim"):
        with pytest.warns(EmptyMaskWarning):
            scores = get_metric(name)(mask.float(), mask)
        assert torch.isnan(scores[1]) and not torch.isnan(scores[0])


@pytest.mark.parametrize("shape", [(3, 30, 31), (2, 10, 12, 14)])
def test_otsu_equals_scikit_image(shape) -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(shape, generator=g) ** 3
    expected = torch.tensor([threshold_otsu(m.numpy()) for m in maps])
    torch.testing.assert_close(otsu_threshold(maps), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(binarise(maps), maps > expected.view(-1, *[1] * (len(shape) - 1)))


def test_top_fraction_and_value_thresholds() -> None:
    maps = torch.arange(100.0).view(1, 10, 10)
    assert top_fraction(maps, 0.07).sum().item() == 7
    assert torch.equal(top_fraction(maps, 0.07).flatten().nonzero().flatten(), torch.arange(93, 100))
    assert binarise(maps, "value", value=89.5).sum().item() == 10
    with pytest.raises(MedexplainError, match="unknown binarisation"):
        binarise(maps, "median")


def test_convex_hull_fills_2d_and_3d() -> None:
    ring = torch.zeros(1, 9, 9, dtype=torch.bool)
    ring[0, 2, 2:7] = ring[0, 6, 2:7] = ring[0, 2:7, 2] = ring[0, 2:7, 6] = True
    filled = torch.zeros_like(ring)
    filled[0, 2:7, 2:7] = True
    assert torch.equal(convex_hull(ring), filled)
    triangle = torch.zeros(1, 5, 5, dtype=torch.bool)
    triangle[0, 0, 0] = triangle[0, 0, 4] = triangle[0, 4, 0] = True
    assert convex_hull(triangle).sum().item() == 15  # lattice points with i + j <= 4
    shell = torch.zeros(1, 7, 7, 7, dtype=torch.bool)
    shell[0, 1:6, 1:6, 1:6] = True
    shell[0, 2:5, 2:5, 2:5] = False
    assert convex_hull(shell).sum().item() == 125
    line = torch.zeros(1, 5, 5, dtype=torch.bool)
    line[0, 2, :] = True
    assert torch.equal(convex_hull(line), line)  # no area: unchanged


@pytest.mark.parametrize("shape", [(2, 24, 24), (2, 14, 14, 14)])
def test_perfect_and_inverted_maps(shape) -> None:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[(slice(None), *tuple(slice(3, n // 2 + 2) for n in shape[1:]))] = True
    perfect = mask.float() * 0.9 + 0.05
    for name, best in (("dice", 1.0), ("iou", 1.0), ("hd95", 0.0), ("ssim", 1.0)):
        torch.testing.assert_close(get_metric(name)(perfect, mask), torch.full((2,), best), atol=1e-5, rtol=0)
    assert torch.equal(get_metric("dice")(1 - perfect, mask), torch.zeros(2))
    assert (get_metric("hd95")(1 - perfect, mask) > 0).all()


def test_overlap_batched_equals_per_sample_and_validates() -> None:
    maps = torch.rand(3, 12, 12, 12, generator=torch.Generator().manual_seed(1))
    mask = _blobs((3, 12, 12, 12), 2)
    for name in ("dice", "iou", "hd95", "ssim"):
        metric = get_metric(name)
        batched = metric(maps, mask, binarisation="top-k", fraction=0.2, hull=True)
        single = torch.cat(
            [metric(maps[i : i + 1], mask[i : i + 1], binarisation="top-k", fraction=0.2, hull=True) for i in range(3)]
        )
        torch.testing.assert_close(batched, single)
        torch.testing.assert_close(metric(maps[:, None], mask, binarisation="top-k", fraction=0.2, hull=True), batched)
    with pytest.raises(MedexplainError, match="differ"):
        get_metric("hd95")(maps, mask[:, :-1])
    with pytest.raises(MedexplainError, match="win_size"):
        structural_similarity(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


@pytest.mark.parametrize("dense", [0, 10**9], ids=["k-d-tree", "distance-transform"])
def test_hd95_both_search_paths_match_a_dense_reference(monkeypatch, dense: int) -> None:
    from medexplain.metrics import overlap
    from medexplain.metrics.overlap import surface

    monkeypatch.setattr(overlap, "_DENSE_SURFACE", dense)
    pred, target = _blobs((2, 20, 20, 20), 5), _blobs((2, 20, 20, 20), 6)

    expected = []
    for p, t in zip(surface(pred), surface(target), strict=True):
        d = torch.cdist(p.nonzero().double(), t.nonzero().double())
        expected.append(max(torch.quantile(d.amin(1), 0.95), torch.quantile(d.amin(0), 0.95)))
    np.testing.assert_allclose(hausdorff_distance(pred, target).numpy(), expected, atol=1e-5)
