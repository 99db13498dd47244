"""Concept probes on features where the concept direction is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medexplain.concepts import (
    cross_validated_probability,
    examples_needed,
    fit_probe,
    layer_direction,
    learning_curve,
    score_probe,
)
from medexplain.concepts.probes import binary_targets
from medexplain.errors import MedexplainError


def direction(features: int, seed: int = 42) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=features)
    return d / np.linalg.norm(d)


def planted(n: int, d: np.ndarray, strength: float, seed: int, scales: np.ndarray | None = None):
    """Gaussian features, scaled per feature, plus ``strength * y`` along the unit direction ``d``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scales = np.ones(len(d)) if scales is None else scales
    return rng.normal(size=(n, len(d))) * scales + strength * y[:, None] * d + 3.0, y


def test_probe_recovers_planted_direction_in_unstandardised_space():
    # features on very different scales: the probe must still return the direction in the raw space
    scales = np.geomspace(0.2, 5.0, 12)
    d = direction(12)
    x, y = planted(1000, d, 1.5, seed=0, scales=scales)
    x_test, y_test = planted(500, d, 1.5, seed=1, scales=scales)
    probe = fit_probe(x, y, seed=0)
    # Bayes-optimal linear score for noise covariance diag(scales^2): Sigma^-1 d
    optimal = d / scales**2
    optimal /= np.linalg.norm(optimal)
    best = score_probe(x_test @ optimal, y_test, threshold=np.inf).auroc
    assert score_probe(probe.probability(x_test), y_test).auroc == pytest.approx(best, abs=0.01)
    # the probe's logit is linear in x with gradient raw_weights
    delta = np.random.default_rng(3).normal(size=12)
    np.testing.assert_allclose(probe.logit(x[:1] + delta) - probe.logit(x[:1]), delta @ probe.raw_weights)
    # the direction in the raw space points to the optimum (standardised weights would give cosine ~0.92)
    assert layer_direction(probe.raw_weights, 12) @ optimal > 0.98


def test_nested_cross_validation_is_honest_on_noise():
    """Choosing C on the same folds would flatter a probe on pure noise; nested CV stays near chance."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 40))
    y = np.repeat([0, 1], 50)
    aurocs = [score_probe(cross_validated_probability(x, y, seed=s), y).auroc for s in range(2)]
    assert abs(np.mean(aurocs) - 0.5) < 0.12
    x_signal, y_signal = planted(100, direction(40), 4.0, seed=0)
    assert score_probe(cross_validated_probability(x_signal, y_signal), y_signal).auroc > 0.95


def test_precision_recall_at_threshold_hand_computed():
    probability = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2])
    y = np.array([1, 0, 1, 1, 0, 0])
    scores = score_probe(probability, y, threshold=0.5)
    # detected: first three; true positives 2 of 3 detected, 2 of 3 positives found
    assert scores.precision == pytest.approx(2 / 3) and scores.recall == pytest.approx(2 / 3)
    # AUROC: pairs (pos, neg) ranked correctly: 0.9>{.8,.3,.2}=3, 0.6>{.3,.2}=2, 0.4>{.3,.2}=2 -> 7/9
    assert scores.auroc == pytest.approx(7 / 9)
    assert (scores.n, scores.positives) == (6, 3)


def test_learning_curve_rises_and_is_high_from_ten_examples():
    d = direction(16)
    x, y = planted(600, d, 3.0, seed=0)
    x_test, y_test = planted(300, d, 3.0, seed=1)
    curve = learning_curve(x, y, x_test, y_test, sizes=(10, 40), draws=3, seed=0)
    sizes = sorted({r["size"] for r in curve})
    assert sizes == [10, 40, 600]
    means = [np.mean([r["auroc"] for r in curve if r["size"] == s]) for s in sizes]
    assert means[0] > 0.85 and means[-1] > 0.98
    assert all(b >= a - 0.03 for a, b in itertools.pairwise(means))
    assert len([r for r in curve if r["size"] == 10]) == 3
    again = learning_curve(x, y, x_test, y_test, sizes=(10, 40), draws=3, seed=0)
    assert again == curve


def test_examples_needed_hand_made_curve():
    curve = [{"size": 10, "auroc": 0.7}, {"size": 10, "auroc": 0.8}, {"size": 50, "auroc": 0.92}]
    curve += [{"size": 100, "auroc": 0.96}]
    assert examples_needed(curve, tolerance=0.05) == 50
    assert examples_needed(curve, tolerance=0.3) == 10
    assert examples_needed([]) is None


def test_bad_concepts_raise_clear_errors():
    x = np.random.default_rng(0).normal(size=(30, 4))
    with pytest.raises(MedexplainError, match=r"'dust'.*every annotated training example has the value 0"):
        fit_probe(x, np.zeros(30, dtype=int), concept="dust")
    few = np.zeros(30, dtype=int)
    few[:3] = 1
    with pytest.raises(MedexplainError, match=r"only 3 annotated examples.*5 cross-validation folds"):
        fit_probe(x, few, concept="rare", folds=5)
    with pytest.raises(MedexplainError, match="must be 0 or 1"):
        binary_targets(np.array([0.0, 2.0, 1.0]), "odd")
    rows, y = binary_targets(np.array([1.0, np.nan, 0.0]), "partial")
    assert rows.tolist() == [0, 2] and y.tolist() == [1, 0]
