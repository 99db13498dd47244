"""Overlays: hand-checked pixels, so a picture in the report says exactly what the saved map says."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medexplain.data.writers import png_bytes
from medexplain.report.figures import (
    MASK_OUTLINE_RGB,
    is_signed,
    map_rgba,
    overlay,
    to_display_rgb,
    upscale_nearest,
)


def test_zero_map_leaves_the_image_unchanged() -> None:
    image = np.linspace(0, 1, 3 * 8 * 8).reshape(3, 8, 8)
    assert np.array_equal(overlay(image, np.zeros((8, 8))), to_display_rgb(image))


def test_grey_images_display_as_equal_rgb_channels() -> None:
    rgb = to_display_rgb(np.random.default_rng(0).normal(size=(1, 6, 6)))
    assert rgb.shape == (6, 6, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


def test_mask_outline_is_drawn_on_the_boundary_only() -> None:
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    rgb = overlay(np.zeros((1, 9, 9)), None, mask)
    outlined = np.all(rgb == MASK_OUTLINE_RGB, axis=-1)
    expected = mask.copy()
    expected[3:6, 3:6] = False
    assert np.array_equal(outlined, expected)


def test_opacity_follows_relevance_and_sign() -> None:
    attribution = np.zeros((4, 4))
    attribution[0, 0], attribution[3, 3] = 1.0, -1.0
    rgba = map_rgba(attribution, signed=True)
    assert rgba[1, 1, 3] == 0 and rgba[0, 0, 3] > 0.8 and rgba[3, 3, 3] > 0.8
    assert rgba[0, 0, 0] > rgba[0, 0, 2]  # positive: red
    assert rgba[3, 3, 2] > rgba[3, 3, 0]  # negative: blue
    unsigned = map_rgba(attribution, signed=False)
    assert unsigned[3, 3, 3] == 0  # negative evidence is not shown on an unsigned map


def test_signed_detection() -> None:
    assert not is_signed(np.array([0.0, 1.0, 2.0]))
    assert is_signed(np.array([-1.0, 1.0, 2.0]))
    assert not is_signed(np.zeros(3))


def test_png_round_trip_and_upscaling() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (28, 20, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))))
    assert np.array_equal(decoded, rgb)
    big = upscale_nearest(rgb, min_side=192)
    assert big.shape == (28 * 7, 20 * 7, 3)
    assert np.array_equal(big[::7, ::7], rgb)
