"""Input conventions shared by every metric: map and mask shapes, NaN checks, empty masks, ranks.

Convention: maps and masks are ``(B, *spatial)``; ``spatial`` is ``(H, W)`` in 2D and ``(D, H, W)`` in 3D.
A singleton channel axis, ``(B, 1, *spatial)`` (the layout of ``Batch.masks`` and of one-target
``Explanation.maps``), is accepted explicitly and removed. Anything else that does not line up is a
:class:`~medexplain.errors.MedexplainError`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from medexplain.errors import MedexplainError


class EmptyMaskWarning(UserWarning):
    """A ground-truth mask has no foreground: the sample's score is NaN and summaries exclude it."""


def as_float(maps: Tensor, name: str = "maps") -> Tensor:
    """``maps`` as a floating tensor (float16 maps from disk become float32); NaN or inf is an error."""
    if not isinstance(maps, Tensor):
        raise MedexplainError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim < 2:
        raise MedexplainError(f"{name} must be (B, *spatial), got shape {tuple(maps.shape)}")
    if not maps.is_floating_point() or maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    if not bool(torch.isfinite(maps).all()):
        raise MedexplainError(f"{name} contains NaN or infinite values")
    return maps


def drop_channel(tensor: Tensor, spatial: tuple[int, ...], name: str) -> Tensor:
    """``tensor`` of shape ``(B, *spatial)`` or ``(B, 1, *spatial)`` as ``(B, *spatial)``."""
    shape = tuple(tensor.shape[1:])
    if shape == spatial:
        return tensor
    if shape == (1, *spatial):
        return tensor.squeeze(1)
    raise MedexplainError(
        f"{name} of shape {tuple(tensor.shape)} does not match spatial shape {spatial}: "
        f"expected (B, *spatial) or (B, 1, *spatial)"
    )


def maps_and_mask(maps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Validated ``(maps (B, *spatial) float, mask (B, *spatial) bool)`` on the maps' device.

    Either may carry a singleton channel axis. A mask must hold only 0 and 1.
    """
    maps = as_float(maps)
    if not isinstance(mask, Tensor):
        raise MedexplainError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if maps.ndim == mask.ndim + 1:
        maps = drop_channel(maps, tuple(mask.shape[1:]), "maps")
    elif mask.ndim == maps.ndim + 1:
        mask = drop_channel(mask, tuple(maps.shape[1:]), "mask")
    if maps.shape != mask.shape:
        raise MedexplainError(f"maps shape {tuple(maps.shape)} and mask shape {tuple(mask.shape)} differ")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise MedexplainError("mask must be binary (values 0 and 1)")
        mask = mask != 0
    return maps, mask.to(maps.device)


def nan_where_empty(scores: Tensor, mask: Tensor, metric: str) -> Tensor:
    """Set ``scores`` (B,) to NaN where ``mask`` (B, ...) is empty, warning once with the sample indices."""
    return nan_where_undefined(scores, ~mask.flatten(1).any(1), metric, "empty ground-truth mask", EmptyMaskWarning)


class UndefinedScoreWarning(EmptyMaskWarning):
    """A map the metric cannot score (e.g. an all-zero Grad-CAM points nowhere and has no mass): NaN."""


def nan_where_undefined(
    scores: Tensor, undefined: Tensor, metric: str, reason: str, category: type[Warning] | None = None
) -> Tensor:
    """Set ``scores`` (B,) to NaN where ``undefined`` (B,) holds, warning once (``category``, default
    :class:`UndefinedScoreWarning`) with the sample indices."""
    if bool(undefined.any()):
        where = undefined.nonzero().flatten().tolist()
        warnings.warn(
            f"{metric}: {reason} for samples {where}; their score is NaN (excluded from summaries)",
            category or UndefinedScoreWarning,
            stacklevel=3,
        )
        scores = scores.masked_fill(undefined.to(scores.device), float("nan"))
    return scores


def sort_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(sorted values, order)`` of each row of ``values`` (B, N), ascending.

    On the CPU numpy's sort (several times faster than ``torch.sort`` there); elsewhere ``torch.sort``.
    """
    if values.device.type == "cpu":
        order = np.argsort(values.detach().numpy(), axis=1)
        order_t = torch.from_numpy(order)
        return values.gather(1, order_t), order_t
    return values.sort(dim=1)


def sorted_values(values: Tensor) -> Tensor:
    """Each row of ``values`` (B, N) sorted ascending (numpy on the CPU, see :func:`sort_rows`)."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.detach().numpy(), axis=1))
    return values.sort(dim=1).values


def _tied_ranks(ordered: Tensor) -> Tensor:
    """1-based average ranks of the already sorted rows ``ordered`` (B, N) (ties share their mean rank)."""
    n = ordered.shape[1]
    position = torch.arange(n, device=ordered.device).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(1).values
    last = torch.where(ends, position, n).flip(1).cummin(1).values.flip(1)
    return (first + last).to(torch.float64) / 2 + 1


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..N`` along the rows of ``values`` (B, N), ties sharing their average rank (scipy's rankdata)."""
    ordered, order = sort_rows(values)
    return torch.empty(values.shape, dtype=torch.float64, device=values.device).scatter_(1, order, _tied_ranks(ordered))


def _sorted_with_labels(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of ``scores`` sorted ascending (as order-preserving keys) and ``positive`` in the same order.

    For float32 on the CPU one integer sort does both: each value becomes an order-preserving int32 key
    (``-0.0`` first turned into ``+0.0``), shifted left with the label in the free bit. Otherwise an argsort.
    """
    if scores.device.type == "cpu" and scores.dtype == torch.float32:
        bits = (scores + 0.0).numpy().view(np.int32)
        keys = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits).astype(np.int64)
        keys <<= 1
        keys |= positive.numpy()
        keys.sort(axis=1)
        labels = (keys & 1).astype(bool)
        keys >>= 1
        return torch.from_numpy(keys), torch.from_numpy(labels)
    ordered, order = sort_rows(scores)
    return ordered, positive.gather(1, order)


def rank_auroc(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the ROC curve of ``scores`` (B, N) for boolean labels ``positive`` (B, N), per row.

    The Mann-Whitney statistic, ties counted one half (equal to ``sklearn.metrics.roc_auc_score``). Rows with
    no positive or no negative are NaN.
    """
    ordered, labels = _sorted_with_labels(scores, positive.bool())
    n_pos = labels.sum(-1).to(torch.float64)
    n_neg = labels.shape[-1] - n_pos
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        rank_sum = (_tied_ranks(ordered) * labels).sum(-1)
    else:  # no ties: the ranks are the sorted positions
        rank_sum = labels.to(torch.float64) @ torch.arange(1, labels.shape[1] + 1, device=labels.device).double()
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return auc.masked_fill((n_pos == 0) | (n_neg == 0), float("nan"))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` (B, N), computed in float64; constant rows give NaN."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of the rows of ``a`` and ``b`` (B, N), ties sharing average ranks."""
    return pearson(average_ranks(a), average_ranks(b))
