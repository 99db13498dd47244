"""Concept probes: L2-regularised logistic regression on standardised pooled activations (scikit-learn).

How well a network encodes a radiological feature is how well a linear probe on its activations predicts
the feature (Wang et al., SPIE Medical Imaging 2019; the concept activation vector of Kim et al., ICML 2018).
C is chosen by stratified cross-validation (AUROC); classes are weighted by their frequency so that the
default threshold 0.5 means the same for rare and common concepts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from medexplain.errors import MedexplainError

DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
FALLBACK_C = 1.0


@dataclass(frozen=True)
class Probe:
    """A fitted probe: ``logit(a) = coef . (a - mean) / scale + intercept`` for pooled activations ``a (F,)``."""

    concept: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    C: float
    threshold: float = 0.5

    def logit(self, features: np.ndarray) -> np.ndarray:
        """Probe logit ``(N,)`` for pooled activations ``(N, F)``."""
        return ((features - self.mean) / self.scale) @ self.coef + self.intercept

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Probability ``(N,)`` that the concept is present."""
        return 1.0 / (1.0 + np.exp(-self.logit(features)))

    @property
    def raw_weights(self) -> np.ndarray:
        """Gradient of the probe logit with respect to the un-standardised pooled activations, ``(F,)``."""
        return self.coef / self.scale


def binary_targets(values: np.ndarray, concept: str) -> tuple[np.ndarray, np.ndarray]:
    """``(annotated_rows, y)``: rows with an annotation (not NaN) and their 0/1 targets; bad columns raise."""
    values = np.asarray(values, dtype=float)
    annotated = ~np.isnan(values)
    y = values[annotated]
    if not np.isin(y, (0.0, 1.0)).all():
        raise MedexplainError(f"concept {concept!r}: annotations must be 0 or 1, found {sorted(set(y.tolist()))[:5]}")
    return np.flatnonzero(annotated), y.astype(np.int64)


def check_trainable(y: np.ndarray, concept: str, folds: int) -> None:
    """Raise unless ``y`` has both values and at least ``folds`` examples of each."""
    counts = np.bincount(y, minlength=2)
    if not len(y):
        raise MedexplainError(f"concept {concept!r}: no training example is annotated")
    if counts.min() == 0:
        raise MedexplainError(
            f"concept {concept!r}: every annotated training example has the value {int(y[0])}; "
            "a probe needs examples with and without the concept"
        )
    if counts.min() < folds:
        raise MedexplainError(
            f"concept {concept!r}: only {counts.min()} annotated examples of the rarer value, fewer than the "
            f"{folds} cross-validation folds"
        )


def _pipeline(C: float = FALLBACK_C) -> Pipeline:
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("logreg", LogisticRegression(C=C, class_weight="balanced", max_iter=5000)),
        ]
    )


def _fit(features: np.ndarray, y: np.ndarray, folds: int, Cs: Sequence[float], seed: int) -> Pipeline:
    """Fit with C chosen by ``folds``-fold CV; with fewer than 2 examples of a value, C falls back to 1."""
    folds = min(folds, int(np.bincount(y, minlength=2).min()))
    if folds < 2 or len(Cs) == 1:
        return _pipeline(Cs[0] if len(Cs) == 1 else FALLBACK_C).fit(features, y)
    search = GridSearchCV(
        _pipeline(),
        {"logreg__C": list(Cs)},
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        scoring="roc_auc",
    )
    return search.fit(features, y).best_estimator_


def _as_probe(pipeline: Pipeline, concept: str, threshold: float) -> Probe:
    scaler, logreg = pipeline.named_steps["scale"], pipeline.named_steps["logreg"]
    return Probe(
        concept=concept,
        mean=scaler.mean_.copy(),
        scale=scaler.scale_.copy(),
        coef=logreg.coef_[0].copy(),
        intercept=float(logreg.intercept_[0]),
        C=float(logreg.C),
        threshold=threshold,
    )


