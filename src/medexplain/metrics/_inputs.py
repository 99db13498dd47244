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
    if maps.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(maps))).all()):  # NaN propagates
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


def order_keys(values: np.ndarray) -> np.ndarray:
    """Signed integers ordered as the floats ``values`` (float32 -> int32, float64 -> int64), elementwise.

    IEEE 754 floats are sign and magnitude: read as two's complement integers, the negative ones count the wrong
    way, so their magnitude bits are flipped. ``-0.0`` is first turned into ``+0.0``, so the two tie. The map is
    its own inverse on the integers (:func:`_flip_negative`).
    """
    return _flip_negative((values + values.dtype.type(0)).view(f"i{values.dtype.itemsize}"))


def _flip_negative(bits: np.ndarray) -> np.ndarray:
    return bits ^ ((bits >> (8 * bits.itemsize - 1)) & np.iinfo(bits.dtype).max)


RADIX_SORT_MIN = 32768
"""torch sorts a 1D CPU integer tensor of at least this many values (its ``GRAIN_SIZE``) by radix sort."""


def sort_integers(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted keys, stable order)`` of a 1D integer array.

    torch's CPU sort of a 1D integer tensor of at least :data:`RADIX_SORT_MIN` values is fbgemm's radix sort
    (counting passes over the bytes): ~7-9 ns per int32 value on this AMD EPYC, with no SIMD sorting network
    whose speed differs between CPUs (numpy's AVX-512 sort of float32 runs at ~20 ns per value here and several
    times faster on Intel AVX-512 cores, and gives no order without an argsort twice as slow). Shorter rows
    from a quarter of that size on are padded with copies of their largest key, which a stable sort leaves at
    the end (a 16k row: ~0.23 ms padded against ~0.77 ms by torch's comparison sort).
    """
    size = len(keys)
    if RADIX_SORT_MIN // 4 <= size < RADIX_SORT_MIN:
        keys = np.concatenate([keys, np.full(RADIX_SORT_MIN - size, keys.max(), dtype=keys.dtype)])
    ordered, order = torch.from_numpy(keys).sort(stable=True)
    return ordered.numpy()[:size], order.numpy()[:size]


def sort_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(sorted values, order)`` of each row of ``values`` (B, N), ascending, ties in index order.

    Float rows on the CPU are sorted as their :func:`order_keys` by :func:`sort_integers`; otherwise
    ``torch.sort``. ``-0.0`` comes back as ``+0.0``.
    """
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64) and len(values):
        rows = values.detach().numpy()
        if rows.dtype == np.float32 and rows.shape[1] < RADIX_SORT_MIN // 4:
            return _sort_short_rows(rows)
        pairs = [sort_integers(order_keys(row)) for row in rows]
        ordered = np.stack([_flip_negative(keys) for keys, _ in pairs]).view(rows.dtype)
        return torch.from_numpy(ordered), torch.from_numpy(np.stack([order for _, order in pairs]))
    return values.sort(dim=1, stable=True)


def _sort_short_rows(rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """:func:`sort_rows` of float32 rows too short for a radix sort each (e.g. 16 maps of 32^2: one sort per
    row costs more in calls than in sorting): all rows in one :func:`sort_integers` of 64-bit keys, the row
    index above each value's 32-bit order key."""
    count, size = rows.shape
    keys = order_keys(rows).astype(np.int64) + 2**31  # 0 .. 2^32 - 1, in the order of the values
    keys += (np.arange(count, dtype=np.int64) << 32)[:, None]
    ordered, order = sort_integers(keys.ravel())
    values = _flip_negative(((ordered & 0xFFFFFFFF) - 2**31).astype(np.int32)).view(np.float32)
    order = order.reshape(count, size) - np.arange(0, count * size, size)[:, None]
    return torch.from_numpy(values.reshape(count, size)), torch.from_numpy(order)


def sorted_values(values: Tensor) -> Tensor:
    """Each row of ``values`` (B, N) sorted ascending, as :func:`sort_rows` without the order."""
    return sort_rows(values)[0]


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


def _twice_u(values: np.ndarray, positive: np.ndarray) -> int:
    """``2U`` of one row (Mann-Whitney: positives above negatives, ties counted one half); exact integers.

    One sort of the values with the negatives first among equal values: then the negatives below a positive
    are its position less the positives before it, and each group of equal values with ``p`` positives and
    ``q`` negatives counted ``p q`` pairs whole that count one half, so ``2U = 2 sum_pos (negatives before) -
    sum_g p_g q_g``. The label rides in the lowest bit of the sort key (``2 (key - min) + label``) when the
    keys' range leaves that bit free (always for maps of one sign); otherwise the negatives' keys are put
    before the positives' and a stable sort keeps them first.
    """
    keys = order_keys(values)
    n_pos = int(np.count_nonzero(positive))
    low = keys.min()
    if int(keys.max()) - int(low) < 2 ** (8 * keys.itemsize - 2):
        ordered, _ = sort_integers(((keys - low) << 1) | positive)
        groups, is_pos = ordered >> 1, (ordered & 1).astype(bool)
    else:
        groups, source = sort_integers(np.concatenate([keys[~positive], keys[positive]]))
        is_pos = source >= len(keys) - n_pos
    twice_below = 2 * int(np.flatnonzero(is_pos).sum()) - n_pos * (n_pos - 1)
    last_negative = np.flatnonzero((groups[1:] == groups[:-1]) & is_pos[1:])
    last_negative = last_negative[~is_pos[last_negative]]  # a group's last negative, followed by its positives
    if not len(last_negative):
        return twice_below
    value = groups[last_negative]
    negatives = last_negative + 1 - np.searchsorted(groups, value, "left")
    positives = np.searchsorted(groups, value, "right") - last_negative - 1
    return twice_below - int((negatives * positives).sum())


def rank_auroc(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the ROC curve of ``scores`` (B, N) float for boolean labels ``positive`` (B, N), per row.

    The Mann-Whitney statistic ``U / (n_pos n_neg)``, ties counted one half (equal to
    ``sklearn.metrics.roc_auc_score``), from integer counts after one integer sort per row (:func:`_twice_u`),
    so it is exact. Computed with numpy on the CPU (maps on an accelerator are copied there); float64 on the
    maps' device. Rows with no positive or no negative are NaN.
    """
    values, labels = scores.detach().cpu().numpy(), positive.bool().cpu().numpy()
    twice_u = torch.tensor([_twice_u(v, p) for v, p in zip(values, labels, strict=True)], dtype=torch.float64)
    n_pos = torch.from_numpy(labels.sum(-1)).to(torch.float64)
    n_neg = labels.shape[-1] - n_pos
    auc = twice_u / 2 / (n_pos * n_neg)
    return auc.masked_fill((n_pos == 0) | (n_neg == 0), float("nan")).to(scores.device)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` (B, N), computed in float64; constant rows give NaN."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
