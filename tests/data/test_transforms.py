"""Transforms on hand-computed cases in 2D and 3D, with MONAI as the reference for the intensity statistics."""

from __future__ import annotations

import monai.transforms as mt
import pytest
import torch

from medexplain.data import Sample
from medexplain.data.transforms import (
    Compose,
    CropOrPad,
    NormalizeIntensity,
    Resize,
    ScaleIntensity,
    Window,
    apply_window,
)
from medexplain.errors import MedexplainError


def sample(image: torch.Tensor, **masks: torch.Tensor) -> Sample:
    return Sample(image=image, label=2, labels=torch.tensor([1.0]), masks=masks, meta={"id": "x"})


def centroid(mask: torch.Tensor) -> torch.Tensor:
    """Centre of mass of a ``(1, *spatial)`` mask, in voxel coordinates."""
    coords = torch.nonzero(mask[0]).to(torch.float64)
    return coords.mean(dim=0)


@pytest.mark.parametrize("spatial", [(4, 4), (4, 4, 4)])
def test_area_resize_averages_blocks(spatial: tuple[int, ...]) -> None:
    image = torch.arange(float(torch.Size(spatial).numel())).reshape(1, *spatial)
    out = Resize(2)(sample(image)).image
    assert out.shape == (1, *([2] * len(spatial)))
    blocks = image.reshape(1, *[x for _ in spatial for x in (2, 2)])  # (1, 2, 2, 2, 2[, 2, 2])
    expected = blocks.mean(dim=tuple(range(2, 2 * len(spatial) + 1, 2)))
    assert torch.allclose(out, expected)


def test_linear_upsampling_hand_values_2d_and_3d() -> None:
    # align_corners=False: output i samples input at (i + 0.5) / 2 - 0.5 -> -0.25, 0.25, 0.75, 1.25 (clamped)
    row = torch.tensor([[[0.0, 4.0]]])
    assert torch.allclose(Resize((1, 4), mode="linear")(sample(row)).image, torch.tensor([[[0.0, 1.0, 3.0, 4.0]]]))
    volume = torch.tensor([0.0, 4.0]).reshape(1, 1, 1, 2)
    out = Resize((1, 1, 4))(sample(volume)).image  # auto: an axis grows -> linear
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 1.0, 3.0, 4.0]))


@pytest.mark.parametrize("spatial", [(8, 8), (8, 8, 8)])
def test_nearest_mask_resize_stays_binary_and_keeps_its_centroid(spatial: tuple[int, ...]) -> None:
    mask = torch.zeros(1, *spatial)
    mask[(0, *[slice(2, 4)] * (len(spatial) - 1), slice(4, 6))] = 1
    image = torch.rand(1, *spatial)
    up = Resize(16)(sample(image, lesion=mask))
    resized = up.masks["lesion"]
    assert set(resized.unique().tolist()) == {0.0, 1.0}
    assert resized.sum() == mask.sum() * 2 ** len(spatial)
    assert torch.allclose(centroid(resized), (centroid(mask) + 0.5) * 2 - 0.5)  # pixel centres map exactly
    back = Resize(8)(up)
    assert torch.equal(back.masks["lesion"], mask)
    odd = Resize(13)(sample(image, lesion=mask)).masks["lesion"]  # non-integer factor: within half a pixel
    assert set(odd.unique().tolist()) == {0.0, 1.0}
    assert (centroid(odd) - ((centroid(mask) + 0.5) * 13 / 8 - 0.5)).abs().max() <= 0.5 * 13 / 8
    assert up.label == 2 and up.meta == {"id": "x"} and torch.equal(up.labels, torch.tensor([1.0]))


def test_any_mask_mode_keeps_a_single_pixel_lesion() -> None:
    mask = torch.zeros(1, 8, 8)
    mask[0, 5, 6] = 1  # inside output cell (1, 1) of a 2x2 grid
    nearest = Resize(2)(sample(torch.rand(1, 8, 8), m=mask)).masks["m"]
    kept = Resize(2, mask_mode="any")(sample(torch.rand(1, 8, 8), m=mask)).masks["m"]
    assert nearest.sum() == 0  # nearest samples input pixels (2, 2), (2, 6), (6, 2), (6, 6): all background
    assert torch.equal(kept, torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))


def test_longest_side_keeps_aspect_ratio() -> None:
    assert Resize(longest_side=4).output_shape((6, 8)) == (3, 4)
    assert Resize(longest_side=32).output_shape((10, 64, 20)) == (5, 32, 10)
    with pytest.raises(MedexplainError):
        Resize(4, longest_side=4)
    with pytest.raises(MedexplainError):
        Resize((4, 4))(sample(torch.zeros(1, 2, 2, 2)))


def test_scale_intensity_hand_values_and_monai_reference() -> None:
    image = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[0.0, 1.0], [1.0, 2.0]]])
    out = ScaleIntensity()(sample(image)).image
    assert torch.allclose(out[0], torch.tensor([[0.2, 0.4], [0.6, 1.0]]))
    assert torch.allclose(out[1], torch.tensor([[0.0, 0.1], [0.1, 0.2]]))
    per_channel = ScaleIntensity(channel_wise=True)(sample(image)).image
    assert torch.allclose(per_channel[1], torch.tensor([[0.0, 0.5], [0.5, 1.0]]))
    volume = torch.randn(2, 3, 4, 5) * 7 + 3
    for channel_wise in (False, True):
        reference = mt.ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=channel_wise)(volume)
        assert torch.allclose(
            ScaleIntensity(channel_wise=channel_wise)(sample(volume)).image, torch.as_tensor(reference)
        )
    fixed = ScaleIntensity((0, 255), clip=True)(sample(torch.tensor([[[-10.0, 0.0, 51.0, 300.0]]]))).image
    assert torch.allclose(fixed, torch.tensor([[[0.0, 0.0, 0.2, 1.0]]]))
    assert torch.equal(ScaleIntensity()(sample(torch.full((1, 3, 3), 5.0))).image, torch.zeros(1, 3, 3))


