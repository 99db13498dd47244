"""Toy networks and data sets for the concept-analysis tests, where the truth is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from medexplain.data.sample import Sample

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@pytest.fixture(autouse=True)
def _single_threaded_blas():
    """The probes fit many small logistic regressions; BLAS threads on 2 shared cores only slow them down."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class PooledHead(nn.Module):
    """``features`` (a 1x1 convolution: the probed layer A) -> spatial mean -> ``head``.

    With a linear head, d logit_k / d A summed over space is ``head.weight[k]``: the TCAV directional derivative
    along a unit direction u is exactly ``head.weight[k] . u``.
    """

    def __init__(self, in_channels: int, channels: int, classes: int, spatial_dims: int, hidden: int = 0) -> None:
        super().__init__()
        self.features = CONV[spatial_dims](in_channels, channels, 1)
        self.head = (
            nn.Linear(channels, classes)
            if not hidden
            else nn.Sequential(nn.Linear(channels, hidden), nn.Tanh(), nn.Linear(hidden, classes))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        return self.head(a.flatten(2).mean(-1))


@pytest.fixture
def pooled_head():
    return PooledHead


def make_samples(images: torch.Tensor, labels: np.ndarray, concepts: np.ndarray | None) -> list[Sample]:
    """Samples ``(N, C, *spatial)`` with class labels ``(N,)`` and concept annotations ``(N, L)``."""
    return [
        Sample(
            image=images[i],
            label=int(labels[i]),
            labels=None if concepts is None else torch.as_tensor(concepts[i], dtype=torch.float32),
            meta={"id": f"img{i:04d}"},
        )
        for i in range(len(images))
    ]


@pytest.fixture
def samples():
    return make_samples


def encoded_concepts(n: int, channels: int, seed: int, spatial: tuple[int, ...] = (6, 6)):
    """Images whose identity 1x1 convolution encodes concept 0 in channel 0 and concept 1 in channel 1.

    Returns ``images (N, C, *spatial)`` float64 and concepts ``(N, 2)``: each concept adds 0.4 to its channel at
    every position over unit Gaussian noise, so the mean-pooled channel separates it well but not perfectly
    (2.4 noise standard deviations at 36 positions).
    """
    rng = np.random.default_rng(seed)
    concepts = rng.integers(0, 2, size=(n, 2)).astype(float)
    images = rng.normal(size=(n, channels, *spatial))
    for k in range(2):
        images[:, k] += 0.4 * concepts[:, k].reshape(n, *[1] * len(spatial))
    return torch.from_numpy(images), concepts


@pytest.fixture
def encoded():
    return encoded_concepts