def fit_probe(
    features: np.ndarray,
    y: np.ndarray,
    *,
    concept: str = "concept",
    folds: int = 5,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    threshold: float = 0.5,
) -> Probe:
    """Fit one probe on pooled activations ``(N, F)`` and 0/1 targets ``(N,)``, C by ``folds``-fold CV."""
    y = np.asarray(y, dtype=np.int64)
    check_trainable(y, concept, folds)
    return _as_probe(_fit(features, y, folds, Cs, seed), concept, threshold)


def cross_validated_probability(
    features: np.ndarray, y: np.ndarray, *, folds: int = 5, Cs: Sequence[float] = DEFAULT_CS, seed: int = 0
) -> np.ndarray:
    """Out-of-fold probe probabilities ``(N,)``; C is re-chosen inside each outer training fold (nested CV)."""
    y = np.asarray(y, dtype=np.int64)
    out = np.empty(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        out[test] = _fit(features[train], y[train], folds, Cs, seed).predict_proba(features[test])[:, 1]
    return out


@dataclass(frozen=True)
class ProbeScores:
    """AUROC of the probe's scores, and precision and recall of ``score >= threshold``, on ``n`` images."""

    auroc: float
    precision: float
    recall: float
    n: int
    positives: int


def score_probe(probability: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> ProbeScores:
    """Scores of probabilities ``(N,)`` against 0/1 targets ``(N,)``; AUROC is NaN when ``y`` has one value."""
    y = np.asarray(y, dtype=np.int64)
    detected = probability >= threshold
    auroc = float(roc_auc_score(y, probability)) if len(np.unique(y)) == 2 else math.nan
    return ProbeScores(
        auroc=auroc,
        precision=float(precision_score(y, detected, zero_division=np.nan)),
        recall=float(recall_score(y, detected, zero_division=np.nan)),
        n=len(y),
        positives=int(y.sum()),
    )


def learning_curve(
    train_features: np.ndarray,
    train_y: np.ndarray,
    test_features: np.ndarray,
    test_y: np.ndarray,
    *,
    sizes: Sequence[int] = (10, 20, 50, 100, 200, 500),
    draws: int = 5,
    folds: int = 5,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Held-out AUROC of probes fit on ``size`` annotated training examples, ``draws`` seeded draws per size.

    As in Wang et al. (10 annotated examples per feature): each draw keeps the training prevalence but at
    least 2 examples of each value; C is chosen by CV inside the draw (fewer folds when the draw is small).
    The full training set is always the last size. Rows: ``{"size", "draw", "auroc"}``.
    """
    train_y = np.asarray(train_y, dtype=np.int64)
    if len(np.unique(test_y)) < 2:
        return []
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(train_y == 1), np.flatnonzero(train_y == 0)
    n = len(train_y)
    rows: list[dict[str, float]] = []
    for size in sorted({s for s in sizes if 4 <= s < n} | {n}):
        n_pos = int(np.clip(round(size * len(positives) / n), 2, size - 2))
        n_pos = min(n_pos, len(positives))
        n_neg = min(size - n_pos, len(negatives))
        for draw in range(draws if size < n else 1):
            rows_drawn = np.concatenate(
                [rng.choice(positives, n_pos, replace=False), rng.choice(negatives, n_neg, replace=False)]
            )
            model = _fit(train_features[rows_drawn], train_y[rows_drawn], folds, Cs, seed)
            auroc = roc_auc_score(test_y, model.predict_proba(test_features)[:, 1])
            rows.append({"size": int(n_pos + n_neg), "draw": draw, "auroc": float(auroc)})
    return rows


def examples_needed(curve: list[dict[str, float]], tolerance: float = 0.05) -> int | None:
    """Smallest training size whose mean held-out AUROC is within ``tolerance`` of the full-data AUROC."""
    if not curve:
        return None
    sizes = sorted({int(r["size"]) for r in curve})
    means = {s: float(np.mean([r["auroc"] for r in curve if r["size"] == s])) for s in sizes}
    target = means[sizes[-1]] - tolerance
    return next(s for s in sizes if means[s] >= target)
