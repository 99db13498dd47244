"""Spatial transformer for 2D and 3D images: warping, composition and integration of displacement fields.

Convention used throughout :mod:`medexplain.simulate`:

- A displacement field ``u`` has shape ``(B, D, *spatial)`` with ``D = len(spatial)``; channel ``k`` is the
  displacement along spatial axis ``k`` (array order: ``(H, W)`` in 2D, ``(D, H, W)`` in 3D), in **voxel units**.
- :func:`warp` *pulls*: ``warp(x, u)(p) = x(p + u(p))`` (linear interpolation, Jaderberg et al. 2015). The
  sampling map is ``phi(p) = p + u(p)``; the tissue that ends up at ``p`` comes from ``phi(p)``.
- Normalised coordinates (``[-1, 1]``, ``align_corners=True``, last axis in x, y, z order) exist only inside
  :func:`warp`; use :func:`to_normalized` to hand a field to other grid_sample users.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medexplain.errors import MedexplainError


def identity_grid(spatial: Sequence[int], *, device: torch.device | None = None, dtype=torch.float32) -> Tensor:
    """Voxel coordinates ``(D, *spatial)``: channel ``k`` holds the index along spatial axis ``k``."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _check_field(field: Tensor, spatial: Sequence[int]) -> None:
    if field.dim() != len(spatial) + 2 or field.shape[1] != len(spatial) or tuple(field.shape[2:]) != tuple(spatial):
        raise MedexplainError(
            f"displacement field of shape {tuple(field.shape)} does not fit images with spatial shape "
            f"{tuple(spatial)}: expected (B, {len(spatial)}, {', '.join(map(str, spatial))})"
        )


def to_normalized(positions: Tensor) -> Tensor:
    """Voxel positions ``(B, D, *spatial)`` -> grid_sample grid ``(B, *spatial, D)`` (x, y, z order, [-1, 1])."""
    _, dims, *spatial = positions.shape
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], device=positions.device, dtype=positions.dtype)
    normalized = positions * scale.view(1, dims, *([1] * dims)) - 1.0
    return normalized.movedim(1, -1).flip(-1)


def warp(image: Tensor, displacement: Tensor, *, mode: str = "bilinear", padding_mode: str = "border") -> Tensor:
    """Resample ``image (B, C, *spatial)`` at ``p + displacement(p)``; returns ``(B, C, *spatial)``.

    ``displacement`` is ``(B, D, *spatial)`` in voxel units. ``mode="bilinear"`` is trilinear in 3D.
    """
    _, _, *spatial = image.shape
    _check_field(displacement, spatial)
    if displacement.shape[0] != image.shape[0]:
        raise MedexplainError(f"{image.shape[0]} images but {displacement.shape[0]} displacement fields")
    positions = identity_grid(spatial, device=image.device, dtype=displacement.dtype) + displacement
    grid = to_normalized(positions).to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def compose(first: Tensor, second: Tensor) -> Tensor:
    """Displacement of warping by ``first`` and then by ``second``: ``second + warp(first, second)``.

    ``warp(warp(x, first), second) ~ warp(x, compose(first, second))`` (exact up to interpolation): the
    sampling maps compose as ``phi_first(phi_second(p))``. Both fields ``(B, D, *spatial)``, voxel units.
    """
    return second + warp(first, second)


def integrate_velocity(velocity: Tensor, steps: int = 7) -> Tensor:
    """Displacement of the flow of a stationary ``velocity (B, D, *spatial)`` by scaling and squaring.

    ``exp(v)`` is computed as ``(exp(v / 2**steps))**(2**steps)`` with ``exp(w) ~ id + w`` for the small field
    (Arsigny et al., MICCAI 2006; Dalca et al., MICCAI 2018). The result is a diffeomorphism up to
    discretisation, and ``integrate_velocity(-v)`` is its inverse. ``steps=0`` returns ``velocity`` unchanged.
    """
    if steps < 0:
        raise MedexplainError(f"integration steps must be >= 0, got {steps}")
    displacement = velocity / (2**steps)
    for _ in range(steps):
        displacement = compose(displacement, displacement)
    return displacement
