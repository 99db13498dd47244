"""Baselines and the registry contract: every model runs in 2D and 3D; interpretable ones pool their evidence."""

from __future__ import annotations

import pytest
import torch

from medexplain.models import MODELS, create_model

LIGHT = [e.name for e in MODELS if e.name.endswith("-light")] + ["resnet18"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", LIGHT)
def test_models_classify_2d_and_3d_inputs(name: str, spatial_dims: int) -> None:
    model = create_model(name, in_channels=2, num_classes=3, spatial_dims=spatial_dims).eval()
    x = torch.randn(2, 2, *[33] * spatial_dims)
    logits = model(x)
    assert logits.shape == (2, 3)
    if MODELS.entry(name).metadata["interpretable"]:
        torch.testing.assert_close(logits, model.evidence_map(x).flatten(2).mean(2))
    # Samples are independent in eval mode: classifying one alone gives the same logits.
    torch.testing.assert_close(model(x[1:]), logits[1:], atol=1e-5, rtol=1e-5)


def test_resnet18_matches_the_published_layout() -> None:
    model = create_model("resnet18", in_channels=3, num_classes=1000)
    # torchvision's resnet18 has 11,689,512 parameters with 1000 classes.
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert isinstance(model.layer4, torch.nn.Sequential) and len(model.layer4) == 2
    small = create_model("resnet18", in_channels=3, num_classes=2, small_input=True)
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_densenet121_runs_in_2d_and_3d(spatial_dims: int) -> None:
    model = create_model("densenet121", in_channels=1, num_classes=2, spatial_dims=spatial_dims).eval()
    assert model(torch.randn(1, 1, *[32] * spatial_dims)).shape == (1, 2)
    assert not MODELS.entry("densenet121").metadata["interpretable"]
