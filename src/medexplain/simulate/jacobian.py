"""Jacobian determinant maps of deformations ``p -> p + u(p)`` by finite differences, 2D and 3D.

``det J < 1`` where the deformation shrinks a neighbourhood, ``> 1`` where it grows, ``<= 0`` where it folds
(the map is not locally invertible). Used to visualise simulated disease effects (Liu et al., IPMI 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medexplain.errors import MedexplainError


def jacobian_matrix(displacement: Tensor) -> Tensor:
    """``I + grad u`` for ``displacement (B, D, *spatial)`` in voxel units; returns ``(B, *spatial, D, D)``.

    Entry ``[..., i, k] = delta_ik + d u_i / d p_k`` with central differences inside and one-sided differences
    at the border (``torch.gradient``, unit spacing); every spatial size must be at least 2.
    """
    _, dims, *spatial = displacement.shape
    if dims != len(spatial):
        raise MedexplainError(f"displacement field of shape {tuple(displacement.shape)}: expected (B, D, *spatial)")
    if min(spatial) < 2:
        raise MedexplainError(f"spatial shape {tuple(spatial)}: every axis needs at least 2 voxels for a Jacobian")
    derivatives = torch.gradient(displacement, dim=tuple(range(2, 2 + dims)))
    gradient = torch.stack(derivatives, dim=-1).movedim(1, -2)  # (B, *spatial, D_component, D_axis)
    return gradient + torch.eye(dims, device=displacement.device, dtype=displacement.dtype)


def jacobian_determinant(displacement: Tensor) -> Tensor:
    """Determinant of the Jacobian of ``p -> p + u(p)``: ``(B, D, *spatial) -> (B, 1, *spatial)``."""
    return torch.linalg.det(jacobian_matrix(displacement)).unsqueeze(1)


def folding_rate(determinant: Tensor) -> Tensor:
    """Share of voxels with ``det J <= 0`` per sample: ``(B, 1, *spatial) -> (B,)``."""
    return (determinant <= 0).flatten(1).float().mean(1)
