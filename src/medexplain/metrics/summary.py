"""Summaries of per-sample scores: mean and seeded percentile-bootstrap 95 % interval per method and metric.

NaN scores (samples with an empty mask, see :mod:`medexplain.metrics._inputs`) are excluded from the mean and
interval, counted in ``excluded`` and announced with a warning, so a summary never hides them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from medexplain.errors import MedexplainError


def bootstrap_interval(
    values: Iterable[float], *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval (Efron 1979).

    ``resamples`` resamples with replacement from ``numpy.random.default_rng(seed)``; all NaN for no values.
    """
    data = np.asarray(list(values), dtype=np.float64)
    if not 0 < confidence < 1:
        raise MedexplainError(f"confidence must be in (0, 1), got {confidence}")
    if data.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(data.mean()), float(low), float(high)


def summarise(
    rows: Iterable[Mapping[str, object]],
    *,
    keys: tuple[str, ...] = ("method", "metric"),
    value: str = "score",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict[str, object]]:
    """One row per distinct ``keys`` of ``rows`` (per-sample records) with the bootstrap summary of ``value``.

    Returns:
        dicts with the ``keys`` and ``n`` (scored samples), ``excluded`` (NaN scores), ``mean``, ``ci_low``,
        ``ci_high``; in first-seen order of the groups. Every group uses the same ``seed``.
    """
    groups: dict[tuple[object, ...], list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(float(row[value]))  # type: ignore[arg-type]
    summary = []
    for group, scores in groups.items():
        finite = [s for s in scores if not math.isnan(s)]
        excluded = len(scores) - len(finite)
        if excluded:
            label = " / ".join(str(g) for g in group)
            warnings.warn(f"{label}: {excluded} of {len(scores)} scores are NaN and excluded", stacklevel=2)
        mean, low, high = bootstrap_interval(finite, resamples=resamples, confidence=confidence, seed=seed)
        summary.append(
            {
                **dict(zip(keys, group, strict=True)),
                "n": len(finite),
                "excluded": excluded,
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return summary
