"""Attention blocks for the residual baselines: squeeze-and-excitation and CBAM, 1D/2D/3D through one code path.

- Squeeze-and-excitation (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018): a channel gate
  ``s = sigmoid(W2 relu(W1 z))`` from the global average ``z`` of each channel; the block returns ``x * s``.
- CBAM (Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018): a channel gate
  ``sigmoid(MLP(avg) + MLP(max))`` with one shared MLP, then a spatial gate ``sigmoid(conv_7([mean_c; max_c]))``
  from the channel-wise mean and maximum maps, applied one after the other.

Both papers put the block on the residual branch of every block, after its last normalisation and before the
addition of the shortcut; :class:`medexplain.models.resnet.BasicBlock` does so when given ``attention``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.models.layers import conv

ATTENTIONS = ("se", "cbam")


def _hidden(channels: int, reduction: int) -> int:
    if reduction < 1:
        raise MedexplainError(f"attention reduction ratio must be at least 1, got {reduction}")
    return max(1, channels // reduction)


def _broadcast(gate: Tensor, x: Tensor) -> Tensor:
    """``(B, C)`` channel gate reshaped to ``(B, C, 1, ..., 1)`` for ``x`` ``(B, C, *spatial)``."""
    return gate.view(*gate.shape, *[1] * (x.ndim - 2))


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation channel gate (Hu et al., CVPR 2018); ``(B, C, *spatial) -> (B, C, *spatial)``.

    Args:
        channels: ``C``.
        reduction: the ratio ``r`` of the bottleneck, ``C // r`` hidden units (at least one); 16 as published.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def gate(self, x: Tensor) -> Tensor:
        """``(B, C)`` channel weights in (0, 1) for ``x`` ``(B, C, *spatial)``."""
        pooled = x.flatten(2).mean(2)
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))

    def forward(self, x: Tensor) -> Tensor:
        return x * _broadcast(self.gate(x), x)


class ChannelAttention(nn.Module):
    """CBAM's channel gate: ``sigmoid(MLP(avg_s x) + MLP(max_s x))``, one MLP shared by both poolings."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def gate(self, x: Tensor) -> Tensor:
        """``(B, C)`` channel weights for ``x`` ``(B, C, *spatial)``."""
        flat = x.flatten(2)
        return torch.sigmoid(self.mlp(flat.mean(2)) + self.mlp(flat.amax(2)))

    def forward(self, x: Tensor) -> Tensor:
        return x * _broadcast(self.gate(x), x)


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: ``sigmoid(conv([mean_c x; max_c x]))`` with a ``kernel_size``-wide 'same' convolution."""

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise MedexplainError(f"CBAM spatial kernel size must be odd and positive, got {kernel_size}")
        self.conv = conv(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2)

    def gate(self, x: Tensor) -> Tensor:
        """``(B, 1, *spatial)`` position weights for ``x`` ``(B, C, *spatial)``."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    """Convolutional block attention module (Woo et al., ECCV 2018): channel gate, then spatial gate.

    Args:
        channels: ``C`` of the ``(B, C, *spatial)`` input.
        spatial_dims: 1, 2 or 3.
        reduction: MLP bottleneck ratio (16 as published).
        kernel_size: width of the spatial gate's convolution along every axis (7 as published).
    """

    def __init__(self, channels: int, spatial_dims: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_dims, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


def attention_block(kind: str | None, channels: int, spatial_dims: int) -> nn.Module:
    """The block called ``kind`` (one of :data:`ATTENTIONS`) for ``channels`` channels; ``None`` gives identity."""
    if kind is None:
        return nn.Identity()
    if kind == "se":
        return SqueezeExcitation(channels)
    if kind == "cbam":
        return CBAM(channels, spatial_dims)
    raise MedexplainError(f"unknown attention {kind!r}; available: {', '.join(ATTENTIONS)}")
