"""Activations, gradients and the TCAV directional derivative against analytic values, Captum and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation

from medexplain.concepts import (
    Augmentation,
    collect_activations,
    directional_derivatives,
    layer_direction,
    pool_activation,
)
from medexplain.errors import MedexplainError
from medexplain.explain.hooks import Hooks, hook_count


@pytest.mark.parametrize("spatial", [(5, 7), (3, 4, 5)])
def test_linear_head_derivative_equals_weight_dot_direction(pooled_head, samples, spatial):
    """logit = W mean(A) + b: the derivative along a unit layer direction u is W_k . u for every image."""
    model = pooled_head(2, 6, 3, len(spatial)).double()
    images = torch.randn(9, 2, *spatial, dtype=torch.float64)
    record = collect_activations(model, samples(images, np.zeros(9), None), ["features"], batch_size=4, progress=False)
    u = np.random.default_rng(1).normal(size=6)
    u /= np.linalg.norm(u)
    expected = model.head.weight.detach().numpy() @ u
    np.testing.assert_allclose(directional_derivatives(record.gradients["features"], u), np.tile(expected, (9, 1)))
    # pooled features are the spatial mean of the layer output, logits the model's
    with torch.no_grad():
        a = model.features(images)
        np.testing.assert_allclose(record.features["features"], a.flatten(2).mean(-1).numpy())
        np.testing.assert_allclose(record.logits, model(images).numpy())
    assert record.ids == [f"img{i:04d}" for i in range(9)]


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_nonlinear_head_derivative_matches_captum_and_finite_differences(pooled_head, samples, spatial):
    model = pooled_head(1, 5, 2, len(spatial), hidden=7).double()
    images = torch.randn(6, 1, *spatial, dtype=torch.float64)
    record = collect_activations(model, samples(images, np.zeros(6), None), ["features"], progress=False)
    u = np.random.default_rng(2).normal(size=5)
    u /= np.linalg.norm(u)
    ours = directional_derivatives(record.gradients["features"], u)
    uniform = torch.from_numpy(u).reshape(1, 5, *[1] * len(spatial))
    for k in range(2):
        grad = LayerGradientXActivation(model, model.features, multiply_by_inputs=False).attribute(images, target=k)
        np.testing.assert_allclose(ours[:, k], (grad * uniform).flatten(1).sum(1).detach().numpy(), rtol=1e-10)
    # central finite difference of the logits when every position of A is shifted by eps * u
    eps = 1e-6
    shifted = []
    for sign in (1, -1):
        with Hooks() as hooks, torch.no_grad():
            hooks.forward(model.features, lambda _m, _a, out, s=sign: out + s * eps * uniform)
            shifted.append(model(images).numpy())
    np.testing.assert_allclose(ours, (shifted[0] - shifted[1]) / (2 * eps), rtol=1e-6, atol=1e-9)


def test_uniform_shift_moves_mean_and_max_pool_by_the_shift():
    a = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    u = torch.randn(4, dtype=torch.float64)
    moved = pool_activation(a + u.reshape(1, 4, 1, 1), ("mean", "max")) - pool_activation(a, ("mean", "max"))
    torch.testing.assert_close(moved, torch.cat([u, u]).expand(3, 8))
    # so the layer direction of probe weights on [mean, max] features is their block sum, normalised
    w = np.array([1.0, 0.0, 2.0, -1.0, 3.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(layer_direction(w, 4), np.array([4.0, 0.0, 2.0, 0.0]) / np.sqrt(20))


def test_augmentation_is_seeded_independent_of_batching_and_averaged(pooled_head, samples):
    model = pooled_head(1, 3, 2, 2).double()
    data = samples(torch.rand(7, 1, 12, 12, dtype=torch.float64), np.zeros(7), None)
    augment = Augmentation(copies=3, seed=5)
    first = collect_activations(model, data, ["features"], augmentation=augment, batch_size=7, progress=False)
    second = collect_activations(model, data, ["features"], augmentation=augment, batch_size=2, progress=False)
    plain = collect_activations(model, data, ["features"], progress=False)
    np.testing.assert_allclose(first.features["features"], second.features["features"])
    assert not np.allclose(first.features["features"], plain.features["features"])
    # the recorded feature is the mean over the original and its three copies
    image = data[3].image
    copies = [image] + [augment.apply(image, 3, c) for c in range(3)]
    with torch.no_grad():
        expected = torch.stack([model.features(c[None]).mean((2, 3))[0] for c in copies]).mean(0)
    np.testing.assert_allclose(first.features["features"][3], expected.numpy())
    # gradients are taken at the un-augmented image
    np.testing.assert_allclose(first.gradients["features"], plain.gradients["features"])


def test_no_hooks_left_training_flag_restored_and_bad_layer(pooled_head, samples):
    model = pooled_head(1, 3, 2, 2).double().train()
    data = samples(torch.rand(3, 1, 8, 8, dtype=torch.float64), np.zeros(3), None)
    recorded = collect_activations(model, data, ["features", "head"], progress=False)
    assert hook_count(model) == 0 and model.training and model.features.training
    model.requires_grad_(False)  # frozen weights: the layer gradients are the same
    frozen = collect_activations(model, data, ["features"], progress=False)
    np.testing.assert_allclose(frozen.gradients["features"], recorded.gradients["features"])
    with pytest.raises(MedexplainError, match="no layer 'nope'"):
        collect_activations(model, data, ["nope"], progress=False)
    assert hook_count(model) == 0
