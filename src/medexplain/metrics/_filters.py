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
    In 1D and 2D one pass with the outer-product kernel (oneDNN's thin-kernel paths are slower than a square
    kernel there); in 3D one pass per axis, 3k instead of k^3 taps per voxel.
    """
    _, channels, *spatial = x.shape
    dims = len(spatial)
    conv = getattr(F, f"conv{dims}d")
    half = len(window) // 2
    for axes in [tuple(range(dims))] if dims <= 2 else [(axis,) for axis in range(dims)]:
        kernel = window.new_ones([1] * dims)
        for axis in axes:
            shape = [1] * dims
            shape[axis] = len(window)
            kernel = kernel * window.view(shape)
        if same:
            pad = [0, 0] * dims
            for axis in axes:
                pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = half
            small = any(x.shape[2 + axis] <= half for axis in axes)
            x = F.pad(x, pad, mode="replicate" if small else "reflect")
        x = conv(x, kernel.expand(channels, 1, *kernel.shape), groups=channels)
    return x


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """``x`` (N, C, *spatial) blurred by a Gaussian of ``sigma`` (window ``2 * ceil(3 sigma) + 1``), same size."""
    size = 2 * int(torch.tensor(3.0 * sigma).ceil()) + 1
    return separable_filter(x, gaussian_window(size, sigma, x.device, x.dtype), same=True)