def test_normalize_intensity_given_and_per_image_against_monai() -> None:
    image = torch.tensor([[[1.0, 3.0]], [[10.0, 30.0]]])
    given = NormalizeIntensity(mean=[2.0, 20.0], std=[1.0, 10.0])(sample(image)).image
    assert torch.allclose(given, torch.tensor([[[-1.0, 1.0]], [[-1.0, 1.0]]]))
    volume = torch.randn(2, 3, 4, 5) * 4 + 1
    for channel_wise in (False, True):
        reference = mt.NormalizeIntensity(channel_wise=channel_wise)(volume)
        assert torch.allclose(
            NormalizeIntensity(channel_wise=channel_wise)(sample(volume)).image, torch.as_tensor(reference), atol=1e-5
        )
    assert torch.equal(NormalizeIntensity()(sample(torch.full((1, 2, 2), 3.0))).image, torch.zeros(1, 2, 2))
    with pytest.raises(MedexplainError):
        NormalizeIntensity(mean=1.0)


def test_crop_or_pad_hand_values_2d_and_3d() -> None:
    row = torch.arange(8.0).reshape(1, 1, 8)
    mask = (row > 3).float()
    cropped = CropOrPad((1, 5))(sample(row, m=mask))
    assert torch.equal(cropped.image, torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]]))  # start (8 - 5) // 2 = 1
    assert torch.equal(cropped.masks["m"], torch.tensor([[[0.0, 0.0, 0.0, 1.0, 1.0]]]))
    padded = CropOrPad((3, 3), value=-1.0)(sample(torch.ones(1, 1, 2)))
    assert torch.equal(padded.image, torch.tensor([[[-1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]]]))
    volume = torch.arange(27.0).reshape(1, 3, 3, 3)
    assert torch.equal(CropOrPad(1)(sample(volume)).image, torch.tensor([[[[13.0]]]]))
    assert CropOrPad(6)(sample(volume)).image.sum() == volume.sum()


def test_window_functions_hand_values() -> None:
    x = torch.tensor([-200.0, 39.5, 40.0, 100.0, 240.0])
    # linear, c=40, w=401: (x - 39.5) / 400 + 0.5, clamped to [0, 1]
    assert torch.allclose(apply_window(x, 40, 401), torch.tensor([0.0, 0.5, 0.50125, 0.65125, 1.0]))
    assert torch.allclose(apply_window(x, 40, 400, "linear_exact"), torch.tensor([0.0, 0.49875, 0.5, 0.65, 1.0]))
    assert torch.allclose(apply_window(torch.tensor([40.0]), 40, 400, "sigmoid"), torch.tensor([0.5]))
    assert torch.equal(apply_window(torch.tensor([39.0, 40.0]), 40, 1), torch.tensor([0.0, 1.0]))
    ct = torch.tensor([[[[-1000.0, 40.0, 1000.0]]]])
    assert torch.allclose(Window(40, 401)(sample(ct)).image, torch.tensor([[[[0.0, 0.50125, 1.0]]]]))
    with pytest.raises(MedexplainError):
        Window(40, 0)
    with pytest.raises(MedexplainError):
        Window(40, 10, "gamma")


def test_compose_applies_in_order() -> None:
    image = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])
    out = Compose([ScaleIntensity(), Resize(1)])(sample(image)).image
    assert torch.allclose(out, torch.tensor([[[0.5]]]))
    reverse = Compose([Resize(1), ScaleIntensity()])(sample(image)).image
    assert torch.equal(reverse, torch.zeros(1, 1, 1))  # a constant image scales to 0


def test_model_card_preprocessing_kinds_equal_hand_computed_values() -> None:
    from medexplain.data.preprocessing import preprocessed_channels, preprocessing_transform

    image = torch.tensor([[[-1000.0, 40.0], [240.0, 500.0]]])  # (1, 2, 2), e.g. CT in HU
    sample = Sample(image=image)
    windowed = preprocessing_transform({"intensity": {"window": {"center": 40, "width": 400}}})(sample).image
    # DICOM PS3.3 C.11.2.1.2 linear window: (x - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1]
    torch.testing.assert_close(windowed, torch.tensor([[[0.0, 0.5 / 399 + 0.5], [1.0, 1.0]]]))
    zscored = preprocessing_transform({"intensity": {"zscore": True}})(sample).image
    torch.testing.assert_close(zscored, (image - image.mean()) / image.std(correction=0))
    scaled = preprocessing_transform({"intensity": {"scale": [-1000, 1000]}})(sample).image
    torch.testing.assert_close(scaled, torch.tensor([[[0.0, 0.52], [0.62, 0.75]]]))
    rgb = preprocessing_transform({"channels": 3, "size": 4})(sample).image
    assert rgb.shape == (3, 4, 4) and torch.equal(rgb[0], rgb[2])
    grey = preprocessing_transform({"channels": 1})(Sample(image=torch.stack([image[0], 2 * image[0], 3 * image[0]])))
    torch.testing.assert_close(grey.image, 2 * image)
    assert preprocessed_channels({"channels": 3}, 1) == 3 and preprocessed_channels({}, 1) == 1
    with pytest.raises(MedexplainError, match="unknown key 'sise'"):
        preprocessing_transform({"sise": 4})
    with pytest.raises(MedexplainError, match="resampling to a spacing is not supported"):
        preprocessing_transform({"spacing": [1, 1]})
