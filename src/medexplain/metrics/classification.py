"""Classification metrics of a model over a data set: plain functions of labels and scores (numpy or torch).

Unlike the explanation metrics of this package (per-sample scores), these summarise a whole split.
AUROC is the Mann-Whitney statistic with tied scores counted half (Hanley & McNeil, Radiology 1982);
the quadratic weighted kappa is Cohen's kappa with squared-distance weights (Cohen, Psychol. Bull. 1968).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medexplain.errors import MedexplainError

ArrayLike = Any  # numpy array, torch tensor or sequence


def _array(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.size and not np.isfinite(array.astype(np.float64)).all():
        raise MedexplainError(f"{name} contains NaN or infinite values")
    return array


def _labels(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true, pred = _array(y_true, "y_true").reshape(-1), _array(y_pred, "y_pred").reshape(-1)
    if true.shape != pred.shape or true.size == 0:
        raise MedexplainError(f"y_true and y_pred must be non-empty and equally long, got {true.size} and {pred.size}")
    return true.astype(np.int64), pred.astype(np.int64)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """``(K, K)`` counts; row = true class, column = predicted class."""
    true, pred = _labels(y_true, y_pred)
    k = int(max(true.max(), pred.max()) + 1) if num_classes is None else num_classes
    if true.min() < 0 or pred.min() < 0 or max(true.max(), pred.max()) >= k:
        raise MedexplainError(f"labels must lie in [0, {k}), got values from {min(true.min(), pred.min())}")
    return np.bincount(true * k + pred, minlength=k * k).reshape(k, k)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Share of correct predictions."""
    true, pred = _labels(y_true, y_pred)
    return float((true == pred).mean())


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean recall over the classes present in ``y_true``."""
    matrix = confusion_matrix(y_true, y_pred)
    support = matrix.sum(1)
    present = support > 0
    return float((np.diag(matrix)[present] / support[present]).mean())


def quadratic_weighted_kappa(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Cohen's kappa with weights ``(i - j)^2``, for ordinal grades; 1 = perfect agreement, 0 = chance."""
    observed = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    k = observed.shape[0]
    grades = np.arange(k)
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    disagreement = (weights * expected).sum()
    if disagreement == 0:  # one grade only, in both truth and prediction
        return 1.0 if (weights * observed).sum() == 0 else 0.0
    return float(1.0 - (weights * observed).sum() / disagreement)


def binary_auroc(positive: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive``; NaN when one group is empty."""
    is_positive = _array(positive, "positive").reshape(-1).astype(bool)
    values = _array(scores, "scores").reshape(-1).astype(np.float64)
    if is_positive.shape != values.shape:
        raise MedexplainError(f"positive and scores must be equally long, got {is_positive.size} and {values.size}")
    n_pos = int(is_positive.sum())
    n_neg = is_positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(values)  # average ranks: ties count half
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """AUROC of a single-label classifier.

    Args:
        y_true: ``(N,)`` class indices.
        scores: ``(N, K)`` class scores (probabilities or logits), or ``(N,)`` scores of class 1 when K = 2.

    Binary: the AUROC of class 1. More classes: one-vs-rest, macro average over the classes present
    (scikit-learn's ``roc_auc_score(..., multi_class="ovr", average="macro")``).
    """
    true = _array(y_true, "y_true").reshape(-1).astype(np.int64)
    values = _array(scores, "scores").astype(np.float64)
    if values.ndim == 1 or values.shape[1] == 2:
        return binary_auroc(true == 1, values if values.ndim == 1 else values[:, 1])
    if values.shape[0] != true.size:
        raise MedexplainError(f"scores has {values.shape[0]} rows for {true.size} labels")
    per_class = [binary_auroc(true == k, values[:, k]) for k in range(values.shape[1])]
    defined = [a for a in per_class if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


def multilabel_auroc(targets: ArrayLike, scores: ArrayLike) -> np.ndarray:
    """``(L,)`` AUROC of each label of ``(N, L)`` binary targets and scores (NaN where a label is constant)."""
    truth, values = _array(targets, "targets"), _array(scores, "scores")
    if truth.ndim != 2 or truth.shape != values.shape:
        raise MedexplainError(f"targets and scores must both be (N, L), got {truth.shape} and {values.shape}")
    return np.array([binary_auroc(truth[:, j] > 0.5, values[:, j]) for j in range(truth.shape[1])])


def classification_summary(y_true: ArrayLike, probabilities: ArrayLike) -> dict[str, float]:
    """Accuracy, balanced accuracy, AUROC and quadratic weighted kappa of ``(N, K)`` class probabilities."""
    values = _array(probabilities, "probabilities")
    predicted = values.argmax(1)
    k = values.shape[1]
    return {
        "accuracy": accuracy(y_true, predicted),
        "balanced_accuracy": balanced_accuracy(y_true, predicted),
        "auroc": auroc(y_true, values),
        "kappa": quadratic_weighted_kappa(y_true, predicted, k),
    }


def multilabel_summary(targets: ArrayLike, probabilities: ArrayLike) -> dict[str, float]:
    """Mean per-label AUROC and the element-wise accuracy at 0.5 of ``(N, L)`` multi-label probabilities."""
    truth, values = _array(targets, "targets"), _array(probabilities, "probabilities")
    per_label = multilabel_auroc(truth, values)
    defined = per_label[~np.isnan(per_label)]
    return {
        "accuracy": float(((values > 0.5) == (truth > 0.5)).mean()),
        "auroc": float(defined.mean()) if defined.size else float("nan"),
    }
