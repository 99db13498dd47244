"""Resampling helpers shared by explainers: maps to input resolution, Gaussian blur; one N-d code path."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def to_input_resolution(maps: Tensor, spatial: tuple[int, ...] | torch.Size) -> Tensor:
    """Resize maps ``(B, K, *s)`` to ``(B, K, *spatial)`` by (bi/tri)linear interpolation, ``align_corners=False``.

    This is ``F.interpolate`` as Captum's ``LayerAttribution.interpolate`` and Grad-CAM (Selvaraju et al. 2017)
    use it; maps already at ``spatial`` are returned unchanged. Differentiable.
    """
    spatial = tuple(int(s) for s in spatial)
    if tuple(maps.shape[2:]) == spatial:
        return maps
    mode = _LINEAR_MODES.get(len(spatial))
    if mode is None or maps.ndim - 2 != len(spatial):
        raise ValueError(f"cannot resize maps of shape {tuple(maps.shape)} to spatial size {spatial}")
    return F.interpolate(maps, size=spatial, mode=mode, align_corners=False)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, *spatial)`` along every spatial axis (kernel radius 3 sigma, reflect pad)."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    spatial = x.shape[2:]
    out = x
    for axis in range(len(spatial)):
        moved = out.movedim(2 + axis, -1)
        shape = moved.shape
        line = moved.reshape(-1, 1, shape[-1])
        pad = min(radius, shape[-1] - 1)
        line = F.pad(line, (pad, pad), mode="reflect") if pad > 0 else line
        if pad < radius:
            line = F.pad(line, (radius - pad, radius - pad), mode="replicate")
        line = F.conv1d(line, kernel.view(1, 1, -1))
        out = line.reshape(shape).movedim(-1, 2 + axis)
    return out
