"""Separable Gaussian filtering in any number of spatial dimensions (SSIM windows, blurred baselines)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Normalised 1D Gaussian ``(size,)`` centred on the middle tap."""
    offsets = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-((offsets / sigma) ** 2) / 2)
    return window / window.sum()


def separable_filter(x: Tensor, window: Tensor, *, same: bool = False) -> Tensor:
    """Filter ``x`` (N, C, *spatial) with ``window`` along every spatial axis, channels separately.

    ``same=False``: 'valid' output (no padding, as MONAI's SSIM); ``same=True``: reflect-padded, same size.
    """
    _, channels, *spatial = x.shape
    conv = getattr(F, f"conv{len(spatial)}d")
    half = len(window) // 2
    for axis in range(len(spatial)):
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + axis] = len(window)
        kernel = window.view(shape).expand(channels, *shape[1:])
        if same:
            pad = [0, 0] * len(spatial)
            pad[2 * (len(spatial) - 1 - axis)] = pad[2 * (len(spatial) - 1 - axis) + 1] = half
            x = F.pad(x, pad, mode="reflect" if x.shape[2 + axis] > half else "replicate")
        x = conv(x, kernel, groups=channels)
    return x


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """``x`` (N, C, *spatial) blurred by a Gaussian of ``sigma`` (window ``2 * ceil(3 sigma) + 1``), same size."""
    size = 2 * int(torch.tensor(3.0 * sigma).ceil()) + 1
    return separable_filter(x, gaussian_window(size, sigma, x.device, x.dtype), same=True)
