"""Concept influence on each class: TCAV directional derivatives, TCAV scores and their significance.

Kim et al., "Interpretability beyond feature attribution: quantitative testing with concept activation
vectors (TCAV)", ICML 2018: the sensitivity of class k to concept c at image x is the directional derivative
of the class logit along the concept activation vector (CAV) in the activation space of a layer; the TCAV
score is the share of class-k images with a positive derivative; Kim et al. call it significant when TCAV
scores of CAVs re-trained on resampled data differ from those of random CAVs (two-sided t-test). We report that
test and, as the significance decision, a test of the derivative's magnitude against random CAVs that does not
drift with the number of runs (see :func:`tcav_significance`); p-values are Holm-corrected over concepts.

Which direction, precisely. A concept probe is fit on pooled, standardised features ``z = (pool(A) - m) / s`` of the
layer output ``A (C, *spatial)``. The concept direction in the layer's own space is the spatially uniform
shift ``u (C,)`` of ``A`` that increases the probe logit fastest: shifting every position of ``A`` by ``t u``
moves both the mean and the max pool by exactly ``t u``, so d probe / d u = sum over pool blocks of ``w / s``
(``Probe.raw_weights`` summed block-wise), and ``u`` is that vector normalised to unit length. The CAV used for
influence is the normalised mean of such directions over probes re-fit on resampled data (:func:`bagged_direction`).
The derivative of logit k along ``u`` is ``sum_{c,i} dlogit_k/dA(c, i) u_c = g_k . u`` with ``g_k`` the gradient
summed over the positions ``i`` (``Activations.gradients``). For a head ``logit = W mean(A)`` it is ``W_k . u``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medexplain.concepts.probes import Probe
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


def bagged_direction(directions: np.ndarray) -> np.ndarray:
    """The unit mean ``(C,)`` of unit directions ``(R, C)`` fit on resampled data (a bagged CAV)."""
    return layer_direction(directions.mean(0), directions.shape[1])


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
    C: float = 0.01,
    fraction: float = 0.8,
    random_labels: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """``(runs, C)`` unit directions of probes re-fit on stratified ``fraction`` subsamples of ``(features, y)``.

    With ``random_labels`` the targets of each subsample are permuted (same number of positives): the random
    CAVs against which TCAV scores are tested. C is fixed (the same for the concept and its random CAVs).
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
    """Per class k, on the images of class k: is the concept more influential than random directions?

    gradients ``(N, K, C)``; labels ``(N,)`` (when no image has label k, e.g. all -1, all images are used);
    concept and random directions ``(R, C)`` and ``(R', C)``. Two tests, both two-sided:

    - ``p_tcav``: Kim et al.'s t-test of the TCAV scores of the concept CAVs against those of the random CAVs.
      Reported as in the paper, but it is blind to magnitude (in a nearly linear network every direction has
      a TCAV score near 0 or 1) and its p-value shrinks with the number of runs even for a negligible effect.
    - ``p``: the mean directional derivative of the concept (averaged over its CAVs) against the distribution
      of the same statistic over random CAVs, as a t prediction interval:
      ``t = (d_concept - mean_random) / (sd_random sqrt(1 + 1/R'))`` with ``R' - 1`` degrees of freedom. It asks
      whether the concept direction moves the class logit more than a random direction of the layer does,
      and does not become significant just by adding runs.

    Rows: ``class, n_images, tcav_mean, tcav_std, random_tcav_mean, random_tcav_std, t_tcav, p_tcav,
    derivative_mean, random_derivative_mean, random_derivative_std, t, p``.
    """
    rows = []
    for k in range(gradients.shape[1]):
        members = labels == k
        members = members if members.any() else np.ones(len(labels), dtype=bool)
        g = gradients[members, k]
        concept, random = g @ concept_directions.T, g @ random_directions.T
        concept_tcav, random_tcav = tcav_scores(concept), tcav_scores(random)
        with warnings.catch_warnings():  # constant score sets (all 0 or all 1) are expected, not a problem
            warnings.simplefilter("ignore", RuntimeWarning)
            t_tcav, p_tcav = stats.ttest_ind(concept_tcav, random_tcav)
        if not np.isfinite(p_tcav):
            t_tcav, p_tcav = 0.0, 1.0
        effect, null = concept.mean(0).mean(), random.mean(0)
        spread = null.std(ddof=1) * math.sqrt(1 + 1 / len(null))
        t = (effect - null.mean()) / spread if spread > 0 else (0.0 if effect == null.mean() else math.inf)
        rows.append(
            {
                "class": k,
                "n_images": int(members.sum()),
                "tcav_mean": float(concept_tcav.mean()),
                "tcav_std": _std(concept_tcav),
                "random_tcav_mean": float(random_tcav.mean()),
                "random_tcav_std": _std(random_tcav),
                "t_tcav": float(t_tcav),
                "p_tcav": float(p_tcav),
                "derivative_mean": float(effect),
                "random_derivative_mean": float(null.mean()),
                "random_derivative_std": _std(null),
                "t": float(t),
                "p": float(2 * stats.t.sf(abs(t), df=max(len(null) - 1, 1))),
            }
        )
    return rows


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


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
