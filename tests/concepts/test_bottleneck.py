"""Concept bottleneck (Koh et al., ICML 2020): the class depends on the image only through the concepts, and
interventions replace exactly the least certain concepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medexplain.concepts.bottleneck import concept_loss, fit_class_layer, positive_weights
from medexplain.concepts.intervention import class_weights, concept_aurocs, intervention_curve
from medexplain.models import create_model
from medexplain.models.bottleneck import ConceptBottleneck, intervene


def bottleneck(spatial_dims: int, concepts: int = 4, classes: int = 3) -> ConceptBottleneck:
    torch.manual_seed(spatial_dims)
    model = create_model(
        "concept-bottleneck", in_channels=2, num_classes=classes, spatial_dims=spatial_dims, num_concepts=concepts,
        backbone="resnet18", backbone_args={"width": 4, "small_input": True},
    )  # fmt: skip
    assert isinstance(model, ConceptBottleneck)
    return model.double().eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_class_logits_are_the_linear_layer_of_the_concept_outputs(dims):
    model = bottleneck(dims)
    x = torch.randn(3, 2, *[8] * dims, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        concept_logits = model.concept_model(x)  # the backbone alone, read independently of the bottleneck
        probabilities = (1 / (1 + torch.exp(-concept_logits))).numpy()
        weight, bias = model.classifier.weight.numpy(), model.classifier.bias.numpy()
    assert logits.shape == (3, 3) and concept_logits.shape == (3, 4)
    np.testing.assert_allclose(logits.numpy(), probabilities @ weight.T + bias, rtol=0, atol=1e-14)
    # the image reaches the class only through the concepts: equal concepts, equal logits
    with torch.no_grad():
        np.testing.assert_array_equal(model.classify(model.concept_probabilities(x)).numpy(), logits.numpy())


def test_intervention_replaces_the_least_certain_annotated_concepts():
    p = torch.tensor([[0.9, 0.45, 0.2, 0.6], [0.5, 0.99, 0.51, 0.05]], dtype=torch.float64)
    expert = torch.tensor([[1.0, 0.0, 0.0, float("nan")], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    # certainty |p - 0.5|: row 0: 0.4, 0.05, 0.3, 0.1 (concept 3 not annotated); row 1: 0, 0.49, 0.01, 0.45
    torch.testing.assert_close(intervene(p, expert, 0), p, rtol=0, atol=0)
    torch.testing.assert_close(
        intervene(p, expert, 1), torch.tensor([[0.9, 0.0, 0.2, 0.6], [1.0, 0.99, 0.51, 0.05]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        intervene(p, expert, 2), torch.tensor([[0.9, 0.0, 0.0, 0.6], [1.0, 0.99, 0.0, 0.05]], dtype=torch.float64)
    )
    everything = intervene(p, expert, 10)
    torch.testing.assert_close(everything, torch.where(torch.isnan(expert), p, expert), rtol=0, atol=0)


def test_all_concepts_corrected_is_the_linear_layer_of_the_expert_concepts():
    model = bottleneck(2, concepts=5, classes=2)
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(size=(60, 5))
    expert = rng.integers(0, 2, size=(60, 5)).astype(float)
    labels = rng.integers(0, 2, size=60)
    x = torch.randn(60, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        corrected = model.classify(intervene(model.concept_probabilities(x), torch.from_numpy(expert), 5)).numpy()
    weight, bias = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    np.testing.assert_allclose(corrected, expert @ weight.T + bias, rtol=0, atol=1e-14)
    curve = intervention_curve(model, probabilities, expert, labels)
    assert [row["k"] for row in curve] == list(range(6))
    logit_difference = expert @ (weight[1] - weight[0]) + bias[1] - bias[0]
    assert curve[-1]["auroc"] == pytest.approx(roc_auc_score(labels, logit_difference), abs=1e-12)
    assert curve[0]["auroc"] == pytest.approx(roc_auc_score(labels, probabilities @ (weight[1] - weight[0])), abs=1e-12)
    assert curve[-1]["corrected"] == pytest.approx(np.mean((probabilities != expert).sum(1)))
    rows = class_weights(model, list("abcde"), ["no", "yes"])
    assert [r["log_odds"] for r in rows] == pytest.approx((weight[1] - weight[0]).tolist())


def test_fit_class_layer_is_the_chosen_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    concepts = rng.integers(0, 2, size=(300, 3)).astype(float)
    labels = (concepts @ [2.0, -1.0, 0.0] + rng.normal(size=300) > 0.5).astype(int)
    weight, bias, C, score = fit_class_layer(concepts[:200], labels[:200], concepts[200:], labels[200:], (0.1, 1.0), 2)
    reference = LogisticRegression(C=C, max_iter=5000).fit(concepts[:200], labels[:200])
    np.testing.assert_allclose(weight[1] - weight[0], reference.coef_[0], rtol=1e-12)
    np.testing.assert_allclose(bias[1] - bias[0], reference.intercept_[0], rtol=1e-12)
    assert score == pytest.approx(roc_auc_score(labels[200:], reference.decision_function(concepts[200:])))
    assert weight[1, 0] - weight[0, 0] > 1 > 0 > weight[1, 1] - weight[0, 1]


def test_concept_loss_ignores_unannotated_cells_and_weights_positives():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-2.0, 0.0]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, 0.5, 3.0, 0.0]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    )
    torch.testing.assert_close(concept_loss(logits, targets), expected)
    # concept 0: 1 positive, 1 negative annotated; concept 1: 1 positive, 1 negative
    torch.testing.assert_close(positive_weights(targets), torch.tensor([1.0, 1.0]))
    weighted = concept_loss(logits, targets, torch.tensor([3.0, 1.0]))
    manual = torch.stack(
        [3 * torch.nn.functional.softplus(-torch.tensor(2.0)), torch.nn.functional.softplus(torch.tensor(0.5)),
         torch.nn.functional.softplus(-torch.tensor(3.0)), torch.nn.functional.softplus(torch.tensor(0.0))]
    ).mean()  # fmt: skip
    torch.testing.assert_close(weighted, manual)


def test_concept_aurocs_use_annotated_images_only():
    expert = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0]], dtype=float)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.99], [0.6, 0.8], [0.7, 0.3]])
    np.testing.assert_allclose(concept_aurocs(expert, probabilities), [0.75, 1.0])


def test_bottleneck_trains_on_3d_volumes_and_learns_a_planted_concept(tmp_path):
    """Volumes whose concept 'bright' (a raised cube) decides the class: a sequential bottleneck finds the concept
    (AUROC well above chance on the test split) and its linear layer gives the concept a positive weight."""
    from medexplain.concepts.bottleneck import BottleneckSettings, train_bottleneck
    from medexplain.data.writers import npy_bytes, write_file, write_manifest

    rng = np.random.default_rng(0)
    rows = []
    for i in range(72):
        bright, noise = i % 2, int(rng.integers(0, 2))
        volume = rng.normal(size=(12, 12, 12)).astype(np.float32)
        if bright:
            volume[3:9, 3:9, 3:9] += 1.5
        split = "train" if i < 40 else "val" if i < 56 else "test"
        image = write_file(tmp_path / "data", f"v{i}.npy", npy_bytes(volume))
        rows.append({"image": image, "split": split, "label": bright, "label_bright": bright, "label_noise": noise})
    write_manifest(tmp_path / "data", rows)
    settings = BottleneckSettings(
        mode="sequential", backbone_args={"width": 4, "small_input": True}, epochs=6, batch_size=8, lr=3e-3,
        augment=False, class_Cs=(1.0,),
    )  # fmt: skip
    summary = train_bottleneck(tmp_path / "data", tmp_path / "bn", settings, progress=False)
    test = summary["splits"]["test"]
    assert test["concept_auroc"]["bright"] > 0.8  # 1.0 over seeds 0-2
    weights = {row["concept"]: row["log_odds"] for row in summary["weights"]}
    assert weights["bright"] > 0.5 and weights["bright"] > 4 * abs(weights["noise"])  # 1.6-3.3 vs <= 0.14
    assert test["intervention"][-1]["auroc"] == pytest.approx(1.0)  # the expert's 'bright' is the class itself
