"""The whole analysis on a constructed network: known concepts, known influence, known failure mode."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medexplain.concepts import ConceptSettings, analyse, analyse_activations, collect_activations, write_report
from medexplain.concepts.consistency import ConceptClassTable
from medexplain.errors import MedexplainError

FAST = ConceptSettings(
    layers=("features",), folds=3, cav_runs=10, random_runs=30, learning_sizes=(10, 40), learning_draws=2
)


@pytest.fixture
def constructed(pooled_head, samples, encoded):
    """Class 1 <=> concept 0 ("lesion", channel 0). The head reads channel 0 AND channel 2, pure noise with a
    large variance, so the network errs exactly when channel 2 misleads it, while a probe on channel 0 still
    sees the truth: wrong predictions come with explanations that contradict them. Concept 1 ("dust",
    channel 1) is encoded but unused."""
    torch.manual_seed(0)
    model = pooled_head(16, 16, 2, 2).double()
    with torch.no_grad():
        model.features.weight.copy_(torch.eye(16).reshape(16, 16, 1, 1))
        model.features.bias.zero_()
        w = torch.zeros(16, dtype=torch.float64)
        w[0], w[2] = 4.0, 2.0
        model.head.weight.copy_(torch.stack([-w, w]) / 2)
        model.head.bias.copy_(torch.tensor([0.4, -0.4], dtype=torch.float64))  # centre: 4 * 0.2 (mean of ch. 0) / 2
    data = []
    for seed, n in ((0, 300), (1, 200)):
        images, concepts = encoded(n, 16, seed=seed)
        images[:, 2] *= 4.0
        data.append(samples(images, concepts[:, 0].astype(int), concepts))
    return model, data[0], data[1]


def test_constructed_case_end_to_end(constructed, tmp_path):
    model, train, held_out = constructed
    report = analyse(model, train, held_out, ["lesion", "dust"], ["healthy", "diseased"], settings=FAST, progress=False)
    concepts = {r["concept"]: r for r in report.concepts}
    assert concepts["lesion"]["heldout_auroc"] > 0.95 and concepts["dust"]["heldout_auroc"] > 0.95
    assert concepts["lesion"]["cv_auroc"] > 0.95
    influence = {(r["concept"], r["class_name"]): r for r in report.influence}
    assert influence[("lesion", "diseased")]["significant"] and influence[("lesion", "diseased")]["tcav"] == 1.0
    assert influence[("lesion", "healthy")]["significant"] and influence[("lesion", "healthy")]["tcav"] == 0.0
    assert not influence[("dust", "diseased")]["significant"] and not influence[("dust", "healthy")]["significant"]
    assert influence[("lesion", "diseased")]["spearman_rho"] > 0.5
    np.testing.assert_array_equal(report.table.values, [[-1, 1], [0, 0]])
    # the network errs when channel 2 misleads it; the explanations then contradict the prediction
    accuracy = report.summary["held_out_accuracy"]
    assert 0.6 < accuracy < 0.95
    assert report.summary["inconsistency_auroc"]["features"] > 0.8
    image = report.images[0]
    assert [e["concept"] for e in image["detected"]] == sorted(
        [c for c in ("lesion", "dust") if image[f"p_{c}"] >= 0.5], key=lambda c: -image[f"d_{c}"] * image[f"p_{c}"]
    )

    out = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"{t}.{e}" for t in ("concepts", "influence", "learning_curve", "images") for e in ("csv", "json")]
        + [
            "concept_class_table.csv",
            "concept_class_table.json",
            "summary.json",
            "inconsistency_roc.csv",
        ]
    )
    rows = list(csv.DictReader((out / "images.csv").open()))
    assert len(rows) == 200 and rows[0]["id"] == "img0000"
    assert json.loads((out / "concepts.json").read_text())[0]["concept"] == "lesion"
    roc = list(csv.DictReader((out / "inconsistency_roc.csv").open()))
    for layer, (fpr, tpr, auroc) in report.roc.items():  # the curve as computed, one row per operating point
        mine = [row for row in roc if row["layer"] == layer]
        assert [float(r["fpr"]) for r in mine] == pytest.approx(list(fpr))
        assert [float(r["tpr"]) for r in mine] == pytest.approx(list(tpr))
        assert [float(r["auroc"]) for r in mine] == pytest.approx([auroc] * len(mine))
    with pytest.raises(MedexplainError, match="not empty"):
        write_report(report, out)


def test_probes_never_see_held_out_annotations(constructed):
    """Scrambling the held-out features' concept labels changes held-out scores but not one probe weight."""
    model, train, held_out = constructed
    recorded = [collect_activations(model, d, ["features"], progress=False) for d in (train, held_out)]
    settings = ConceptSettings(folds=3, cav_runs=4, random_runs=8, learning_sizes=(), learning_draws=1)
    first = analyse_activations(
        *recorded, ["lesion", "dust"], ["healthy", "diseased"], settings=settings, progress=False
    )
    scrambled = recorded[1].subset(np.arange(len(held_out)))
    scrambled.concepts = np.random.default_rng(0).permutation(scrambled.concepts)
    second = analyse_activations(
        recorded[0], scrambled, ["lesion", "dust"], ["healthy", "diseased"], settings=settings, progress=False
    )
    for key, probe in first.probes.items():
        np.testing.assert_array_equal(probe.coef, second.probes[key].coef)
        assert probe.intercept == second.probes[key].intercept
    assert first.concepts[0]["heldout_auroc"] > 0.95 > 0.7 > second.concepts[0]["heldout_auroc"]
    assert first.concepts[0]["cv_auroc"] == second.concepts[0]["cv_auroc"]


def test_bad_requests_raise_clear_errors(constructed):
    model, train, held_out = constructed
    recorded = [collect_activations(model, d, ["features"], progress=False) for d in (train, held_out)]
    names, classes = ["lesion", "dust"], ["healthy", "diseased"]
    with pytest.raises(MedexplainError, match="concept 'label_nope' is not a label column"):
        analyse_activations(*recorded, names, classes, concepts="label_lesion,label_nope", settings=FAST)
    single = recorded[0].subset(np.arange(300))
    single.concepts[:, 1] = 1.0
    with pytest.raises(MedexplainError, match="concept 'dust': every annotated training example has the value 1"):
        analyse_activations(single, recorded[1], names, classes, concepts="dust", settings=FAST, progress=False)
    minimal = ConceptSettings(folds=3, cav_runs=2, random_runs=4, learning_sizes=(), learning_draws=1)
    report = analyse_activations(single, recorded[1], names, classes, settings=minimal, progress=False)
    assert [r["concept"] for r in report.concepts] == ["lesion"]
    assert "every annotated training example has the value 1" in report.summary["skipped_concepts"]["dust"]
    few = recorded[0].subset(np.arange(300))
    few.concepts[:, 1] = 0.0
    few.concepts[:2, 1] = 1.0
    with pytest.raises(MedexplainError, match="only 2 annotated examples of the rarer value, fewer than the 3"):
        analyse_activations(few, recorded[1], names, classes, concepts="dust", settings=FAST, progress=False)
    with pytest.raises(MedexplainError, match="model gives 2 logits but the data has 3 classes"):
        analyse_activations(*recorded, names, ["a", "b", "c"], settings=FAST, progress=False)
    supplied = ConceptClassTable(("dust",), ("healthy", "diseased"), np.array([[1, -1]]))
    with pytest.raises(MedexplainError, match="table has no concept 'lesion'"):
        analyse_activations(*recorded, names, classes, table=supplied, settings=FAST, progress=False)
