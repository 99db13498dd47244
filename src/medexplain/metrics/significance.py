"""Paired tests over images: is one map's score better than another's on the same images, and by chance?

:func:`wilcoxon_signed_rank` is the one-sided Wilcoxon signed-rank test (Wilcoxon 1945), the audit's comparison
of a method with a baseline on the same images; :func:`holm` corrects a family of p-values for multiple
comparisons (Holm 1979). Plain numpy, so a verdict needs no statistics package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medexplain.errors import MedexplainError

EXACT_MAX = 25
"""Below this many non-zero differences without ties, p-values are exact (the null distribution enumerated)."""


@dataclass(frozen=True)
class PairedTest:
    """``statistic``: the sum of the ranks of the positive differences ``W+``; ``n``: the non-zero differences
    used; ``p``: one-sided p-value that the first sample is greater; ``method``: ``"exact"`` or ``"normal"``."""

    statistic: float
    n: int
    p: float
    method: str


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _exact_upper_tail(statistic: float, n: int) -> float:
    """P(W+ >= statistic) under the null for ranks 1..n (all 2^n sign patterns equally likely)."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[: top + 1 - rank].copy()
    return float(counts[math.ceil(statistic - 1e-9) :].sum() / 2**n)


def wilcoxon_signed_rank(first: Sequence[float], second: Sequence[float]) -> PairedTest:
    """One-sided Wilcoxon signed-rank test that ``first`` is greater than ``second`` (paired by position).

    Pairs with a NaN are dropped, so are zero differences (Wilcoxon's method); ties share their average rank.
    Exact p-value for at most :data:`EXACT_MAX` differences without ties, else the normal approximation with the
    tie correction and no continuity correction. Equal to ``scipy.stats.wilcoxon(first, second,
    alternative="greater", zero_method="wilcox", correction=False, method=...)``.
    """
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise MedexplainError(f"paired samples must be two equally long sequences, got {a.shape} and {b.shape}")
    differences = (a - b)[~(np.isnan(a) | np.isnan(b))]
    differences = differences[differences != 0]
    n = len(differences)
    if n == 0:
        return PairedTest(math.nan, 0, math.nan, "none")
    ranks = _average_ranks(np.abs(differences))
    statistic = float(ranks[differences > 0].sum())
    _, tie_counts = np.unique(np.abs(differences), return_counts=True)
    if n <= EXACT_MAX and (tie_counts == 1).all():
        return PairedTest(statistic, n, _exact_upper_tail(statistic, n), "exact")
    mean = n * (n + 1) / 4
    variance = n * (n + 1) * (2 * n + 1) / 24 - float((tie_counts**3 - tie_counts).sum()) / 48
    if variance <= 0:
        return PairedTest(statistic, n, math.nan, "normal")
    z = (statistic - mean) / math.sqrt(variance)
    return PairedTest(statistic, n, 0.5 * math.erfc(z / math.sqrt(2)), "normal")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), math.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - position) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
