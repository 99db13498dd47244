"""Losses against hand-written formulas, the paper's lambda conversion, and the augmentation's geometry (2D/3D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medexplain.errors import MedexplainError
from medexplain.models import create_model
from medexplain.train import Augment, Objective, sparsity_penalty
from medexplain.train.losses import balanced_class_weights


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("sparsity_on", ["evidence", "local"])
def test_objective_is_weighted_cross_entropy_plus_lambda_mean_abs_evidence(spatial_dims: int, sparsity_on: str) -> None:
    model = create_model("bagnet9-light", in_channels=1, num_classes=3, spatial_dims=spatial_dims).double().eval()
    torch.nn.init.normal_(model.class_bias)
    x = torch.randn(4, 1, *[17] * spatial_dims, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    objective = Objective.parse("ce+sparsity", sparsity_lambda=0.3, class_weights=weights, sparsity_on=sparsity_on)
    with torch.no_grad():
        loss, logits, parts = objective(model, x, target)
        evidence = model.evidence_map(x)  # (4, 3, *[2] * dims)
        penalised = model.local_evidence(x) if sparsity_on == "local" else evidence
    by_hand_logits = evidence.sum(dim=tuple(range(2, 2 + spatial_dims))) / 2**spatial_dims
    log_p = by_hand_logits - by_hand_logits.exp().sum(1, keepdim=True).log()
    w = weights[target]
    ce = -(w * log_p[torch.arange(4), target]).sum() / w.sum()
    l1 = sum(float(v.abs()) for v in penalised.flatten()) / penalised.numel()
    torch.testing.assert_close(logits, by_hand_logits)
    torch.testing.assert_close(parts["ce"], ce)
    assert float(parts["sparsity"]) == pytest.approx(l1, rel=1e-12)
    assert float(loss) == pytest.approx(float(ce) + 0.3 * l1, rel=1e-12)


def test_mean_penalty_is_resolution_free_and_converts_from_the_papers_sum() -> None:
    # A constant map costs the same at any resolution ...
    assert float(sparsity_penalty(torch.full((2, 2, 8, 8), -0.5))) == float(
        sparsity_penalty(torch.full((2, 2, 60, 60), 0.5))
    )
    # ... and lambda_mean = lambda_sum * K * h * w reproduces the paper's summed L1 of one sample.
    evidence = torch.randn(1, 2, 60, 60, dtype=torch.float64)
    lambda_sum = 4e-6
    lambda_mean = lambda_sum * 2 * 60 * 60
    assert lambda_mean == pytest.approx(0.0288)
    torch.testing.assert_close(lambda_mean * sparsity_penalty(evidence), lambda_sum * evidence.abs().sum())


def test_loss_names_and_weights_are_validated() -> None:
    with pytest.raises(MedexplainError, match="unknown loss 'focal'"):
        Objective.parse("focal", sparsity_lambda=None, class_weights=None)
    with pytest.raises(MedexplainError, match="has no sparsity term"):
        Objective.parse("ce", sparsity_lambda=0.1, class_weights=None)
    with pytest.raises(MedexplainError, match="unknown sparsity target 'bias'"):
        Objective.parse("ce+sparsity", sparsity_lambda=0.1, class_weights=None, sparsity_on="bias")
    # "balanced": n / (K n_k), as scikit-learn's compute_class_weight.
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    torch.testing.assert_close(balanced_class_weights(labels, 3), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_augmentation_geometry(spatial_dims: int) -> None:
    x = torch.randn(3, 2, *[9, 10, 11][:spatial_dims])
    still = Augment(flip=0, rotation_degrees=0, scale=0, translation=0, brightness=0, contrast=0)
    torch.testing.assert_close(still(x, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)
    flip_all = Augment(flip=1.0, rotation_degrees=0, scale=0, translation=0, brightness=0, contrast=0)
    torch.testing.assert_close(
        flip_all(x, torch.Generator().manual_seed(0)), x.flip(tuple(range(2, 2 + spatial_dims))), atol=1e-5, rtol=0
    )
    # A centred radially symmetric blob is (nearly) unchanged by rotations: the warp rotates about the centre.
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 33)] * spatial_dims, indexing="ij"))
    blob = torch.exp(-(grid**2).sum(0) / 0.1).expand(2, 1, *[33] * spatial_dims)
    rotate = Augment(flip=0, rotation_degrees=30, scale=0, translation=0, brightness=0, contrast=0)
    torch.testing.assert_close(rotate(blob, torch.Generator().manual_seed(1)), blob, atol=0.03, rtol=0)
    shifted = Augment(flip=0, rotation_degrees=0, scale=0, translation=0.2, brightness=0, contrast=0)
    assert (shifted(blob, torch.Generator().manual_seed(1)) - blob).abs().max() > 0.1
    # Seeded: the same generator state gives the same augmentation, another seed another one.
    default = Augment()
    a, b = (default(x, torch.Generator().manual_seed(7)) for _ in range(2))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, default(x, torch.Generator().manual_seed(8)))


def test_label_smoothing_is_cross_entropy_against_the_smoothed_target() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    target = torch.tensor([0, 3, 4, 1])
    eps = 0.2
    objective = Objective.parse("ce", sparsity_lambda=None, class_weights=None, label_smoothing=eps)
    log_p = logits - logits.exp().sum(1, keepdim=True).log()  # log-softmax by hand
    smoothed = torch.full((4, 5), eps / 5, dtype=torch.float64)
    smoothed[torch.arange(4), target] += 1 - eps
    torch.testing.assert_close(objective.task_loss(logits, target), -(smoothed * log_p).sum(1).mean())
    plain = Objective.parse("ce", sparsity_lambda=None, class_weights=None)
    assert float(objective.task_loss(logits, target)) != pytest.approx(float(plain.task_loss(logits, target)))
    for loss, value in (("ce", 1.0), ("bce", 0.1)):
        with pytest.raises(MedexplainError, match="label smoothing must lie in"):
            Objective.parse(loss, sparsity_lambda=None, class_weights=None, label_smoothing=value)


def test_ordinal_targets_are_a_discretised_gaussian_around_the_grade() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    target = torch.tensor([0, 2, 4])
    sigma = 0.8
    objective = Objective.parse("ce", sparsity_lambda=None, class_weights=None, ordinal_sigma=sigma)
    # Hand-computed target for grade 2: weights exp(-d^2 / (2 sigma^2)) at distances 2, 1, 0, 1, 2, normalised.
    w1, w2 = np.exp(-1 / (2 * sigma**2)), np.exp(-4 / (2 * sigma**2))
    middle = torch.tensor([w2, w1, 1.0, w1, w2], dtype=torch.float64) / (1 + 2 * w1 + 2 * w2)
    soft = torch.stack([torch.exp(-((torch.arange(5.0) - y) ** 2) / (2 * sigma**2)) for y in (0, 2, 4)]).double()
    soft = soft / soft.sum(1, keepdim=True)
    torch.testing.assert_close(soft[1], middle)
    log_p = logits.log_softmax(1)
    torch.testing.assert_close(objective.task_loss(logits, target), -(soft * log_p).sum(1).mean())
    # Neighbouring grades cost less than distant ones: the loss of a confident wrong prediction grows with distance.
    confident = torch.full((5, 5), -10.0, dtype=torch.float64).fill_diagonal_(10.0)
    losses = [float(objective.task_loss(confident[k : k + 1], torch.tensor([0]))) for k in range(5)]
    assert losses == sorted(losses) and losses[1] < losses[4]
    with pytest.raises(MedexplainError, match="ordinal sigma must be non-negative"):
        Objective.parse("ce", sparsity_lambda=None, class_weights=None, ordinal_sigma=-1.0)
