"""Classification metrics equal scikit-learn's on random, tied and degenerate inputs, and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from medexplain.errors import MedexplainError
from medexplain.metrics.classification import (
    accuracy,
    auroc,
    balanced_accuracy,
    binary_auroc,
    classification_summary,
    confusion_matrix,
    multilabel_auroc,
    quadratic_weighted_kappa,
)

rng = np.random.default_rng(0)


@pytest.mark.parametrize("k, n", [(2, 40), (5, 200), (3, 7)])
def test_label_metrics_equal_scikit_learn(k: int, n: int) -> None:
    for trial in range(5):
        y_true = rng.integers(0, k, n)
        y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n))
        as_tensor = torch.from_numpy(y_pred) if trial % 2 else y_pred  # numpy and torch inputs alike
        np.testing.assert_array_equal(
            confusion_matrix(y_true, as_tensor, k), skm.confusion_matrix(y_true, y_pred, labels=list(range(k)))
        )
        assert accuracy(y_true, as_tensor) == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
        assert balanced_accuracy(y_true, y_pred) == pytest.approx(
            skm.balanced_accuracy_score(y_true, y_pred), abs=1e-12
        )
        assert quadratic_weighted_kappa(y_true, y_pred, k) == pytest.approx(
            skm.cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=list(range(k))), abs=1e-12
        )


@pytest.mark.parametrize("k", [2, 3, 5])
def test_auroc_equals_scikit_learn_with_ties(k: int) -> None:
    n = 150
    y_true = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y_true]
    logits = np.round(logits, 1)  # many tied scores
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if k == 2:
        expected = skm.roc_auc_score(y_true, probabilities[:, 1])
        assert auroc(y_true, probabilities[:, 1]) == pytest.approx(expected, abs=1e-12)
    else:
        expected = skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")
    assert auroc(torch.from_numpy(y_true), torch.from_numpy(probabilities)) == pytest.approx(expected, abs=1e-12)


def test_multilabel_auroc_equals_scikit_learn_per_label() -> None:
    targets = (rng.random((80, 4)) < 0.3).astype(float)
    scores = targets * 0.7 + rng.random((80, 4))
    expected = skm.roc_auc_score(targets, scores, average=None)
    np.testing.assert_allclose(multilabel_auroc(targets, scores), expected, atol=1e-12)


def test_hand_computed_cases() -> None:
    # 3 positives, 2 negatives; pairs won: (0.9>0.3, 0.9>0.5, 0.5=0.5 half, 0.5>0.3, 0.2<both) = 3.5 of 6.
    assert binary_auroc([1, 0, 1, 0, 1], [0.9, 0.3, 0.5, 0.5, 0.2]) == pytest.approx(3.5 / 6)
    assert np.isnan(binary_auroc([1, 1], [0.1, 0.2]))
    # Kappa: perfect agreement is 1, also when truth and prediction hold a single grade.
    assert quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert quadratic_weighted_kappa([0, 0, 0], [0, 0, 0]) == 1.0
    summary = classification_summary([0, 1, 1], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    assert summary["accuracy"] == pytest.approx(2 / 3) and summary["balanced_accuracy"] == pytest.approx(0.75)
    assert summary["auroc"] == pytest.approx(1.0)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(MedexplainError, match="equally long"):
        accuracy([0, 1], [0])
    with pytest.raises(MedexplainError, match=r"labels must lie in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(MedexplainError, match="NaN"):
        auroc([0, 1], [0.1, float("nan")])
