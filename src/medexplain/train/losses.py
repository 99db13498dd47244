"""Training objectives: cross-entropy or BCE, plus an optional sparsity penalty on class evidence maps.

Sparse BagNet (Djoumessi et al., MIDL 2023): ``loss = CE + lambda_sum * ||E||_1`` with ``E`` the evidence
map of (in their code) the first sample of the batch, ``lambda_sum = 4e-6`` at 512 px. Here every sample is
penalised and the L1 norm is *averaged* over all ``B * K * prod(spatial)`` elements, so lambda does not depend
on the image or batch size:

    lambda_mean = lambda_sum * K * prod(spatial)

(per sample; their single penalised sample per batch has the same expected size as our batch mean). BagNet-33
at 512 px has a 60 x 60 map, so for K = 2 classes ``lambda_mean = 4e-6 * 2 * 3600 ~= 0.029``.

Why the published penalty buys little sparsity (benchmarks/RESULTS.md has the measurements): the logits are
the *mean* of the map, so a logit margin ``m`` costs ``lambda * m`` of L1 however it is spread over positions;
L1 removes cancelling (mixed-sign) evidence and shrinks margins (which costs accuracy) but does not prefer a
few strong patches to many weak ones. And an image without findings still needs class margins, which a linear
head can only express densely (the bias ``b`` repeated at every position). ``sparsity_on="local"`` penalises
``E - b`` instead, so the prior is free, and a ReLU local evidence (``BagNet(evidence_activation="relu")``)
makes uninformative patches exactly zero; ``sparsity_warmup`` lets features form before the penalty bites.

``ce+sibnet`` adds SIBnet's Grad-CAM guidance (:mod:`medexplain.train.sibnet`, Mahapatra et al., MedIA 2022).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.train.sibnet import SIBnetLoss

LOSSES = ("ce", "bce", "ce+sparsity", "bce+sparsity", "ce+sibnet")
SPARSITY_TARGETS = ("evidence", "local")


def sparsity_penalty(evidence: Tensor) -> Tensor:
    """Mean ``|E|`` over every element of ``(B, K, *spatial)`` evidence maps (a scalar)."""
    return evidence.abs().mean()


def local_part(model: nn.Module, evidence: Tensor) -> Tensor:
    """``E - b``: the evidence map without the model's per-class bias ``class_bias`` (``(K,)``)."""
    bias = getattr(model, "class_bias", None)
    if bias is None:
        raise MedexplainError(f"{type(model).__name__} has no class_bias: its local evidence is not defined")
    return evidence - bias.view(1, -1, *[1] * (evidence.ndim - 2))


