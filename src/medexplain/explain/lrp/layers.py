"""Affine layers as LRP sees them: ``y = W x + b`` for Conv1d/2d/3d and Linear, optionally with a following
eval-mode BatchNorm folded in (canonisation, Montavon et al. 2019 sec. 10.3.1 / Kohlbrenner et al. 2020).

The folded weights are computed on the fly from the user's modules; the model is never copied or changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_TYPES: tuple[type[nn.Module], ...] = (*CONV_TYPES, nn.Linear)
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Affine:
    """The affine map of ``module`` (a convolution or ``nn.Linear``) with parameters ``weight`` and ``bias``.

    ``forward(x, w, b)`` applies the module's map with other parameters (e.g. ``W+``); ``transpose(g, x, w)``
    applies ``w^T`` to a gradient ``g`` shaped like the output, giving a tensor shaped like ``x``.
    """

    module: nn.Module
    weight: Tensor
    bias: Tensor | None

    @staticmethod
    def of(module: nn.Module) -> Affine:
        return Affine(module, module.weight, module.bias)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight, bias)
        return self.module._conv_forward(x, weight, bias)

    def transpose(self, grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        module = self.module
        if isinstance(module, nn.Linear):
            return grad @ weight
        if module.padding_mode == "zeros" and not isinstance(module.padding, str):
            n = x.ndim - 2
            return torch.ops.aten.convolution_backward(
                grad, x, weight, None, module.stride, module.padding, module.dilation, False, [0] * n,
                module.groups, [True, False, False],
            )[0]
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.forward(leaf, weight), leaf, grad)[0]

    def fold(self, batchnorm: nn.Module) -> Affine:
        """This layer followed by the eval-mode ``batchnorm``, as one affine map."""
        scale = torch.rsqrt(batchnorm.running_var + batchnorm.eps)
        if batchnorm.weight is not None:
            scale = scale * batchnorm.weight
        shift = -batchnorm.running_mean * scale
        if batchnorm.bias is not None:
            shift = shift + batchnorm.bias
        bias = shift if self.bias is None else self.bias * scale + shift
        weight = self.weight * scale.view(-1, *[1] * (self.weight.ndim - 1))
        return Affine(self.module, weight, bias)


def foldable(affine: Affine, batchnorm: nn.Module) -> bool:
    """Whether ``batchnorm`` uses running statistics (eval mode) and matches the layer's output channels."""
    return (
        not batchnorm.training
        and batchnorm.running_mean is not None
        and batchnorm.running_var is not None
        and batchnorm.num_features == affine.weight.shape[0]
    )
