"""N-d image operations shared by every layer: separable Gaussian filtering and linear interpolation modes.

One code path for 1D, 2D and 3D (``(N, C, *spatial)``): SSIM windows, blurred baselines of explainers and metrics,
resizing of images and maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
"""``F.interpolate``'s linear mode for each number of spatial dimensions."""


def gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Normalised 1D Gaussian ``(size,)`` centred on the middle tap."""
    offsets = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-((offsets / sigma) ** 2) / 2)
    return window / window.sum()


def _band_matrix(window: Tensor, size: int) -> Tensor:
    """``(size, size - k + 1)`` matrix whose product with a line of ``size`` values is its 'valid' correlation
    with ``window`` (k taps): column ``j`` holds the window at rows ``j .. j + k - 1``."""
    rows, columns = torch.arange(size, device=window.device), torch.arange(size - len(window) + 1, device=window.device)
    taps = rows[:, None] - columns
    inside = (taps >= 0) & (taps < len(window))
    return torch.where(inside, window[taps.clamp(0, len(window) - 1)], window.new_zeros(()))


def separable_filter(x: Tensor, window: Tensor, *, same: bool = False) -> Tensor:
    """Filter ``x`` (N, C, *spatial) with ``window`` along every spatial axis, channels separately.

    ``same=False``: 'valid' output (no padding, as MONAI's SSIM); ``same=True``: reflect-padded, same size.
    Each axis is one matrix product with a banded matrix (:func:`_band_matrix`): on a CPU, BLAS runs these
    several times faster than a depthwise convolution with the k^d-tap (or k-tap) kernel, although it
    multiplies the zeros of the band too.
    """
    half = len(window) // 2
    for dim in range(2, x.ndim):
        if same:
            pad = [0, 0] * (x.ndim - 2)
            pad[2 * (x.ndim - 1 - dim)] = pad[2 * (x.ndim - 1 - dim) + 1] = half
            x = F.pad(x, pad, mode="replicate" if x.shape[dim] <= half else "reflect")
        band = _band_matrix(window, x.shape[dim])
        if dim == x.ndim - 1:
            x = x @ band
        else:  # (rows before, size, positions after): the band multiplies from the left
            lines = x.reshape(-1, x.shape[dim], math.prod(x.shape[dim + 1 :]))
            x = (band.t() @ lines).reshape(*x.shape[:dim], band.shape[1], *x.shape[dim + 1 :])
    return x


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """``x`` (N, C, *spatial) blurred by a Gaussian of ``sigma`` (window ``2 * ceil(3 sigma) + 1``), same size.

    Reflect padding (replicate along axes shorter than the window's half); ``sigma <= 0`` returns a copy.
    """
    if sigma <= 0:
        return x.clone()
    size = 2 * int(torch.tensor(3.0 * sigma).ceil()) + 1
    return separable_filter(x, gaussian_window(size, sigma, x.device, x.dtype), same=True)
