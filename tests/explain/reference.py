"""Zennit as the LRP reference (imported through the torchvision stub of tests/conftest.py).

Zennit handles residual additions only through its ``Sum`` module with the ``Norm`` rule (its torchvision
ResNet canonizer rewrites torchvision blocks to use it). Our plain-torch test blocks add through a tiny
``Add`` module, so the reference model is a deep copy in which each ``Add`` becomes ``StackSum``: the two
summands stacked on a last axis and summed by Zennit's ``Sum``, which Zennit's composites then explain
with ``Norm`` (relevance split in proportion to the summands). Our engine needs no such module.
"""

from __future__ import annotations

import copy

import torch
import zennit.canonizers as zcanonizers
import zennit.composites as zcomposites
import zennit.layer as zlayer
import zennit.rules as zrules
import zennit.types as ztypes
from tests.explain.models import Add
from torch import Tensor, nn
from zennit.attribution import Gradient


class StackSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sum = zlayer.Sum()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.sum(torch.stack([a, b], dim=-1))


def with_zennit_sums(model: nn.Module) -> nn.Module:
    reference = copy.deepcopy(model)
    for module in list(reference.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Add):
                setattr(module, name, StackSum())
    return reference


def zennit_composite(name: str, epsilon: float, stabilizer: float, low: float = -3.0, high: float = 3.0):
    """Zennit's composite for our explainer ``name``, with BatchNorm merged by SequentialMergeBatchNorm."""
    canonizers = [zcanonizers.SequentialMergeBatchNorm()]
    common = {"epsilon": epsilon, "stabilizer": stabilizer, "canonizers": canonizers}
    if name == "lrp-epsilon":
        layer_map = [
            *zcomposites.layer_map_base(stabilizer),
            (ztypes.Convolution, zrules.Epsilon(epsilon)),
            (nn.Linear, zrules.Epsilon(epsilon)),
        ]
        return zcomposites.LayerMapComposite(layer_map, canonizers=canonizers)
    if name == "lrp-epsilon-plus":
        return zcomposites.EpsilonPlus(**common)
    if name == "lrp-epsilon-plus-flat":
        return zcomposites.EpsilonPlusFlat(**common)
    if name == "lrp-alpha2-beta1":
        return zcomposites.EpsilonAlpha2Beta1(**common)
    if name == "lrp-epsilon-gamma-box":
        return zcomposites.EpsilonGammaBox(low=low, high=high, **common)
    raise KeyError(name)


def zennit_relevance(model: nn.Module, x: Tensor, target: Tensor, composite) -> Tensor:
    """Input relevance ``(B, C, *spatial)`` with the output relevance ``logit * onehot(target)``."""
    reference = with_zennit_sums(model)
    with Gradient(reference, composite) as attributor:
        _, relevance = attributor(x, lambda output: output * nn.functional.one_hot(target, output.shape[1]))
    return relevance