@dataclass(frozen=True)
class Objective:
    """A composable loss ``task + sparsity_lambda * mean|E|``.

    Attributes:
        task: ``"ce"`` (single-label, targets ``(B,)`` class indices) or ``"bce"`` (multi-label, targets
            ``(B, L)`` in {0, 1}).
        class_weights: ``(K,)`` cross-entropy weights, or ``None``.
        sparsity_lambda: weight of the evidence penalty; > 0 needs a model with ``evidence_map``.
        sparsity_on: ``"evidence"`` penalises ``E`` itself (the paper); ``"local"`` penalises ``E - b``, the
            evidence without the model's per-class bias, so the class prior costs nothing.
        sibnet: SIBnet's class-distinctiveness and spatial-coherence terms on Grad-CAM maps, or ``None``.
        label_smoothing: ``eps`` of label-smoothed cross-entropy (Szegedy et al., CVPR 2016): the target is
            ``(1 - eps) onehot(y) + eps / K`` (``F.cross_entropy(label_smoothing=eps)``); "ce" only.
        ordinal_sigma: ``sigma`` > 0 replaces the one-hot target of ordered classes (grades) by a discretised
            Gaussian around the true grade, ``q_k = exp(-(k - y)^2 / (2 sigma^2)) / Z`` (label distribution
            learning, Gao et al., IEEE TIP 2017), so confusing neighbouring grades costs less; "ce" only.
            With class weights the loss is ``-mean_i sum_k w_k q_ik log p_ik`` (PyTorch's soft-target weighting).
    """

    task: str = "ce"
    class_weights: Tensor | None = None
    sparsity_lambda: float = 0.0
    sparsity_on: str = "evidence"
    sibnet: SIBnetLoss | None = None
    label_smoothing: float = 0.0
    ordinal_sigma: float = 0.0

    @classmethod
    def parse(
        cls,
        loss: str,
        *,
        sparsity_lambda: float | None,
        class_weights: Tensor | None,
        sparsity_on: str = "evidence",
        label_smoothing: float = 0.0,
        ordinal_sigma: float = 0.0,
        sibnet: Mapping[str, Any] | None = None,
    ) -> Objective:
        """Build from a name in :data:`LOSSES`; ``+sparsity`` requires a positive ``sparsity_lambda``;
        ``+sibnet`` builds :class:`SIBnetLoss` from the ``sibnet`` arguments (its defaults when ``None``)."""
        if loss not in LOSSES:
            raise MedexplainError(f"unknown loss {loss!r}; available: {', '.join(LOSSES)}")
        task, _, extra = loss.partition("+")
        if extra == "sparsity" and not (sparsity_lambda and sparsity_lambda > 0):
            raise MedexplainError(f"loss {loss!r} needs a positive `sparsity_lambda`, got {sparsity_lambda}",
                                  parameter="sparsity_lambda")  # fmt: skip
        if extra != "sparsity" and sparsity_lambda:
            raise MedexplainError(f"`sparsity_lambda` {sparsity_lambda} given but loss {loss!r} has no sparsity term",
                                  parameter="sparsity_lambda")  # fmt: skip
        if task == "bce" and class_weights is not None:
            raise MedexplainError("class weights apply to the 'ce' loss only")
        if sparsity_on not in SPARSITY_TARGETS:
            raise MedexplainError(f"unknown sparsity target {sparsity_on!r}; available: {', '.join(SPARSITY_TARGETS)}")
        if not 0 <= label_smoothing < 1 or (task == "bce" and label_smoothing):
            raise MedexplainError(f"label smoothing must lie in [0, 1) and needs the 'ce' loss, got {label_smoothing}")
        if ordinal_sigma < 0 or (task == "bce" and ordinal_sigma):
            raise MedexplainError(f"ordinal sigma must be non-negative and needs the 'ce' loss, got {ordinal_sigma}")
        if sibnet is not None and extra != "sibnet":
            raise MedexplainError(f"`sibnet` arguments given but loss {loss!r} has no SIBnet term", parameter="sibnet")
        guidance = _sibnet_loss(sibnet) if extra == "sibnet" else None
        lambda_ = float(sparsity_lambda or 0.0)
        return cls(task, class_weights, lambda_, sparsity_on, guidance, float(label_smoothing), float(ordinal_sigma))

    def task_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """The cross-entropy or BCE term alone, for ``(B, K)`` logits."""
        if self.task == "ce":
            weight = None if self.class_weights is None else self.class_weights.to(logits)
            if self.ordinal_sigma > 0:
                grades = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
                target = (-((grades - target.unsqueeze(1).to(logits)) ** 2) / (2 * self.ordinal_sigma**2)).softmax(1)
            return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits))

    def __call__(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(loss, logits (B, K), parts)`` for inputs ``x`` ``(B, C, *spatial)``; ``parts`` holds each term."""
        parts: dict[str, Tensor] = {}
        guidance = None
        if self.sibnet is not None:
            guidance, logits, guidance_parts = self.sibnet(model, x, target)
            parts.update(guidance_parts)
        elif self.sparsity_lambda > 0:
            evidence = model.evidence_map(x)
            logits = evidence.flatten(2).mean(2)
            penalised = local_part(model, evidence) if self.sparsity_on == "local" else evidence
            parts["sparsity"] = sparsity_penalty(penalised)
        else:
            logits = model(x)
        parts[self.task] = self.task_loss(logits, target)
        loss = parts[self.task] + self.sparsity_lambda * parts.get("sparsity", torch.zeros((), device=logits.device))
        if guidance is not None:
            loss = loss + guidance
        return loss, logits, parts


def _sibnet_loss(arguments: Mapping[str, Any] | None) -> SIBnetLoss:
    try:
        return SIBnetLoss(**(arguments or {}))
    except TypeError as error:
        raise MedexplainError(f"`sibnet` arguments {dict(arguments or {})}: {error}", parameter="sibnet") from None


def balanced_class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """``n / (K * n_k)`` per class (scikit-learn's "balanced"); classes absent from ``labels`` get weight 0."""
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    return torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp(min=1)), 0.0)
