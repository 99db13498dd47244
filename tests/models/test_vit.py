"""The registered vision transformers: MONAI's ViT in 2D and 3D, its layout, its presets and its input checks."""

from __future__ import annotations

import math

import pytest
import torch

from medexplain.errors import MedexplainError
from medexplain.models import MODELS, create_model


def _expected_parameters(c: int, patch: tuple[int, ...], tokens: int, d: int, mlp: int, layers: int, k: int) -> int:
    """Hand count: patch convolution, position embeddings, class token; per block two LayerNorms (plus MONAI's
    unused cross-attention norm), q/k/v and output projections with biases, the MLP; final norm and head."""
    embedding = c * math.prod(patch) * d + d + tokens * d + d
    block = 3 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return embedding + layers * block + 2 * d + d * k + k


@pytest.mark.parametrize(("name", "dims"), [("vit-tiny", 2), ("vit-tiny", 3), ("vit-small", 2), ("vit", 3)])
def test_vit_layout_and_parameter_count(name: str, dims: int) -> None:
    model = create_model(name, in_channels=2, num_classes=3, spatial_dims=dims).eval()
    img, patch = (128, 16) if dims == 2 else (32, 8)
    preset = {"vit-tiny": (64, 128, 4), "vit-small": (192, 384, 6), "vit": (192, 384, 6)}[name]
    d, mlp, layers = preset
    tokens = (img // patch) ** dims
    expected = _expected_parameters(2, (patch,) * dims, tokens, d, mlp, layers, 3)
    assert sum(p.numel() for p in model.parameters()) == expected
    x = torch.randn(3, 2, *[img] * dims)
    logits = model(x)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(model(x[1:]), logits[1:], atol=1e-5, rtol=1e-5)  # samples independent in eval mode
    assert MODELS.entry(name).metadata == {"interpretable": False, "family": "vit"}


def test_vit_takes_its_geometry_and_refuses_other_sizes() -> None:
    model = create_model("vit-tiny", in_channels=1, num_classes=2, spatial_dims=3, img_size=(16, 24, 32),
                         patch_size=(4, 8, 8))  # fmt: skip
    assert model(torch.randn(1, 1, 16, 24, 32)).shape == (1, 2)
    with pytest.raises(MedexplainError, match=r"does not fit a ViT built for img_size \(16, 24, 32\)"):
        model(torch.randn(1, 1, 16, 24, 24))
    with pytest.raises(MedexplainError, match="must be a multiple of patch_size"):
        create_model("vit-tiny", in_channels=1, spatial_dims=2, img_size=30, patch_size=8)
    with pytest.raises(MedexplainError, match="hidden_size 30 must be a multiple of num_heads 4"):
        create_model("vit-tiny", in_channels=1, spatial_dims=2, hidden_size=30)


def test_a_vit_preset_learns_a_separable_task() -> None:
    """Twenty AdamW steps take a 3D vit-tiny from chance to separating bright from dark volumes."""
    torch.manual_seed(0)
    model = create_model("vit-tiny", in_channels=1, num_classes=2, spatial_dims=3, img_size=16, patch_size=4)
    labels = torch.arange(32) % 2
    x = torch.randn(32, 1, 16, 16, 16) + (2.0 * labels - 1.0).view(-1, 1, 1, 1, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == labels).float().mean() == 1.0
