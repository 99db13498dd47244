"""Maps that know nothing of the model: what any explanation must beat before its score means something.

A localisation score of 0.3 means nothing alone: a blob at the image centre may score more, because lesions sit
near the centre of most medical images. These "explainers" give the reference maps of an audit: a constant map,
a seeded random map, a centre prior (a Gaussian at the image centre), a given prior (e.g. the mean lesion mask of
the training split) and the image's own edge magnitude. They take the model only to resolve the explained
targets (one forward pass), so every metric treats them like any method; each sample's map depends on that sample
alone. Maps ``(B, K, *spatial)``, the same for every target.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.targets import Target, resolve_target
from medexplain.ndimage import LINEAR_MODES


def _explain(name: str, params: dict, model: nn.Module, x: Tensor, target: Target, maps: Tensor) -> Explanation:
    """``maps (B, *spatial)`` repeated for every explained target of ``model(x)``."""
    with torch.no_grad():
        logits = model(x.detach())
    resolved = resolve_target(logits, target)
    k = resolved.indices.shape[1]
    return Explanation(maps.unsqueeze(1).expand(-1, k, *maps.shape[1:]).contiguous(), resolved.indices.cpu(), name,
                       params, logits.detach())  # fmt: skip


@register_explainer("baseline-constant", category="baseline")
@dataclass(frozen=True)
class ConstantMap:
    """The same value everywhere: a map that points at nothing (the pointing game scores it at chance)."""

    name: str = field(default="baseline-constant", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        maps = torch.ones(x.shape[0], *x.shape[2:], dtype=x.dtype, device=x.device)
        return _explain(self.name, explainer_params(self), model, x, target, maps)


@register_explainer("baseline-random", category="baseline")
@dataclass(frozen=True)
class RandomMap:
    """Uniform noise in [0, 1), drawn per sample from ``seed`` and the sample's own values (so a sample gets the
    same map in any batch)."""

    seed: int = 0
    name: str = field(default="baseline-random", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        maps = []
        for sample in x.detach().cpu():
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(sample.numpy().tobytes()))
            maps.append(torch.rand(sample.shape[1:], generator=generator, dtype=torch.float64))
        maps_tensor = torch.stack(maps).to(dtype=x.dtype, device=x.device)
        return _explain(self.name, explainer_params(self), model, x, target, maps_tensor)


@register_explainer("baseline-centre", category="baseline")
@dataclass(frozen=True)
class CentrePrior:
    """A Gaussian at the image centre, with a standard deviation of ``width`` times each axis' length."""

    width: float = 0.25
    name: str = field(default="baseline-centre", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        if self.width <= 0:
            raise MedexplainError(f"baseline-centre: width must be positive, got {self.width}")
        spatial = x.shape[2:]
        grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij")
        exponent = sum(((g - (n - 1) / 2) / (self.width * n)) ** 2 for g, n in zip(grids, spatial, strict=True))
        prior = torch.exp(-exponent / 2).to(dtype=x.dtype, device=x.device)
        maps = prior.expand(x.shape[0], *spatial)
        return _explain(self.name, explainer_params(self), model, x, target, maps)


@register_explainer("baseline-prior", category="baseline")
@dataclass(frozen=True)
class PriorMap:
    """A given map ``(*spatial)`` for every image, resized to the input (e.g. the mean lesion mask of the training
    split: where lesions usually are)."""

    prior: Tensor | None = None
    name: str = field(default="baseline-prior", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        if self.prior is None or self.prior.ndim != x.ndim - 2:
            shape = None if self.prior is None else tuple(self.prior.shape)
            raise MedexplainError(f"baseline-prior: needs a prior map of {x.ndim - 2} spatial axes, got {shape}")
        prior = self.prior.to(dtype=x.dtype, device=x.device)[None, None]
        if tuple(prior.shape[2:]) != tuple(x.shape[2:]):
            prior = F.interpolate(prior, size=tuple(x.shape[2:]), mode=LINEAR_MODES[x.ndim - 2], align_corners=False)
        maps = prior[0, 0].expand(x.shape[0], *x.shape[2:])
        return _explain(self.name, explainer_params(self), model, x, target, maps)


@register_explainer("baseline-edges", category="baseline")
@dataclass(frozen=True)
class EdgeMagnitude:
    """The image's own edge magnitude: the length of its central-difference gradient, summed over channels.

    A model-free map that still follows the anatomy; an explanation that is no more than an edge detector scores
    like it (Adebayo et al., NeurIPS 2018) and fails the model randomisation check.
    """

    name: str = field(default="baseline-edges", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        image = x.detach().to(torch.float64)
        squares = torch.zeros_like(image)
        for axis in range(2, image.ndim):
            padded = torch.cat([image.narrow(axis, 0, 1), image, image.narrow(axis, image.shape[axis] - 1, 1)], axis)
            difference = (padded.narrow(axis, 2, image.shape[axis]) - padded.narrow(axis, 0, image.shape[axis])) / 2
            squares += difference**2
        maps = squares.sqrt().sum(1).to(x.dtype)
        return _explain(self.name, explainer_params(self), model, x, target, maps)

