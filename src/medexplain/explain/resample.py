"""Resampling of maps to the input grid, shared by explainers; one N-d code path."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medexplain.ndimage import LINEAR_MODES


def to_input_resolution(maps: Tensor, spatial: tuple[int, ...] | torch.Size) -> Tensor:
    """Resize maps ``(B, K, *s)`` to ``(B, K, *spatial)`` by (bi/tri)linear interpolation, ``align_corners=False``.

    This is ``F.interpolate`` as Captum's ``LayerAttribution.interpolate`` and Grad-CAM (Selvaraju et al. 2017)
    use it; maps already at ``spatial`` are returned unchanged. Differentiable.
    """
    spatial = tuple(int(s) for s in spatial)
    if tuple(maps.shape[2:]) == spatial:
        return maps
    mode = LINEAR_MODES.get(len(spatial))
    if mode is None or maps.ndim - 2 != len(spatial):
        raise ValueError(f"cannot resize maps of shape {tuple(maps.shape)} to spatial size {spatial}")
    return F.interpolate(maps, size=spatial, mode=mode, align_corners=False)


def patches_to_input(
    maps: Tensor, spatial: tuple[int, ...] | torch.Size, patch_size: int | Sequence[int], stride: int | Sequence[int]
) -> Tensor:
    """Place a per-patch map ``(B, K, *s)`` at its patches' centres and interpolate linearly to ``(B, K, *spatial)``.

    Position ``i`` of the coarse map describes the input patch ``[stride * i, stride * i + patch_size)`` (a
    bag-of-local-features model, Brendel & Bethge, ICLR 2019), so its value belongs at input coordinate
    ``stride * i + (patch_size - 1) / 2``. Input pixels between two centres interpolate linearly; pixels beyond the
    first or last centre take its value. A plain resize of the grid to the input size instead stretches it over
    the pixels no patch covers, moving values by up to ``stride`` pixels. ``patch_size`` and ``stride`` are one int
    or one per axis. Differentiable; one code path for N-d.
    """
    spatial = tuple(int(n) for n in spatial)
    patches = (patch_size,) * len(spatial) if isinstance(patch_size, int) else tuple(patch_size)
    strides = (stride,) * len(spatial) if isinstance(stride, int) else tuple(stride)
    if maps.ndim - 2 != len(spatial) or len(patches) != len(spatial) or len(strides) != len(spatial) or min(
        *patches, *strides
    ) < 1:
        raise ValueError(f"cannot place {tuple(maps.shape)} ({patch_size}-px patches, stride {stride}) on {spatial}")
    out = maps
    for axis, size in enumerate(spatial):
        cells = out.shape[2 + axis]
        position = torch.arange(size, dtype=maps.dtype, device=maps.device)
        grid = ((position - (patches[axis] - 1) / 2) / strides[axis]).clamp(0, cells - 1)
        low = grid.floor().long()
        high = (low + 1).clamp(max=cells - 1)
        weight = (grid - low).view(-1, *[1] * (len(spatial) - axis - 1))
        out = out.index_select(2 + axis, low) * (1 - weight) + out.index_select(2 + axis, high) * weight
    return out
