"""Seeded, batched augmentation for medical images in 2D and 3D: flips, small affine warps, intensity jitter.

All randomness comes from the given ``torch.Generator``, so a run is reproducible and resumable. The warp is
one ``affine_grid``/``grid_sample`` per batch (bilinear/trilinear, zero padding after intensity normalisation
means "background at the mean"); rotations are about every axis pair, so 3D volumes rotate in 3D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """Random flips along every spatial axis, rotation, scaling, translation and brightness/contrast jitter.

    Attributes:
        flip: probability of flipping each spatial axis.
        rotation_degrees: maximum rotation in each axis plane.
        scale: maximum relative zoom (0.1 = 0.9x..1.1x).
        translation: maximum shift as a fraction of the image side.
        brightness: maximum additive shift (intensity units after normalisation).
        contrast: maximum relative contrast change about the image mean.
    """

    flip: float = 0.5
    rotation_degrees: float = 10.0
    scale: float = 0.1
    translation: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment ``x`` ``(B, C, *spatial)``; the random draws are made on the CPU ``generator``."""
        b, _, *spatial = x.shape
        dims = len(spatial)

        def uniform(*shape: int) -> Tensor:
            return (2 * torch.rand(shape, generator=generator) - 1).to(x.device, x.dtype)

        flips = torch.rand((b, dims), generator=generator) < self.flip
        for axis in range(dims):
            chosen = flips[:, axis].to(x.device).view(b, *[1] * (dims + 1))
            x = torch.where(chosen, x.flip(2 + axis), x)

        theta = torch.eye(dims, dtype=x.dtype, device=x.device).repeat(b, 1, 1)
        for i, j in combinations(range(dims), 2):
            angle = uniform(b) * math.radians(self.rotation_degrees)
            rotation = torch.eye(dims, dtype=x.dtype, device=x.device).repeat(b, 1, 1)
            rotation[:, i, i], rotation[:, j, j] = angle.cos(), angle.cos()
            rotation[:, i, j], rotation[:, j, i] = -angle.sin(), angle.sin()
            theta = rotation @ theta
        theta = theta * (1 + self.scale * uniform(b)).view(b, 1, 1)
        shift = 2 * self.translation * uniform(b, dims)
        grid = F.affine_grid(torch.cat([theta, shift.unsqueeze(2)], 2), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        mean = x.flatten(2).mean(2).view(b, -1, *[1] * dims)
        contrast = (1 + self.contrast * uniform(b)).view(b, *[1] * (dims + 1))
        brightness = (self.brightness * uniform(b)).view(b, *[1] * (dims + 1))
        return (x - mean) * contrast + mean + brightness
