"""What to explain: turning a user's target specification into per-sample scores of the model output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from medexplain.errors import MedexplainError

ScoreFn = Callable[[Tensor], Tensor]
Target = int | str | Sequence[int] | Sequence[Sequence[int]] | Tensor | ScoreFn | None
"""A class index for every sample; ``"predicted"`` (or ``None``) for the arg-max class; ``"all"`` for every
class (K = C maps); a sequence of B class indices (one per sample); B sequences of K indices, or a
``(B, K)`` tensor (several classes at once); or a callable mapping the ``(B, C)`` output to ``(B,)`` or
``(B, K)`` scores (any objective, e.g. a sum of labels of a multi-label sigmoid model)."""


@dataclass(frozen=True)
class ResolvedTarget:
    """Targets resolved against one batch of model outputs.

    Attributes:
        indices: ``(B, K)`` long class indices; ``-1`` for a callable target.
        score_fn: the callable, or ``None`` when the targets are class indices.
    """

    indices: Tensor
    score_fn: ScoreFn | None = None

    def scores(self, output: Tensor) -> Tensor:
        """The scalars to explain, ``(B, K)``, taken from model output ``(B, C)`` (differentiable)."""
        if self.score_fn is None:
            return output.gather(1, self.indices.to(output.device))
        scores = self.score_fn(output)
        if scores.ndim == 1:
            scores = scores.unsqueeze(1)
        if scores.ndim != 2 or scores.shape[0] != output.shape[0]:
            raise MedexplainError(
                f"target callable must return (B,) or (B, K) scores, got shape {tuple(scores.shape)}"
            )
        return scores

    def select(self, samples: Tensor) -> ResolvedTarget:
        """The targets of the samples ``samples`` (N,) long, e.g. of the perturbed copies in one model call."""
        return ResolvedTarget(self.indices[samples.to(self.indices.device)], self.score_fn)


def check_output(output: Tensor) -> None:
    """Explainers need ``(B, C)`` logits; anything else is a clear error."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise MedexplainError(f"model output must be (B, K) logits, got {shape}")


def resolve_target(output: Tensor, target: Target) -> ResolvedTarget:
    """Resolve ``target`` (see :data:`Target`) against model output ``(B, C)``."""
    check_output(output)
    batch, num_classes = output.shape
    if isinstance(target, ResolvedTarget):
        if target.indices.shape[0] != batch:
            raise MedexplainError(f"resolved targets for {target.indices.shape[0]} samples, batch has {batch}")
        if target.score_fn is not None:
            return target
        indices = target.indices
    elif callable(target):
        probe = target(output.detach())
        k = 1 if probe.ndim == 1 else int(probe.shape[1])
        return ResolvedTarget(torch.full((batch, k), -1, dtype=torch.long, device=output.device), target)
    elif target is None or target == "predicted":
        indices = output.detach().argmax(dim=1, keepdim=True)
    elif target == "all":
        indices = torch.arange(num_classes, device=output.device).expand(batch, num_classes)
    elif isinstance(target, str):
        raise MedexplainError(f"unknown target {target!r}; use a class index, 'predicted' or 'all'")
    else:
        indices = _as_index_tensor(target, batch, output.device)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_classes):
        bad = int(indices.max()) if int(indices.max()) >= num_classes else int(indices.min())
        raise MedexplainError(f"target class {bad} is out of range for a model with {num_classes} outputs")
    return ResolvedTarget(indices.contiguous())


def explicit_indices(target: Target, batch: int, device: torch.device | str = "cpu") -> Tensor | None:
    """``(B, K)`` class indices when ``target`` names them without needing the model output, else ``None``
    (``"predicted"``, ``"all"``, callables). The range is checked later by :func:`resolve_target`."""
    if target is None or isinstance(target, str | ResolvedTarget) or callable(target):
        return None
    return _as_index_tensor(target, batch, torch.device(device))


def _as_index_tensor(target: int | Sequence | Tensor, batch: int, device: torch.device) -> Tensor:
    indices = torch.as_tensor(target, device=device)
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise MedexplainError(f"target class indices must be integers, got dtype {indices.dtype}")
    indices = indices.long()
    if indices.ndim == 0:
        return indices.expand(batch, 1)
    if indices.ndim == 1:
        if indices.shape[0] != batch:
            raise MedexplainError(
                f"a per-sample target list needs {batch} entries (one per sample), got {indices.shape[0]}"
            )
        return indices.unsqueeze(1)
    if indices.ndim == 2 and indices.shape[0] == batch:
        return indices
    raise MedexplainError(f"targets of shape {tuple(indices.shape)} do not fit a batch of {batch}")
