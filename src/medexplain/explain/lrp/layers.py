"""Affine layers as LRP sees them: ``y = W x + b`` for Conv1d/2d/3d and Linear, optionally with a following
eval-mode BatchNorm folded in (canonisation, Montavon et al. 2019 sec. 10.3.1 / Kohlbrenner et al. 2020).

The folded weights are computed on the fly from the user's modules; the model is never copied or changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    _derived: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)

    def derived(self, key: str, make: Callable[[Tensor], Tensor]) -> Tensor:
        """``make(weight)``, computed once per layer and forward pass (shared by the backward pass of each target)."""
        if key not in self._derived:
            self._derived[key] = make(self.weight)
        return self._derived[key]

    @property
    def weight_pos(self) -> Tensor:
        return self.derived("+", lambda w: w.clamp(min=0))

    @property
    def weight_neg(self) -> Tensor:
        return self.derived("-", lambda w: w.clamp(max=0))

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

    def transpose_sum(self, pairs: list[tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
        """``sum_i w_i^T g_i`` for ``pairs`` of ``(g_i, w_i)``."""
        total = self.transpose(pairs[0][0], x, pairs[0][1])
        for grad, weight in pairs[1:]:
            total = total + self.transpose(grad, x, weight)
        return total

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
