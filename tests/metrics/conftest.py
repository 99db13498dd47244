"""Small fixed models and inputs for the metric tests (2D and 3D)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn


def tiny_classifier(spatial_dims: int, in_channels: int = 1, classes: int = 3, seed: int = 0) -> nn.Module:
    """Conv -> ReLU -> pool -> linear, with fixed random weights, in eval mode."""
    torch.manual_seed(seed)
    conv = getattr(nn, f"Conv{spatial_dims}d")
    pool = getattr(nn, f"AdaptiveAvgPool{spatial_dims}d")
    return nn.Sequential(
        conv(in_channels, 4, 3, padding=1), nn.ReLU(), pool(2), nn.Flatten(), nn.Linear(4 * 2**spatial_dims, classes)
    ).eval()


class Linear(nn.Module):
    """``logit_k = sum(w_k * x)``: the exact attribution of class k is ``w_k * x`` (a hand-checkable model)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, C, *spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bc...,kc...->bk", x, self.weight)


@pytest.fixture
def quantus():
    """Quantus imported behind the torchvision stub (tests/conftest.py), its warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus as q
    return q
