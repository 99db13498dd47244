"""Saliency-to-segmentation transfer: the encoder stays frozen, the decoder learns the masks, Dice is MONAI's."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import DiceMetric

from medexplain.errors import MedexplainError
from medexplain.models import create_model
from medexplain.train.transfer import default_layers, encoder_features, segmentation_dice, train_decoder


def _squares(n: int, spatial_dims: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with one bright box each; the mask is the box."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(n, 1, *[side] * spatial_dims, generator=generator)
    masks = torch.zeros(n, 1, *[side] * spatial_dims)
    for index in range(n):
        lo = torch.randint(0, side // 2, (spatial_dims,), generator=generator)
        width = torch.randint(side // 4, side // 2, (spatial_dims,), generator=generator)
        box = (index, 0, *(slice(int(a), int(a + w)) for a, w in zip(lo, width, strict=True)))
        masks[box] = 1.0
    return images + masks, masks


@pytest.mark.parametrize(("spatial_dims", "side", "n"), [(2, 24, 32), (3, 12, 16)])
def test_decoder_learns_masks_over_a_frozen_encoder(spatial_dims: int, side: int, n: int) -> None:
    encoder = create_model(
        "resnet18", in_channels=1, num_classes=2, spatial_dims=spatial_dims, width=4, small_input=True
    ).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images, masks = _squares(n, spatial_dims, side, seed=0)
    test_images, test_masks = _squares(8, spatial_dims, side, seed=1)
    settings = {"channels": 8, "epochs": 40, "batch_size": 8, "lr": 1e-2, "progress": False}
    segmenter = train_decoder(encoder, images, masks, **settings)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics untouched
    assert encoder.training and not any(p.requires_grad for p in encoder.parameters())
    dice = segmentation_dice(segmenter, test_images, test_masks)
    everywhere = 2 * test_masks.flatten(1).mean(1) / (1 + test_masks.flatten(1).mean(1))  # Dice of all-foreground
    assert float(dice.mean()) > 0.75 and float(dice.median()) > 0.8 and (dice > everywhere).float().mean() >= 0.75
    again = train_decoder(encoder, images, masks, **settings)
    torch.testing.assert_close(again(test_images), segmenter(test_images))  # deterministic under the seed


def test_segmentation_dice_equals_monai_dice_metric() -> None:
    class Fixed(torch.nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits[: len(x)]

    logits = torch.randn(5, 1, 9, 7)
    masks = (torch.rand(5, 1, 9, 7) > 0.6).float()
    ours = segmentation_dice(Fixed(logits), torch.zeros(5, 1, 9, 7), masks)
    reference = DiceMetric(include_background=True, reduction="none")((logits.sigmoid() > 0.5).float(), masks)
    torch.testing.assert_close(ours, reference.squeeze(1).float())


def test_default_layers_and_bad_input() -> None:
    resnet = create_model("resnet18", in_channels=1, width=4)
    assert default_layers(resnet) == ["layer1", "layer2", "layer3", "layer4"]
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3), torch.nn.Flatten())
    assert default_layers(plain) == ["2"]
    features = encoder_features(resnet, torch.randn(3, 1, 64, 64), ["layer1", "layer4"], batch_size=2)
    assert [tuple(f.shape) for f in features] == [(3, 4, 16, 16), (3, 32, 2, 2)]
    with pytest.raises(MedexplainError, match=r"masks of shape \(3, 1, 8, 8\) do not fit images"):
        train_decoder(resnet, torch.randn(3, 1, 16, 16), torch.zeros(3, 1, 8, 8), progress=False)
    with pytest.raises(MedexplainError, match="model has no layer 'layer9'"):
        train_decoder(resnet, torch.randn(3, 1, 16, 16), torch.zeros(3, 1, 16, 16), layers=["layer9"], progress=False)
