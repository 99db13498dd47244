"""The simulator: a U-Net of conditional convolutions that turns ``(image, direction)`` into a deformation.

After Liu, Adeli, Pohl, Zhao, "Going Beyond Saliency Maps: Training Deep Models to Interpret Deep Models",
IPMI 2021 (arXiv 2102.08239): one network for both directions, ``d = +1`` injects disease and ``d = -1``
removes it, by routing every convolution's expert kernels on ``d``.

The network predicts a stationary velocity field ``v`` (voxel units). The *tissue deformation*
``psi = id + integrate_velocity(v)`` moves the content at ``q`` to ``psi(q)``; the image is resampled with its
inverse, ``phi = id + integrate_velocity(-v)``, so ``simulated = warp(image, phi - id)``. With
``integration_steps = 0`` the field is used as is and the inverse is approximated by ``-v`` (small
deformations only). The Jacobian determinant of ``psi`` (on the input grid, where masks live) is the
interpretable map: ``det < 1`` tissue shrinks (atrophy), ``> 1`` tissue grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.simulate.condconv import CondConv
from medexplain.simulate.jacobian import jacobian_determinant
from medexplain.simulate.transform import integrate_velocity, warp


@dataclass(frozen=True)
class SimulatorConfig:
    """Hyperparameters of :class:`Simulator` (stored as JSON beside the weights)."""

    spatial_dims: int
    in_channels: int
    channels: tuple[int, ...] = (16, 32, 64)
    num_experts: int = 4
    integration_steps: int = 7

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise MedexplainError(f"simulator spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.in_channels < 1 or self.num_experts < 1 or self.integration_steps < 0:
            raise MedexplainError(f"invalid simulator config {self}")
        if len(self.channels) < 1 or any(int(c) < 1 for c in self.channels):
            raise MedexplainError(f"simulator channels must be positive integers, got {list(self.channels)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


@dataclass
class Simulation:
    """What :meth:`Simulator.simulate` returns; all tensors batched, fields in voxel units.

    image: ``(B, C, *spatial)`` the simulated image ``warp(x, displacement)``.
    displacement: ``(B, D, *spatial)`` the sampling field (pulls, see :func:`~medexplain.simulate.warp`).
    deformation: ``(B, D, *spatial)`` displacement of the tissue deformation ``psi``, the inverse of the sampling map.
    velocity: ``(B, D, *spatial)`` the network output.
    """

    image: Tensor
    displacement: Tensor
    deformation: Tensor
    velocity: Tensor

    def jacobian(self) -> Tensor:
        """``det J`` of the tissue deformation, ``(B, 1, *spatial)``: < 1 shrinkage, > 1 growth, <= 0 folding."""
        return jacobian_determinant(self.deformation)


class _Block(nn.Module):
    """Two conditional 3x3(x3) convolutions with LeakyReLU; the first may downsample by its stride."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, num_experts: int, stride: int = 1):
        super().__init__()
        self.first = CondConv(in_channels, out_channels, 3, spatial_dims=spatial_dims, num_experts=num_experts,
                              stride=stride)
        self.second = CondConv(out_channels, out_channels, 3, spatial_dims=spatial_dims, num_experts=num_experts)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        x = F.leaky_relu(self.first(x, condition), 0.2)
        return F.leaky_relu(self.second(x, condition), 0.2)


class Simulator(nn.Module):
    """U-Net ``(B, C, *spatial), d (B,) -> velocity (B, D, *spatial)``, every convolution conditioned on ``d``.

    Encoder ``channels[0] -> ... -> channels[-1]`` (each level after the first halves the resolution with a
    strided convolution), decoder back up with skip connections, and a zero-initialised head so an untrained
    simulator is the identity.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__()
        self.config = config
        dims, experts, channels = config.spatial_dims, config.num_experts, [int(c) for c in config.channels]
        self.encoder = nn.ModuleList(
            _Block(c_in, c_out, dims, experts, stride=1 if level == 0 else 2)
            for level, (c_in, c_out) in enumerate(zip([config.in_channels, *channels[:-1]], channels, strict=True))
        )
        self.decoder = nn.ModuleList(
            _Block(c_deep + c_skip, c_skip, dims, experts)
            for c_deep, c_skip in zip(channels[:0:-1], channels[-2::-1], strict=True)
        )
        self.head = CondConv(channels[0], dims, 3, spatial_dims=dims, num_experts=experts)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: Tensor, direction: Tensor) -> Tensor:
        """Velocity field ``(B, D, *spatial)`` in voxel units for ``image (B, C, *spatial)``, ``direction (B,)``."""
        batch, channels, *spatial = image.shape
        if len(spatial) != self.config.spatial_dims or channels != self.config.in_channels:
            raise MedexplainError(
                f"image of shape {tuple(image.shape)} does not fit a simulator for {self.config.in_channels}-channel "
                f"{self.config.spatial_dims}D images"
            )
        condition = direction.to(image.dtype).reshape(batch, 1)
        skips = []
        x = image
        for block in self.encoder:
            x = block(x, condition)
            skips.append(x)
        for block, skip in zip(self.decoder, skips[-2::-1], strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1), condition)
        return self.head(x, condition)

    def simulate(self, image: Tensor, direction: Tensor | Sequence[int] | int) -> Simulation:
        """Warp ``image (B, C, *spatial)`` towards (``d = +1``) or away from (``d = -1``) the disease."""
        direction = as_direction(direction, image.shape[0], image.device)
        velocity = self(image, direction)
        steps = self.config.integration_steps
        if steps:
            deformation, displacement = integrate_velocity(velocity, steps), integrate_velocity(-velocity, steps)
        else:
            deformation, displacement = velocity, -velocity
        return Simulation(warp(image, displacement), displacement, deformation, velocity)


def as_direction(direction: Tensor | Sequence[int] | int, batch: int, device: torch.device | None = None) -> Tensor:
    """Directions as a float tensor ``(B,)`` of +1 (inject) / -1 (remove); anything else is an error."""
    d = torch.as_tensor(direction, dtype=torch.float32, device=device)
    if d.dim() == 0:
        d = d.expand(batch)
    if d.shape != (batch,) or not bool(((d == 1) | (d == -1)).all()):
        raise MedexplainError(f"direction must be +1 (inject) or -1 (remove) per image, got {direction!r}")
    return d
