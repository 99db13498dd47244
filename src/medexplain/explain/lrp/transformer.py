"""LRP rules for the non-affine parts of transformers (AttnLRP, Achtibat et al., ICML 2024).

In the engine's notation (:mod:`medexplain.explain.lrp.rules`) relevance is ``t * c`` for every tensor ``t``,
``c`` the modified gradient; AttnLRP's rules then read:

- LayerNorm ``y = gamma (x - mean x) / std(x) + beta``: the identity rule on the division by the standard
  deviation (Prop. 3.4, Eq. 9) and the epsilon rule on the linear centring and scaling, i.e. the epsilon rule on
  the layer with ``std`` held constant: ``c_x = J^T (c |y| / (|y| + eps))`` with ``J = diag(gamma / std)
  (I - 1 1^T / n)`` (:class:`NormIdentity`);
- element-wise activations (GELU, ...): the identity rule, which the engine applies to every activation module;
- softmax: Prop. 3.1, ``R_i = x_i (R_i - s_i sum_j R_j)``, which is the softmax's own gradient in this notation;
- the products ``q k^T`` and ``A v``: the uniform rule (Prop. 3.3), half of the relevance to each factor,
  applied by the attention taps of :mod:`medexplain.explain.transformer` (``Composite.attention="uniform"``);
- residual sums: the epsilon rule (Eq. 8), which the plain gradient gives (relevance in proportion to the
  summands);
- linear layers and the patch embedding: any affine rule of the composite (AttnLRP uses epsilon).

Relevance is conserved by every rule except the softmax's (and what biases, position embeddings and the class
token, which are parameters, absorb). CP-LRP (Ali et al., ICML 2022) holds the attention probabilities constant
instead (``Composite.attention="conservative"``), which conserves relevance exactly in a bias-free network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class ModuleRule:
    """A rule for a non-affine module, applied as a forward hook that returns the module's output with a
    backward pass implementing the rule: ``hook(module, args, output) -> output``."""

    def hook(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class NormIdentity(ModuleRule):
    """AttnLRP's LayerNorm rule (see the module docstring): epsilon rule with the standard deviation constant."""

    epsilon: float = 1e-6

    def hook(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return _LayerNormNode.apply(args[0], output.detach(), module, self.epsilon)


class _LayerNormNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, module: nn.LayerNorm, epsilon: float) -> Tensor:  # type: ignore[override]
        ctx.x, ctx.y, ctx.module, ctx.epsilon = x.detach(), y, module, epsilon
        return y.view_as(y)

    @staticmethod
    def backward(ctx, c: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        module, x, y = ctx.module, ctx.x, ctx.y
        dims = tuple(range(-len(module.normalized_shape), 0))
        std = torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + module.eps)
        g = c * y.abs() / (y.abs() + ctx.epsilon) / std
        if module.weight is not None:
            g = g * module.weight.detach()
        return g - g.mean(dim=dims, keepdim=True), None, None, None

