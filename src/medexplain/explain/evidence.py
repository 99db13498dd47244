"""Evidence maps of inherently interpretable models (e.g. BagNet, Brendel & Bethge 2019; Djoumessi et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.resample import patches_to_input, to_input_resolution
from medexplain.explain.targets import Target, resolve_target


@register_explainer("evidence", category="model", needs="evidence_map")
@dataclass(frozen=True)
class Evidence:
    """The model's own class evidence ``model.evidence_map(x) -> (B, C, *s)`` for the explained classes.

    A model that declares its patch geometry (``patch_size`` q and ``patch_stride`` s, as the BagNets do: position
    ``i`` sees input ``[s i, s i + q)``) has each value placed at its patch's centre and interpolated linearly
    between centres (:func:`~medexplain.explain.resample.patches_to_input`); other models' grids are resized to
    the input like CAMs (``align_corners=False``). Values keep their unit (logit evidence per patch), so the mean
    of the coarse map, not of the resampled one, reproduces the logit.
    Targets must be class indices (a callable target has no evidence map). Maps ``(B, K, *spatial)``, signed.

    One pass through the network: the logits are the spatial mean of the evidence map, which is what an evidence
    model's forward computes (``forward(x) == evidence_map(x).mean(spatial)``, the contract of ``evidence_map``).
    """

    name: str = field(default="evidence", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        evidence_map = getattr(model, "evidence_map", None)
        if not callable(evidence_map):
            raise MedexplainError(f"{type(model).__name__} has no evidence_map(x); 'evidence' needs such a model")
        x = x.detach()
        with torch.no_grad():
            evidence = evidence_map(x)
        if not isinstance(evidence, Tensor) or evidence.ndim != x.ndim or evidence.shape[0] != x.shape[0]:
            shape = tuple(evidence.shape) if isinstance(evidence, Tensor) else type(evidence).__name__
            raise MedexplainError(f"evidence_map must return (B, num_classes, *spatial), got {shape}")
        logits = evidence.flatten(2).mean(2)
        resolved = resolve_target(logits, target)
        if resolved.score_fn is not None:
            raise MedexplainError("'evidence' explains class indices, not a callable target")
        maps = evidence_on_input(model, evidence, resolved.indices, x.shape[2:])
        return Explanation(maps, resolved.indices.cpu(), self.name, explainer_params(self), logits)


def evidence_on_input(model: nn.Module, evidence: Tensor, classes: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """The evidence maps ``(B, K, *spatial)`` of ``classes`` ``(B, K)`` in ``evidence`` ``(B, C, *s)``, placed on
    the input grid ``spatial`` as :class:`Evidence` places them."""
    index = classes.view(*classes.shape, *[1] * (evidence.ndim - 2))
    selected = evidence.gather(1, index.expand(-1, -1, *evidence.shape[2:]))
    patch_size, stride = getattr(model, "patch_size", None), getattr(model, "patch_stride", None)
    if isinstance(patch_size, int) and isinstance(stride, int):
        return patches_to_input(selected, tuple(spatial), patch_size, stride)
    return to_input_resolution(selected, tuple(spatial))
