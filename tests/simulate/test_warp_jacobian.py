"""Spatial transformer and Jacobian maps against hand-derived fields and scipy, in 2D and 3D."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medexplain.errors import MedexplainError
from medexplain.simulate import (
    compose,
    cycle_loss,
    folding_rate,
    identity_grid,
    integrate_velocity,
    jacobian_determinant,
    warp,
)

SHAPES = {2: (13, 17), 3: (9, 11, 10)}


def linear_field(matrix: torch.Tensor, spatial: tuple[int, ...], offset: torch.Tensor | None = None) -> torch.Tensor:
    """Displacement of the affine map ``p -> A (p - c) + c + t`` about the centre ``c``: ``(1, D, *spatial)``."""
    dims = len(spatial)
    grid = identity_grid(spatial, dtype=torch.float64)
    centre = torch.tensor([(n - 1) / 2 for n in spatial], dtype=torch.float64).view(dims, *([1] * dims))
    relative = grid - centre
    mapped = torch.einsum("ij,j...->i...", matrix.double(), relative) + centre
    if offset is not None:
        mapped = mapped + offset.double().view(dims, *([1] * dims))
    return (mapped - grid).unsqueeze(0)


def rotation(dims: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    planar = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    if dims == 2:
        return planar
    matrix = torch.eye(3, dtype=torch.float64)
    matrix[1:, 1:] = planar
    return matrix


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_field_leaves_image_unchanged(dims: int) -> None:
    image = torch.rand(2, 3, *SHAPES[dims])
    out = warp(image, torch.zeros(2, dims, *SHAPES[dims]))
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_warp_matches_scipy_map_coordinates(dims: int) -> None:
    """Pull convention ``out(p) = x(p + u(p))`` with linear interpolation, checked against scipy (order 1)."""
    spatial = SHAPES[dims]
    image = torch.rand(1, 1, *spatial, dtype=torch.float64)
    field = 2.5 * torch.randn(1, dims, *spatial, dtype=torch.float64)
    out = warp(image, field)
    coordinates = (identity_grid(spatial, dtype=torch.float64) + field[0]).numpy()
    expected = ndimage.map_coordinates(image[0, 0].numpy(), coordinates, order=1, mode="nearest")
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("dims", [2, 3])
def test_integer_translation_shifts_the_array(dims: int) -> None:
    spatial = SHAPES[dims]
    image = torch.rand(1, 1, *spatial)
    shift = [2] + [0] * (dims - 1)
    field = torch.tensor(shift, dtype=torch.float32).view(1, dims, *([1] * dims)).expand(1, dims, *spatial)
    out = warp(image, field.contiguous())
    torch.testing.assert_close(out[0, 0, :-2], image[0, 0, 2:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_uniform_scaling_has_determinant_s_to_the_d(dims: int, scale: float) -> None:
    field = linear_field(scale * torch.eye(dims, dtype=torch.float64), SHAPES[dims])
    det = jacobian_determinant(field)
    assert det.shape == (1, 1, *SHAPES[dims])
    torch.testing.assert_close(det, torch.full_like(det, scale**dims), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_rotation_preserves_volume(dims: int) -> None:
    det = jacobian_determinant(linear_field(rotation(dims, 0.7), SHAPES[dims], torch.tensor([1.5] * dims)))
    torch.testing.assert_close(det, torch.ones_like(det), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_nonlinear_field_determinant_by_hand(dims: int) -> None:
    """``u_0 = a p_0^2 + b p_{D-1}``: ``det J = 1 + 2 a p_0`` (central differences are exact for quadratics)."""
    spatial = SHAPES[dims]
    grid = identity_grid(spatial, dtype=torch.float64)
    field = torch.zeros(1, dims, *spatial, dtype=torch.float64)
    field[0, 0] = 0.01 * grid[0] ** 2 + 0.3 * grid[-1]
    det = jacobian_determinant(field)[0, 0]
    expected = 1 + 0.02 * grid[0]
    torch.testing.assert_close(det[1:-1], expected[1:-1], rtol=0, atol=1e-12)
    # one-sided differences at the border: (u[1] - u[0]) and (u[n-1] - u[n-2])
    torch.testing.assert_close(det[0], 1 + 0.01 * torch.ones_like(det[0]), rtol=0, atol=1e-12)
    n = spatial[0]
    torch.testing.assert_close(det[-1], torch.full_like(det[-1], 1 + 0.01 * (2 * n - 3)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_folding_is_detected_where_the_map_reverses(dims: int) -> None:
    """``u_0 = a sin(2 pi p_0 / n)`` folds where ``1 + a sin(2 pi / n) cos(2 pi p_0 / n) <= 0`` (by hand)."""
    spatial = (24, *SHAPES[dims][1:])
    n, amplitude = spatial[0], 6.0
    grid = identity_grid(spatial, dtype=torch.float64)
    field = torch.zeros(1, dims, *spatial, dtype=torch.float64)
    field[0, 0] = amplitude * torch.sin(2 * math.pi * grid[0] / n)
    rows = np.arange(1, n - 1)
    folded_rows = (1 + amplitude * math.sin(2 * math.pi / n) * np.cos(2 * math.pi * rows / n)) <= 0
    assert 0 < folded_rows.sum() < n - 2
    rate = folding_rate(jacobian_determinant(field))
    torch.testing.assert_close(rate, torch.tensor([folded_rows.sum() / n], dtype=torch.float32))
    smooth = folding_rate(jacobian_determinant(field / 10))
    assert smooth.item() == 0.0


@pytest.mark.parametrize("dims", [2, 3])
def test_cycle_loss_is_zero_for_a_translation_and_its_inverse(dims: int) -> None:
    spatial = (16,) * dims
    image = torch.zeros(1, 1, *spatial)
    image[(0, 0, *([slice(4, 12)] * dims))] = torch.rand(*([8] * dims))
    shift = torch.tensor([3.0, -2.0, 1.0][:dims]).view(1, dims, *([1] * dims)).expand(1, dims, *spatial)
    assert cycle_loss(image, shift, -shift).item() < 1e-12
    assert cycle_loss(image, shift, shift).item() > 1e-3


@pytest.mark.parametrize("dims", [2, 3])
def test_composition_of_an_affine_map_and_its_inverse_is_the_identity(dims: int) -> None:
    spatial = (21,) * dims
    matrix = 1.1 * rotation(dims, 0.3)
    offset = torch.tensor([1.0, -0.5, 0.25][:dims], dtype=torch.float64)
    forward = linear_field(matrix, spatial, offset)
    inverse_matrix = torch.linalg.inv(matrix)
    backward = linear_field(inverse_matrix, spatial, -inverse_matrix @ offset)
    residual = compose(forward, backward)[0].norm(dim=0)
    grid = identity_grid(spatial, dtype=torch.float64)
    inside = (grid - 10).norm(dim=0) < 7  # where both maps stay inside the image (no border clamping)
    assert residual[inside].max() < 1e-9
    translations = compose(torch.full_like(forward, 1.5), torch.full_like(forward, -0.5))
    torch.testing.assert_close(translations, torch.ones_like(translations), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_scaling_and_squaring_of_a_linear_velocity_is_the_matrix_exponential(dims: int) -> None:
    """``v(p) = a (p - c)`` flows to ``exp(a) (p - c) + c`` near the centre, so ``det J = exp(a D)``."""
    spatial = (33,) * dims
    rate = 0.2
    velocity = linear_field((1 + rate) * torch.eye(dims, dtype=torch.float64), spatial)
    displacement = integrate_velocity(velocity, steps=8)
    expected = linear_field(math.exp(rate) * torch.eye(dims, dtype=torch.float64), spatial)
    centre = (0, slice(None), *([slice(12, 21)] * dims))
    torch.testing.assert_close(displacement[centre], expected[centre], rtol=0, atol=1e-3)
    det = jacobian_determinant(displacement)[(0, 0, *([slice(12, 21)] * dims))]
    torch.testing.assert_close(det, torch.full_like(det, math.exp(rate * dims)), rtol=1e-3, atol=0)
    constant = integrate_velocity(torch.full((1, dims, *spatial), 1.25, dtype=torch.float64), steps=5)
    torch.testing.assert_close(constant, torch.full_like(constant, 1.25), rtol=0, atol=1e-12)


def test_field_of_the_wrong_shape_is_a_one_line_error() -> None:
    with pytest.raises(MedexplainError, match="does not fit"):
        warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 3, 8, 8, 8))
