"""LRP rules for affine layers, written from the published definitions.

Notation (Montavon et al., "Layer-wise relevance propagation: an overview", 2019): a layer ``y = W x + b``
receives the relevance ``R = y * c`` of its output, where ``c`` is the *modified gradient* flowing backward.
Each rule returns the modified gradient ``c_x`` at the layer input, so that the input relevance is
``x * c_x``; the rules for the first layer (flat, z^B) return the input relevance itself. Carrying ``c``
instead of ``R`` makes every operation without a rule (ReLU, max/average pooling, residual additions,
concatenation, reshapes) propagate relevance with its ordinary gradient, which splits it in proportion to the
contributions (z-rule) exactly as LRP prescribes for sums (Montavon et al. 2019 sec. 10.2).

``x+ = max(x, 0)``, ``x- = min(x, 0)``, ``W+``, ``W-``, ``b+``, ``b-`` likewise; ``stab(z) = z + s sign(z)``
with ``sign(0) = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from medexplain.explain.lrp.layers import Affine


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = +1`` (safe division)."""
    return torch.where(z >= 0, z + epsilon, z - epsilon)


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _nonnegative(x: Tensor) -> bool:
    return bool((x >= 0).all())


class Rule:
    """A propagation rule for an affine layer: ``backward(layer, x, y, c) -> c_x`` (or ``R_x``, see below)."""

    returns_relevance: ClassVar[bool] = False
    """True for first-layer rules whose input relevance is not proportional to ``x`` (flat, z^B)."""

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015; Montavon et al. 2019 eq. 5): ``R_x = x * W^T (R / stab(y))``.

    ``epsilon = 0`` is LRP-0 (gradient x input). Costs one ordinary backward pass through the layer.
    """

    epsilon: float = 1e-6

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        magnitude = y.abs()
        denominator = magnitude + self.epsilon
        return layer.transpose(magnitude.mul_(c).div_(denominator), x)


def _signed_inputs(layer: Affine, x: Tensor) -> Tensor:
    """``x+`` and ``x-`` side by side, for the block weights of the sign-aware rules."""
    return layer.join_channels([x.clamp(min=0), x.clamp(max=0)])


def _signed_block(layer: Affine, key: str, a: Tensor, b: Tensor) -> Tensor:
    """The block weight ``[[a, b], [b, a]]``: applied to ``(x+, x-)`` it gives ``(a x+ + b x-, b x+ + a x-)``;
    transposed, applied to ``(g1, g2)``, the factors of ``x+`` and ``x-``: ``(a^T g1 + b^T g2, b^T g1 + a^T g2)``."""
    return layer.derived(key, lambda: layer.block([[a, b], [b, a]]))


def _block_bias(layer: Affine, first: Tensor | None, second: Tensor | None) -> Tensor | None:
    return None if first is None else layer.join_channels([first, second])


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z+ (Montavon et al. 2017 deep Taylor; = alpha1-beta0), extended to negative inputs:
    ``R_x = x+ W+^T g + x- W-^T g`` with ``g = R / stab(W+ x+ + W- x- + b+)``.

    Costs one convolution and one transposed convolution with ``W+`` (``[W+, W-]`` for inputs of both signs)."""

    stabilizer: float = 1e-6

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        if _nonnegative(x):  # then z >= 0 and stab(z) = z + stabilizer
            w_pos = layer.weight_pos
            z = layer.forward(x, w_pos, _pos(layer.bias)).add_(self.stabilizer)
            return layer.transpose((c * y).div_(z), x, w_pos)
        w = layer.derived("[+ -]", lambda: torch.cat([layer.weight_pos, layer.weight_neg], dim=1))
        signed = _signed_inputs(layer, x)
        z = layer.forward(signed, w, _pos(layer.bias))
        c_pos, c_neg = layer.split_channels(layer.transpose(c * y / stabilize(z, self.stabilizer), signed, w), 2)
        return torch.where(x > 0, c_pos, c_neg)


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015 eq. 60; Montavon et al. 2019 eq. 10), ``alpha - beta = 1``:
    ``R_x = alpha * [x+ W+^T gp + x- W-^T gp] - beta * [x+ W-^T gn + x- W+^T gn]`` with
    ``gp = R / stab(W+ x+ + W- x- + b+)`` and ``gn = R / stab(W- x+ + W+ x- + b-)``.

    For ``x >= 0`` costs one convolution with ``W+`` and two transposed ones (``W+``, ``W``)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1) > 1e-12:
            raise ValueError(f"alpha-beta rule needs alpha - beta = 1 and both >= 0, got {self.alpha}, {self.beta}")

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        relevance = c * y
        if _nonnegative(x):  # then positive >= 0 >= negative = y - positive, and W- = W - W+
            w_pos = layer.weight_pos
            positive = layer.forward(x, w_pos, _pos(layer.bias))
            negative = torch.sub(y, positive).sub_(self.stabilizer).div_(self.beta)
            gp = relevance / positive.add_(self.stabilizer).div_(self.alpha)
            gn = relevance.div_(negative)
            return layer.transpose(gp.add_(gn), x, w_pos).sub_(layer.transpose(gn, x))
        w = _signed_block(layer, "[[+ -] [- +]]", layer.weight_pos, layer.weight_neg)
        signed = _signed_inputs(layer, x)
        bias = _block_bias(layer, _pos(layer.bias), _neg(layer.bias))
        positive, negative = layer.split_channels(layer.forward(signed, w, bias), 2)
        gp = self.alpha * relevance / stabilize(positive, self.stabilizer)
        gn = -self.beta * relevance / stabilize(negative, self.stabilizer)
        c_pos, c_neg = layer.split_channels(layer.transpose(layer.join_channels([gp, gn]), signed, w), 2)
        return torch.where(x > 0, c_pos, c_neg)


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma (Montavon et al. 2019 eq. 7), with the sign-aware form of Zennit >= 0.5: positive outputs
    are explained by the contributions that raise them, negative outputs by those that lower them.

    With ``Wu = W + gamma W+`` and ``Wd = W + gamma W-`` (biases likewise):
    ``R_x = x+ (Wu^T gu + Wd^T gd) + x- (Wd^T gu + Wu^T gd)``, ``gu = [y > 0] R / stab(Wu x+ + Wd x- + bu)``,
    ``gd = [y < 0] R / stab(Wd x+ + Wu x- + bd)``.

    For ``x >= 0`` costs one convolution with ``W+`` and one transposed convolution with ``Wu`` where no
    negative output carries relevance (e.g. a ReLU follows), else two transposed convolutions.
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        b, gamma = layer.bias, self.gamma
        w_up = layer.derived(f"gamma+{gamma}", lambda: layer.weight.add_(layer.weight_pos, alpha=gamma))
        relevance = c * y
        if _nonnegative(x):  # then up > 0 where y > 0, down < 0 where y < 0; W- = W - W+ needs only W+
            raising = layer.forward(x, layer.weight_pos, _pos(b))
            up = torch.add(y, raising, alpha=gamma)
            negative = y < 0
            if not relevance.masked_select(negative).any():  # e.g. a ReLU follows: gd = 0, and R = 0 where
                # y <= 0, so gu = R / (max(up, 0) + stabilizer) needs no mask
                return layer.transpose(relevance.div_(up.clamp_(min=0).add_(self.stabilizer)), x, w_up)
            g_up = relevance / up.add_(self.stabilizer)
            g_up.masked_fill_(y <= 0, 0.0)
            g_down = relevance / (y - raising).mul_(gamma).add_(y).sub_(self.stabilizer)
            g_down.masked_fill_(~negative, 0.0)
            # Wu^T gu + Wd^T gd = W^T (gu + (1 + gamma) gd) + gamma W+^T (gu - gd)
            through_w = torch.add(g_up, g_down, alpha=1 + gamma)
            through_pos = g_up.sub_(g_down).mul_(gamma)
            return layer.transpose(through_w, x).add_(layer.transpose(through_pos, x, layer.weight_pos))
        w_down = layer.derived(f"gamma-{gamma}", lambda: layer.weight.add_(layer.weight_neg, alpha=gamma))
        w = _signed_block(layer, f"[[gamma+ gamma-] [gamma- gamma+]]{gamma}", w_up, w_down)
        b_up = None if b is None else b + gamma * b.clamp(min=0)
        b_down = None if b is None else b + gamma * b.clamp(max=0)
        signed = _signed_inputs(layer, x)
        up, down = layer.split_channels(layer.forward(signed, w, _block_bias(layer, b_up, b_down)), 2)
        g_up = relevance / stabilize(up, self.stabilizer).masked_fill_(y <= 0, float("inf"))
        g_down = relevance / stabilize(down, self.stabilizer).masked_fill_(y >= 0, float("inf"))
        c_pos, c_neg = layer.split_channels(layer.transpose(layer.join_channels([g_up, g_down]), signed, w), 2)
        return torch.where(x > 0, c_pos, c_neg)


