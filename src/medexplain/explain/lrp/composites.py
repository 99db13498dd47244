"""Composites: which rule applies to which layer, with Zennit's named composites rebuilt from the papers
(Kohlbrenner et al. 2020, "Towards best practice in explaining neural network decisions with LRP")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from medexplain.explain.lrp.layers import CONV_TYPES, LINEAR_TYPES
from medexplain.explain.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus

LayerMap = Sequence[tuple[tuple[type[nn.Module], ...], Rule]]
"""``((module types, rule), ...)``: the first entry whose types match a module gives its rule."""


@dataclass(frozen=True)
class Composite:
    """A rule per affine layer: ``first_map`` for the first matching module (in ``model.named_modules()``
    order), ``layer_map`` for all others. Modules matched by neither propagate with their gradient.

    Around the rules, the engine always folds eval-mode BatchNorm into a directly preceding affine layer,
    passes relevance unchanged through other BatchNorms and element-wise activations, and lets sums,
    concatenations and pooling propagate with their gradient (the z-rule).
    """

    layer_map: LayerMap
    first_map: LayerMap = ()

    def rules(self, model: nn.Module) -> dict[nn.Module, Rule]:
        """The rule of every affine module of ``model`` that gets one."""
        assigned: dict[nn.Module, Rule] = {}
        first_pending = bool(self.first_map)
        for _, module in model.named_modules():
            if first_pending:
                rule = _lookup(self.first_map, module)
                if rule is not None:
                    assigned[module] = rule
                    first_pending = False
                    continue
            rule = _lookup(self.layer_map, module)
            if rule is not None:
                assigned[module] = rule
        return assigned


def _lookup(layer_map: LayerMap, module: nn.Module) -> Rule | None:
    return next((rule for types, rule in layer_map if isinstance(module, types)), None)


def epsilon(epsilon: float = 1e-6) -> Composite:
    """LRP-epsilon on every convolution and linear layer."""
    return Composite(((CONV_TYPES, Epsilon(epsilon)), ((nn.Linear,), Epsilon(epsilon))))


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """z+ on convolutions, epsilon on linear layers (Zennit ``EpsilonPlus``)."""
    return Composite(((CONV_TYPES, ZPlus(stabilizer)), ((nn.Linear,), Epsilon(epsilon))))


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first convolution or linear layer, then as :func:`epsilon_plus` (Zennit ``EpsilonPlusFlat``)."""
    base = epsilon_plus(epsilon, stabilizer)
    return Composite(base.layer_map, ((LINEAR_TYPES, Flat(stabilizer)),))


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """alpha2-beta1 on convolutions, epsilon on linear layers (Zennit ``EpsilonAlpha2Beta1``)."""
    return Composite(((CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)), ((nn.Linear,), Epsilon(epsilon))))


def epsilon_gamma_box(
    low: float | Tensor, high: float | Tensor, gamma: float = 0.25, epsilon: float = 1e-6, stabilizer: float = 1e-6
) -> Composite:
    """z^B on the first convolution, gamma on the other convolutions, epsilon on linear layers
    (Zennit ``EpsilonGammaBox``; Kohlbrenner et al. 2020)."""
    return Composite(
        ((CONV_TYPES, Gamma(gamma, stabilizer)), ((nn.Linear,), Epsilon(epsilon))),
        ((CONV_TYPES, ZBox(low, high, stabilizer)),),
    )
