"""TCAV significance, Holm correction and the per-image consistency of explanations on constructed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medexplain.concepts import (
    bagged_direction,
    collect_activations,
    explain_images,
    holm,
    inconsistency,
    learn_table,
    read_table,
    resampled_directions,
    tcav_significance,
    wrong_prediction_auroc,
)
from medexplain.concepts.consistency import ConceptClassTable
from medexplain.errors import MedexplainError


@pytest.mark.parametrize("spatial", [(6, 6), (3, 3, 3)])
def test_used_concept_is_significant_and_orthogonal_concept_is_not(pooled_head, samples, encoded, spatial):
    """Channel 0 carries concept 0 and drives class 1 (through a tanh hidden layer); channel 1 carries concept 1
    and is orthogonal to everything the head reads. TCAV must find concept 0 and not concept 1."""
    torch.manual_seed(0)
    model = pooled_head(16, 16, 2, len(spatial), hidden=6).double()
    with torch.no_grad():
        model.features.weight.copy_(torch.eye(16).reshape(16, 16, *[1] * len(spatial)))
        model.features.bias.zero_()
        model.head[0].weight[:, 1] = 0.0  # the head ignores channel 1
        model.head[0].weight[:, 0] = torch.linspace(0.5, 1.0, 6)
        model.head[2].weight.copy_(torch.stack([-torch.ones(6), torch.ones(6)]) * 0.5)
    images, concepts = encoded(240, 16, seed=0, spatial=spatial)
    record = collect_activations(model, samples(images, concepts[:, 0], concepts), ["features"], progress=False)
    x = record.features["features"]
    results = {}
    for j in range(2):
        y = concepts[:, j].astype(int)
        concept_dirs = resampled_directions(x, y, channels=16, runs=20, seed=1)
        random_dirs = resampled_directions(x, y, channels=16, runs=40, seed=1, random_labels=True)
        results[j] = (
            bagged_direction(concept_dirs),
            tcav_significance(record.gradients["features"], record.labels, concept_dirs, random_dirs),
        )
    direction, rows = results[0]
    assert direction[0] > 0.85  # the probe finds channel 0
    assert rows[1]["tcav_mean"] == pytest.approx(1.0) and rows[1]["p"] < 1e-3  # pushes class 1 up, all images
    assert rows[0]["tcav_mean"] == pytest.approx(0.0) and rows[0]["p"] < 1e-3
    assert rows[1]["derivative_mean"] > 4 * rows[1]["random_derivative_std"]
    direction, rows = results[1]
    assert abs(direction[1]) > 0.85
    # its direction leaks a little onto channel 0 (finite-sample correlation of the two concepts), so every
    # resampled CAV has the same small-signed derivative and Kim et al.'s TCAV-score t-test can call it
    # significant (here p_tcav ~ 1e-4); the magnitude of its influence is that of a random direction
    assert all(r["p"] > 0.05 for r in rows)


def test_holm_matches_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> max with running .06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])


def test_learned_table_signs_and_independent_concept():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, 400)
    supporting = (classes == 1) & (rng.random(400) < 0.8)
    independent = rng.random(400) < 0.5
    annotations = np.c_[supporting, independent].astype(float)
    annotations[:5, 1] = np.nan  # unannotated images are ignored
    table = learn_table(annotations, classes, ["lesion", "dust"], ["healthy", "diseased"])
    np.testing.assert_array_equal(table.values, [[-1, 1], [0, 0]])


def test_inconsistency_hand_computed():
    table = ConceptClassTable(("a", "b", "c"), ("k0", "k1"), np.array([[-1, 1], [0, 1], [1, -1]]))
    presence = np.array([[0.9, 0.1, 0.2], [0.1, 0.3, 0.8], [0.2, 0.1, 0.6]])
    predicted = np.array([1, 1, 0])
    # image 0 (k1): supported by a=.9, against c=.2 -> max(.2, 1-.9)=.2
    # image 1 (k1): best support .3 -> 1-.3=.7; against c=.8 -> .8
    # image 2 (k0): against a=.2, support c=.6 -> max(.2, .4)=.4
    np.testing.assert_allclose(inconsistency(presence, predicted, table), [0.2, 0.8, 0.4])


def test_inconsistency_flags_wrong_predictions_on_a_constructed_case():
    """Wrong predictions come with a detected contradicting concept more often: AUROC as computed by hand."""
    table = ConceptClassTable(("lesion",), ("healthy", "diseased"), np.array([[-1, 1]]))
    predicted = np.array([0, 0, 0, 0, 1, 1])
    presence = np.array([[0.1], [0.2], [0.9], [0.3], [0.95], [0.2]])
    wrong = np.array([False, False, True, False, False, True])
    score = inconsistency(presence, predicted, table)
    np.testing.assert_allclose(score, [0.1, 0.2, 0.9, 0.3, 0.05, 0.8])
    auroc, fpr, tpr = wrong_prediction_auroc(score, wrong)
    assert auroc == pytest.approx(1.0) and fpr[0] == 0 and tpr[-1] == 1
    wrong_swapped = np.array([True, False, False, False, True, False])
    assert wrong_prediction_auroc(score, wrong_swapped)[0] == pytest.approx(0.0)  # 0.1 and 0.05 rank lowest
    assert np.isnan(wrong_prediction_auroc(score, np.zeros(6, dtype=bool))[0])


def test_explanations_rank_detected_concepts_by_influence_times_presence():
    presence = np.array([[0.9, 0.6, 0.2, 0.7]])
    influence = np.array([[0.1, 1.0, 5.0, -0.3]])
    (ranked,) = explain_images(["x"], ["a", "b", "c", "d"], presence, influence, threshold=0.5)
    assert [e["concept"] for e in ranked] == ["b", "a", "d"]
    assert ranked[0]["score"] == pytest.approx(0.6)


def test_read_table_csv_json_and_bad_values(tmp_path):
    (tmp_path / "t.csv").write_text("concept,none,mild\nmicroaneurysm,-1,1\ndust,0,0\n")
    (tmp_path / "t.json").write_text(
        json.dumps({"microaneurysm": {"none": -1, "mild": 1}, "dust": {"none": 0, "mild": 0}})
    )
    for name in ("t.csv", "t.json"):
        table = read_table(tmp_path / name)
        assert table.concepts == ("microaneurysm", "dust") and table.classes == ("none", "mild")
        np.testing.assert_array_equal(table.values, [[-1, 1], [0, 0]])
    restricted = read_table(tmp_path / "t.csv").restricted_to(["dust"], ["mild", "none"])
    np.testing.assert_array_equal(restricted.values, [[0, 0]])
    (tmp_path / "bad.csv").write_text("concept,none\nmicroaneurysm,2\n")
    with pytest.raises(MedexplainError, match=r"bad.csv: microaneurysm/none: .* must be -1, 0 or 1"):
        read_table(tmp_path / "bad.csv")
    with pytest.raises(MedexplainError, match="no class 'severe'"):
        read_table(tmp_path / "t.csv").restricted_to(["dust"], ["severe"])
