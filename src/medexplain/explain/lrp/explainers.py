"""The registered LRP explainers: one frozen dataclass per named composite.

The composites made for CNNs have no rule for attention or LayerNorm: relevance would cross them by gradient,
which is not LRP, so they refuse a model with attention modules (registered with ``attention="refused"``) and
point to AttnLRP and CP-LRP (``attention="made-for"``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.lrp import composites
from medexplain.explain.lrp.composites import Composite
from medexplain.explain.lrp.engine import lrp_relevance
from medexplain.explain.targets import Target
from medexplain.explain.transformer import attention_modules


@dataclass(frozen=True)
class _LRP:
    epsilon: float = 1e-6
    name: str = field(default="lrp", init=False)

    def composite(self, x: Tensor) -> Composite:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        composite = self.composite(x)
        attention = attention_modules(model) if composite.attention is None else []
        if attention:
            raise MedexplainError(
                f"{self.name} has no rule for attention or LayerNorm, and {attention[0][0]!r} is an attention "
                "module; explain transformers with attnlrp or cp-lrp"
            )
        relevance, logits, resolved = lrp_relevance(model, x, target, composite)
        return Explanation(relevance.sum(dim=2), resolved.indices.cpu(), self.name, explainer_params(self), logits)


@register_explainer("lrp-epsilon", category="lrp", attention="refused")
@dataclass(frozen=True)
class LRPEpsilon(_LRP):
    """LRP-epsilon on every convolution and linear layer (Bach et al. 2015). Maps ``(B, K, *spatial)``: input
    relevance summed over channels; it sums to the logit up to biases and epsilon absorption."""

    name: str = field(default="lrp-epsilon", init=False)

    def composite(self, x: Tensor) -> Composite:
        return composites.epsilon(self.epsilon)


@register_explainer("lrp-epsilon-plus", category="lrp", attention="refused")
@dataclass(frozen=True)
class LRPEpsilonPlus(_LRP):
    """z+ on convolutions, epsilon on linear layers (Kohlbrenner et al. 2020; Zennit ``EpsilonPlus``)."""

    stabilizer: float = 1e-6
    name: str = field(default="lrp-epsilon-plus", init=False)

    def composite(self, x: Tensor) -> Composite:
        return composites.epsilon_plus(self.epsilon, self.stabilizer)


@register_explainer("lrp-epsilon-plus-flat", category="lrp", attention="refused")
@dataclass(frozen=True)
class LRPEpsilonPlusFlat(_LRP):
    """Flat rule on the first layer, z+ on other convolutions, epsilon on linear layers (Zennit
    ``EpsilonPlusFlat``)."""

    stabilizer: float = 1e-6
    name: str = field(default="lrp-epsilon-plus-flat", init=False)

    def composite(self, x: Tensor) -> Composite:
        return composites.epsilon_plus_flat(self.epsilon, self.stabilizer)


@register_explainer("lrp-alpha2-beta1", category="lrp", attention="refused")
@dataclass(frozen=True)
class LRPAlpha2Beta1(_LRP):
    """alpha2-beta1 on convolutions, epsilon on linear layers (Bach et al. 2015; Zennit ``EpsilonAlpha2Beta1``)."""

    stabilizer: float = 1e-6
    name: str = field(default="lrp-alpha2-beta1", init=False)

    def composite(self, x: Tensor) -> Composite:
        return composites.epsilon_alpha2_beta1(self.epsilon, self.stabilizer)


@register_explainer("lrp-epsilon-gamma-box", category="lrp", attention="refused")
@dataclass(frozen=True)
class LRPEpsilonGammaBox(_LRP):
    """z^B on the first convolution, gamma on the others, epsilon on linear layers (Kohlbrenner et al. 2020;
    Zennit ``EpsilonGammaBox``). ``low``/``high`` bound the input values; ``None`` takes each sample's own
    minimum / maximum over all channels and positions."""

    low: float | None = None
    high: float | None = None
    gamma: float = 0.25
    stabilizer: float = 1e-6
    name: str = field(default="lrp-epsilon-gamma-box", init=False)

    def composite(self, x: Tensor) -> Composite:
        shape = (-1, *[1] * (x.ndim - 1))
        flat = x.detach().flatten(1)
        low = flat.amin(dim=1).view(shape) if self.low is None else self.low
        high = flat.amax(dim=1).view(shape) if self.high is None else self.high
        return composites.epsilon_gamma_box(low, high, self.gamma, self.epsilon, self.stabilizer)


@register_explainer("attnlrp", category="lrp", attention="made-for")
@dataclass(frozen=True)
class AttnLRP(_LRP):
    """AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers",
    ICML 2024): epsilon on convolutions and linear layers, identity rule on LayerNorm's standard deviation and on
    activations, the softmax rule and the uniform rule on attention's products (nn.MultiheadAttention and MONAI
    blocks); on a model without attention it is LRP-epsilon with the LayerNorm rule. Maps ``(B, K, *spatial)``:
    input relevance summed over channels; the softmax rule absorbs part of the relevance (see
    :mod:`medexplain.explain.lrp.transformer`)."""

    name: str = field(default="attnlrp", init=False)

    def composite(self, x: Tensor) -> Composite:
        return composites.attnlrp(self.epsilon)


@register_explainer("cp-lrp", category="lrp", attention="made-for")
@dataclass(frozen=True)
class CPLRP(_LRP):
    """CP-LRP (Ali et al., "XAI for Transformers: Better Explanations through Conservative Propagation", ICML 2022):
    as :class:`AttnLRP` but with the attention probabilities held constant, so all relevance flows through the
    values; conserves relevance in a bias-free network. Maps ``(B, K, *spatial)``."""

    name: str = field(default="cp-lrp", init=False)

    def composite(self, x: Tensor) -> Composite:
        return composites.attnlrp(self.epsilon, conservative=True)
