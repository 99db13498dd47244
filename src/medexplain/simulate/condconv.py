"""Conditional convolution: kernels that depend on a per-sample condition (here the direction ``d``).

CondConv (Yang, Bender, Le, Ngiam, NeurIPS 2019) mixes ``E`` expert kernels with per-sample routing weights,
``W(c) = sum_e r_e(c) W_e`` with ``r(c) = sigmoid(A c + a)``. Liu et al. (IPMI 2021) route on the
simulation direction so that one network both injects (``d = +1``) and removes (``d = -1``) disease.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class CondConv(nn.Module):
    """``(B, C_in, *spatial), condition (B, condition_size) -> (B, C_out, *spatial')`` for 1, 2 or 3 spatial dims.

    Each sample is convolved with its own mixture of ``num_experts`` kernels (and biases); the mixture is
    computed once per distinct condition in the batch (two for the directions +-1) and applied to those samples.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        spatial_dims: int,
        num_experts: int = 4,
        condition_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        shape = (num_experts, out_channels, in_channels, *([kernel_size] * spatial_dims))
        fan_in = in_channels * kernel_size**spatial_dims
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-math.sqrt(3.0) * bound, math.sqrt(3.0) * bound))
        self.bias = nn.Parameter(torch.empty(num_experts, out_channels).uniform_(-bound, bound))
        self.routing = nn.Linear(condition_size, num_experts)

    def routing_weights(self, condition: Tensor) -> Tensor:
        """``(B, condition_size) -> (B, num_experts)`` mixture weights in (0, 1)."""
        return torch.sigmoid(self.routing(condition))

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        conditions, groups = torch.unique(condition, dim=0, return_inverse=True)
        routing = self.routing_weights(conditions)
        weights = torch.einsum("ge,eoi...->goi...", routing, self.weight)
        biases = routing @ self.bias
        convolution = _CONVOLUTIONS[self.spatial_dims]
        if len(conditions) == 1:
            return convolution(x, weights[0], biases[0], stride=self.stride, padding=self.padding)
        parts = [
            (members, convolution(x[members], weights[g], biases[g], stride=self.stride, padding=self.padding))
            for g in range(len(conditions))
            for members in [(groups == g).nonzero().flatten()]
        ]
        out = x.new_empty(x.shape[0], *parts[0][1].shape[1:])
        for members, values in parts:
            out[members] = values
        return out
