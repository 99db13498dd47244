"""Composites: which rule applies to which layer, with Zennit's named composites rebuilt from the papers
(Kohlbrenner et al. 2020, "Towards best practice in explaining neural network decisions with LRP")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from medexplain.explain.lrp.layers import CONV_TYPES, LINEAR_TYPES
from medexplain.explain.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus
from medexplain.explain.lrp.transformer import ModuleRule, NormIdentity
from medexplain.explain.transformer import ATTENTION_RULES

LayerMap = Sequence[tuple[tuple[type[nn.Module], ...], Rule | ModuleRule]]
"""``((module types, rule), ...)``: the first entry whose types match a module gives its rule: an affine
:class:`~medexplain.explain.lrp.rules.Rule` for convolutions and linear layers, a
:class:`~medexplain.explain.lrp.transformer.ModuleRule` for other modules (e.g. LayerNorm)."""


@dataclass(frozen=True)
class Composite:
    """A rule per layer: ``first_map`` for the first matching module (in ``model.named_modules()`` order),
    ``layer_map`` for all others. Modules matched by neither propagate with their gradient. ``attention`` is how
    relevance crosses the attention of transformers (:data:`~medexplain.explain.transformer.ATTENTION_RULES`:
    ``"uniform"`` for AttnLRP, ``"conservative"`` for CP-LRP); ``None`` differentiates it.

    Around the rules, the engine always folds eval-mode BatchNorm into a directly preceding affine layer,
    passes relevance unchanged through other BatchNorms and element-wise activations, and lets sums,
    concatenations and pooling propagate with their gradient (the z-rule).
    """

    layer_map: LayerMap
    first_map: LayerMap = ()
    attention: str | None = None

    def __post_init__(self) -> None:
        if self.attention is not None and self.attention not in ATTENTION_RULES[1:]:
            raise ValueError(f"attention rule must be None, 'uniform' or 'conservative', got {self.attention!r}")

    def rules(self, model: nn.Module) -> dict[nn.Module, Rule | ModuleRule]:
        """The rule of every module of ``model`` that gets one."""
        assigned: dict[nn.Module, Rule | ModuleRule] = {}
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


def _lookup(layer_map: LayerMap, module: nn.Module) -> Rule | ModuleRule | None:
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


def attnlrp(epsilon: float = 1e-6, conservative: bool = False) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024): epsilon on convolutions (the patch embedding) and linear layers, the
    identity rule on LayerNorm's standard deviation, the uniform rule on attention's products; with
    ``conservative``, CP-LRP's constant attention (Ali et al., ICML 2022) instead of the uniform rule."""
    return Composite(
        ((CONV_TYPES, Epsilon(epsilon)), ((nn.Linear,), Epsilon(epsilon)), ((nn.LayerNorm,), NormIdentity(epsilon))),
        attention="conservative" if conservative else "uniform",
    )