@dataclass(frozen=True)
class Flat(Rule):
    """Flat rule (Lapuschkin et al. 2019): relevance spread uniformly over each output's receptive field,
    ``R_x = 1^T (R / stab(1^T 1))`` with unit weights, no bias. Returns relevance (first layer only).

    All output channels of a group share the same unit weights, so their relevance is summed first and goes
    back through one unit filter per group (cheap compared with the layer itself)."""

    returns_relevance: ClassVar[bool] = True
    stabilizer: float = 1e-6

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        unit = layer.unscaled
        ones = layer.derived("ones per group", lambda: unit.new_ones((layer.groups, *unit.shape[1:])))
        z = layer.forward(torch.ones_like(x[:1]), ones)  # receptive field size per group and position
        return layer.transpose(layer.sum_over_groups(c * y) / stabilize(z, self.stabilizer), x, ones)


@dataclass(frozen=True)
class ZBox(Rule):
    """z^B rule for bounded inputs ``low <= x <= high`` (Montavon et al. 2017 deep Taylor, 2019 eq. 8):
    ``R_x = x W^T g - low W+^T g - high W-^T g`` with ``g = R / stab(W x - W+ low - W- high)``.

    ``low`` and ``high`` are numbers or tensors broadcastable to the input. Returns relevance (first layer only).
    The three maps go through one convolution and one transposed convolution (weights side by side).
    """

    returns_relevance: ClassVar[bool] = True
    low: float | Tensor = 0.0
    high: float | Tensor = 1.0
    stabilizer: float = 1e-6

    def backward(self, layer: Affine, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
        low = torch.as_tensor(self.low).to(x).expand_as(x)
        high = torch.as_tensor(self.high).to(x).expand_as(x)
        w = layer.derived("[W -W+ -W-]", lambda: torch.cat([layer.weight, -layer.weight_pos, -layer.weight_neg], dim=1))
        stacked = layer.join_channels([x, low, high])
        g = c * y / stabilize(layer.forward(stacked, w), self.stabilizer)
        through_x, through_low, through_high = layer.split_channels(layer.transpose(g, stacked, w), 3)
        return x * through_x + low * through_low + high * through_high
