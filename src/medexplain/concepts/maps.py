"""Concept maps: where in an image each concept is found, as an :class:`~medexplain.explain.Explanation`.

A concept probe reads pooled activations of a layer (:mod:`medexplain.concepts.probes`). Applied to the activation
``A(:, i)`` of every spatial position ``i`` instead, as if the whole layer output looked like that position, it
gives a per-position concept logit, upsampled to the input like a class activation map (Zhou et al., CVPR 2016;
Grad-CAM's resampling, :func:`medexplain.explain.resample.to_input_resolution`), signed and never normalised:

``map_l(i) = sum_b w_{l,b} . (A(:, i) - m_b) / s_b + b_l`` over the probe's pooling blocks ``b`` (mean, max).

With mean pooling alone the spatial mean of the map (before upsampling) is exactly the probe's logit on the
image; the direction ``sum_b w_b / s_b`` is the concept direction of :func:`medexplain.concepts.layer_direction`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from medexplain.concepts.activations import evaluation_mode
from medexplain.concepts.probes import Probe
from medexplain.errors import MedexplainError
from medexplain.explain.explanation import Explanation
from medexplain.explain.hooks import capture_output
from medexplain.explain.resample import to_input_resolution

ConceptTarget = int | Sequence[int] | None
"""Which concept maps: ``None`` every concept, an index, or a list of indices (same for every image)."""


@dataclass(frozen=True)
class ConceptMaps:
    """Per-position concept logits of ``layer`` for each concept, at input resolution.

    ``weights (L, C)`` and ``bias (L,)``: the probes as linear functions of one position's activation ``(C,)``
    (:meth:`from_probes`); ``concepts``: the ``L`` names. Called as ``concept_maps(model, x, target)``: maps
    ``(B, K, *spatial)`` for the ``K`` chosen concepts, ``targets`` -1 (a concept is not a class; its index is in
    ``params["concept_index"]``). The model runs in evaluation mode, as the probes saw it; its training flags
    are restored and no hook stays behind. 2D and 3D alike.
    """

    layer: str
    weights: Tensor
    bias: Tensor
    concepts: tuple[str, ...]
    name: str = field(default="concept-map", init=False)

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.bias.shape != (self.weights.shape[0],):
            raise MedexplainError(
                f"concept maps need weights (L, C) and bias (L,), got {tuple(self.weights.shape)} and "
                f"{tuple(self.bias.shape)}"
            )
        if len(self.concepts) != self.weights.shape[0]:
            raise MedexplainError(f"{len(self.concepts)} concept names for {self.weights.shape[0]} probes")

    @classmethod
    def from_probes(cls, probes: Sequence[Probe], layer: str, channels: int) -> ConceptMaps:
        """From probes fit on pooled features ``(channels * pools,)`` of ``layer`` (blocks in pooling order)."""
        weights, biases = [], []
        for probe in probes:
            raw = probe.raw_weights
            if raw.size % channels:
                raise MedexplainError(f"probe {probe.concept!r} has {raw.size} weights, not a multiple of {channels}")
            weights.append(raw.reshape(-1, channels).sum(0))
            biases.append(probe.intercept - float(raw @ probe.mean))
        return cls(
            layer,
            torch.from_numpy(np.stack(weights)),
            torch.tensor(biases, dtype=torch.float64),
            tuple(p.concept for p in probes),
        )

    def __call__(self, model: nn.Module, x: Tensor, target: ConceptTarget = None) -> Explanation:
        chosen = _chosen(target, len(self.concepts))
        with evaluation_mode(model), torch.no_grad(), capture_output(model, self.layer) as captured:
            logits = model(x)
            activations = captured.output
        if not isinstance(activations, Tensor) or activations.ndim != x.ndim:
            raise MedexplainError(f"layer {self.layer!r} gives no (B, C, *spatial) feature map like the input")
        if activations.shape[1] != self.weights.shape[1]:
            raise MedexplainError(
                f"layer {self.layer!r} has {activations.shape[1]} channels, the probes {self.weights.shape[1]}"
            )
        weights = self.weights[chosen].to(activations.device, activations.dtype)
        bias = self.bias[chosen].to(activations.device, activations.dtype)
        low = torch.einsum("bc...,kc->bk...", activations, weights) + bias.view(1, -1, *[1] * (x.ndim - 2))
        maps = to_input_resolution(low, x.shape[2:])
        targets = torch.full(maps.shape[:2], -1, dtype=torch.long)
        params = {"layer": self.layer, "concepts": [self.concepts[i] for i in chosen], "concept_index": chosen}
        return Explanation(maps, targets, self.name, params, logits.detach())


def _chosen(target: ConceptTarget, count: int) -> list[int]:
    chosen = list(range(count)) if target is None else [target] if isinstance(target, int) else list(target)
    bad = [i for i in chosen if not 0 <= int(i) < count]
    if bad or not chosen:
        raise MedexplainError(f"concept index {bad[0] if bad else '(none)'} out of range for {count} concepts")
    return [int(i) for i in chosen]
