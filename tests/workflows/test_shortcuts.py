"""The shortcut check's regions and ratios on hand-counted cases, 2D and 3D."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medexplain.workflows.shortcuts import background_region, border_region, density_ratio, relevance_share


def test_the_border_band_is_the_outer_tenth_of_every_side() -> None:
    assert int(border_region((10, 10)).sum()) == 100 - 8 * 8
    assert int(border_region((10, 10, 10)).sum()) == 1000 - 8**3
    assert int(border_region((20, 30)).sum()) == 600 - 16 * 24
    band = border_region((5, 5), width=0.01)  # at least one pixel
    assert int(band.sum()) == 25 - 9 and not band[1:-1, 1:-1].any()


def test_the_background_is_the_darkest_level_in_every_channel() -> None:
    image = torch.zeros(3, 8, 8)
    image[:, 2:6, 2:6] = torch.rand(3, 4, 4) + 1.0  # a bright field of view inside a black frame
    image[0, 0, 0] = 0.5  # one frame pixel lit in one channel is not background
    background = background_region(image)
    expected = torch.ones(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = False
    expected[0, 0] = False
    assert torch.equal(background, expected)


def test_relevance_share_counts_the_positive_part() -> None:
    relevance = torch.tensor([[3.0, -5.0], [1.0, 0.0]])
    region = torch.tensor([[True, True], [False, False]])
    assert relevance_share(relevance, region) == pytest.approx(3 / 4)
    assert math.isnan(relevance_share(-relevance.abs(), region))


def test_the_density_ratio_compares_relevance_per_pixel_inside_and_outside() -> None:
    assert density_ratio(np.array([0.5]), np.array([0.25])) == pytest.approx((0.5 / 0.25) / (0.5 / 0.75))  # 3
    assert density_ratio(np.array([0.2, 0.4]), np.array([0.3, 0.3])) == pytest.approx(1.0)
    rows = density_ratio(np.array([[0.5, 0.5], [0.2, 0.4]]), np.array([[0.25, 0.25], [0.3, 0.3]]))
    np.testing.assert_allclose(rows, [3.0, 1.0])
