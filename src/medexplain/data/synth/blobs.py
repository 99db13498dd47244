"""Noise images (2D) or volumes (3D) where class 1 holds one bright ball-shaped lesion at a random position.

The simplest localisation task with exact ground truth: every sample is white Gaussian noise (standard deviation
``noise``); class-1 samples add ``contrast`` inside a ball of ``radius`` voxels with a soft edge (a logistic ramp of
width about 0.5 voxel), its centre uniform over the positions at least ``radius + 0.5`` from every border. Even
samples are class 0, odd ones class 1. ``masks`` is the ball (radius ``radius``) for class 1 and empty for class 0,
so a map can be scored against it with the localisation metrics. Generated in memory (no files), deterministic
under the seed; sample ``i`` depends on (seed, i) only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medexplain.data.synth._common import check_request, sample_streams
from medexplain.errors import MedexplainError


@dataclass(frozen=True)
class BlobSet:
    """``images`` float32 ``(n, 1, *spatial)``, ``labels`` int64 ``(n,)``, ``masks`` bool ``(n, *spatial)``,
    ``centres`` float64 ``(n, d)`` (class 0: where the lesion would be)."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    centres: np.ndarray


def blobs(
    n: int, spatial_dims: int = 3, size: int = 16, seed: int = 0, *, radius: float = 2.5, contrast: float = 1.5,
    noise: float = 0.5,
) -> BlobSet:
    """``n`` samples of side ``size`` (see the module docstring)."""
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise MedexplainError(f"spatial_dims={spatial_dims!r}: blob data are 2D or 3D (dims must be 2 or 3)")
    check_request(f"{spatial_dims}D blobs", n, size, seed, int(2 * radius + 2), 256)
    grid = np.indices((size,) * spatial_dims, dtype=np.float64)
    images, masks, centres = [], [], []
    for index in range(n):
        position_rng, noise_rng = sample_streams("blobs", seed, index, 2)
        centre = position_rng.uniform(radius + 0.5, size - 1 - radius - 0.5, spatial_dims)
        distance = np.sqrt(((grid - centre.reshape(-1, *[1] * spatial_dims)) ** 2).sum(axis=0))
        image = noise * noise_rng.standard_normal(distance.shape)
        lesion = index % 2 == 1
        if lesion:
            image += contrast / (1.0 + np.exp(-4.0 * (radius - distance)))
        images.append(image[None].astype(np.float32))
        masks.append((distance <= radius) & lesion)
        centres.append(centre)
    return BlobSet(np.stack(images), np.arange(n, dtype=np.int64) % 2, np.stack(masks), np.stack(centres))
