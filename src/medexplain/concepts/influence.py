"""Concept influence on each class: TCAV directional derivatives, TCAV scores and their significance.

Kim et al., "Interpretability beyond feature attribution: quantitative testing with concept activation
vectors (TCAV)", ICML 2018: the sensitivity of class k to concept c at image x is the directional derivative
of the class logit along the concept activation vector (CAV) in the activation space of a layer; the TCAV
score is the share of class-k images with a positive derivative; it is significant when TCAV scores of CAVs
re-trained on resampled data differ from those of random CAVs (two-sided t-test; corrected over concepts).

Which direction, precisely. The probe is fit on pooled, standardised features ``z = (pool(A) - m) / s`` of the
layer output ``A (C, *spatial)``. The concept direction in the layer's own space is the spatially uniform
shift ``u (C,)`` of ``A`` that increases the probe logit fastest: shifting every position of ``A`` by ``t u``
moves both the mean and the max pool by exactly ``t u``, so d probe / d u = sum over pool blocks of ``w / s``
(``Probe.raw_weights`` summed block-wise), and ``u`` is that vector normalised to unit length. The derivative
of logit k along it is ``sum_{c,i} dlogit_k/dA(c, i) u_c = g_k . u`` with ``g_k`` the gradient summed over the
positions ``i`` (``Activations.gradients``). For a head ``logit = W mean(A)`` this is exactly ``W_k . u``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medexplain.concepts.probes import FALLBACK_C, Probe
from medexplain.errors import MedexplainError


def layer_direction(raw_weights: np.ndarray, channels: int) -> np.ndarray:
    """Unit concept direction ``(C,)`` in the layer's activation space from probe weights on pooled features.

    ``raw_weights (F,)`` is the gradient of the probe logit with respect to the un-standardised pooled
    features, ``F = channels * number of pools``; the blocks are summed (see the module docstring).
    """
    raw = np.asarray(raw_weights, dtype=float)
    if raw.size % channels:
        raise MedexplainError(f"probe has {raw.size} weights, not a multiple of the layer's {channels} channels")
    direction = raw.reshape(-1, channels).sum(0)
    norm = np.linalg.norm(direction)
    if not np.isfinite(norm) or norm == 0:
        raise MedexplainError("the probe's concept direction is zero; the concept is not linearly encoded")
    return direction / norm


def probe_direction(probe: Probe, channels: int) -> np.ndarray:
    """The unit layer-space direction ``(C,)`` of a fitted probe."""
    return layer_direction(probe.raw_weights, channels)


def directional_derivatives(gradients: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``(N, K)`` derivatives of each class logit along ``direction (C,)`` from gradients ``(N, K, C)``."""
    return gradients @ direction


def tcav_scores(derivatives: np.ndarray) -> np.ndarray:
    """TCAV score per direction: the share of images with a positive derivative; ``(N, ...)`` -> ``(...)``."""
    return (derivatives > 0).mean(axis=0)


def resampled_directions(
    features: np.ndarray,
    y: np.ndarray,
    *,
    channels: int,
    runs: int = 20,
    C: float = FALLBACK_C,
    fraction: float = 0.8,
    random_labels: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """``(runs, C)`` unit directions of probes re-fit on stratified ``fraction`` subsamples of ``(features, y)``.

    With ``random_labels`` the targets of each subsample are permuted (same number of positives): the random
    CAVs against which TCAV scores are tested. The probe's C is kept fixed (chosen once on all the data).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.int64)
    groups = [np.flatnonzero(y == v) for v in (0, 1)]
    directions = []
    for _ in range(runs):
        sizes = [min(len(g), max(2, round(fraction * len(g)))) for g in groups]
        rows = np.concatenate([rng.choice(g, size, replace=False) for g, size in zip(groups, sizes, strict=True)])
        targets = rng.permutation(y[rows]) if random_labels else y[rows]
        scaler = StandardScaler().fit(features[rows])
        logreg = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
        logreg.fit(scaler.transform(features[rows]), targets)
        directions.append(layer_direction(logreg.coef_[0] / scaler.scale_, channels))
    return np.stack(directions)


def tcav_significance(
    gradients: np.ndarray,
    labels: np.ndarray,
    concept_directions: np.ndarray,
    random_directions: np.ndarray,
) -> list[dict[str, float]]:
    """Per class k: TCAV scores of concept vs random CAVs on the images of class k, with a two-sided t-test.

    gradients ``(N, K, C)``; labels ``(N,)`` (images with label -1 or a class without images: all images are
    used); directions ``(R, C)``. Rows: ``class, n_images, tcav_mean, tcav_std, random_mean, random_std, t, p``.
    Identical constant scores give ``p = 1``.
    """
    rows = []
    for k in range(gradients.shape[1]):
        members = labels == k
        members = members if members.any() else np.ones(len(labels), dtype=bool)
        g = gradients[members, k]
        concept = tcav_scores(g @ concept_directions.T)
        random = tcav_scores(g @ random_directions.T)
        t, p = stats.ttest_ind(concept, random)
        if not np.isfinite(p):
            t, p = 0.0, 1.0
        rows.append(
            {
                "class": k,
                "n_images": int(members.sum()),
                "tcav_mean": float(concept.mean()),
                "tcav_std": float(concept.std(ddof=1)) if len(concept) > 1 else 0.0,
                "random_mean": float(random.mean()),
                "random_std": float(random.std(ddof=1)) if len(random) > 1 else 0.0,
                "t": float(t),
                "p": float(p),
            }
        )
    return rows


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error), same order as ``pvalues``; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full_like(p, math.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def score_correlation(concept_scores: np.ndarray, class_probability: np.ndarray) -> tuple[float, float]:
    """Spearman correlation (and its p-value) of concept scores ``(N,)`` with a class probability ``(N,)``."""
    if np.ptp(concept_scores) == 0 or np.ptp(class_probability) == 0:
        return math.nan, math.nan
    rho, p = stats.spearmanr(concept_scores, class_probability)
    return float(rho), float(p)
