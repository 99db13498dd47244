"""Faithfulness metrics: equal Quantus (region perturbation, faithfulness correlation), hand-computed curves on a
linear model (2D and 3D), perfect/random/inverted maps, chunking invariance and forward-pass counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.explain.budget import activation_bytes
from medexplain.metrics import (
    deletion_auc,
    faithfulness_correlation,
    forward_passes,
    insertion_auc,
    perturbation_curve,
    pixel_flipping,
    pixel_flipping_curve,
    region_perturbation,
    region_perturbation_curve,
)
from medexplain.metrics.faithfulness import curve_area, feature_ranks

from .conftest import Linear, tiny_classifier


class CountingModel(nn.Module):
    """Counts the inputs (rows) and calls that go through ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows, self.calls, self.largest = model, 0, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.calls += 1
        self.largest = max(self.largest, x.shape[0])
        return self.model(x)


def _quantus_call(metric, model, x, maps, y, softmax: bool) -> np.ndarray:
    scores = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=y.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
        softmax=softmax,
        channel_first=True,
    )
    return np.asarray(scores, dtype=np.float64)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_equals_quantus(quantus, order) -> None:
    model = tiny_classifier(2)
    g = torch.Generator().manual_seed(0)
    x, maps, y = torch.rand(3, 1, 18, 21, generator=g), torch.randn(3, 18, 21, generator=g), torch.tensor([0, 1, 2])
    metric = quantus.RegionPerturbation(
        patch_size=4,
        regions_evaluation=12,
        order=order,
        perturb_baseline=0.0,
        normalise=False,
        abs=False,
        disable_warnings=True,
    )
    expected = _quantus_call(metric, model, x, maps, y, softmax=True)
    ours = region_perturbation_curve(model, x, maps, y, patch_size=4, regions=12, order=order, baseline=0.0)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    torch.testing.assert_close(
        region_perturbation(maps, model=model, x=x, target=y, patch_size=4, regions=12, order=order), ours.mean(1)
    )


def test_pixel_flipping_curve_equals_quantus(quantus) -> None:
    model = tiny_classifier(2)
    g = torch.Generator().manual_seed(2)
    x, maps, y = torch.rand(3, 1, 12, 12, generator=g), torch.randn(3, 12, 12, generator=g), torch.tensor([1, 0, 2])
    metric = quantus.PixelFlipping(features_in_step=18, perturb_baseline=0.0, normalise=False, disable_warnings=True)
    expected = _quantus_call(metric, model, x, maps, y, softmax=True)  # after each of the 144 / 18 = 8 steps
    ours = pixel_flipping_curve(model, x, maps, y, steps=8, baseline=0.0)
    np.testing.assert_allclose(ours[:, 1:].numpy(), expected, atol=1e-6)


def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(quantus) -> None:
    """Quantus draws subsets with numpy's global RNG; we replay its draws and feed the same indices."""
    model = tiny_classifier(2)
    g = torch.Generator().manual_seed(1)
    x, maps, y = torch.rand(3, 1, 16, 16, generator=g), torch.randn(3, 16, 16, generator=g), torch.tensor([2, 0, 1])
    runs, size, features = 25, 40, 16 * 16
    np.random.seed(7)
    subsets = np.stack(
        [np.stack([np.random.choice(features, size, replace=False) for _ in range(3)]) for _ in range(runs)], 1
    )
    np.random.seed(7)
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=runs,
        subset_size=size,
        perturb_baseline=0.0,
        normalise=False,
        abs=False,
        return_aggregate=False,
        disable_warnings=True,
    )
    expected = _quantus_call(metric, model, x, maps, y, softmax=False)
    ours = faithfulness_correlation(maps, model=model, x=x, target=y, subsets=torch.from_numpy(subsets))
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    # seeded subsets are reproducible and distinct per seed
    a = faithfulness_correlation(maps, model=model, x=x, target=y, runs=runs, subset_size=size, seed=3)
    b = faithfulness_correlation(maps, model=model, x=x, target=y, runs=runs, subset_size=size, seed=3)
    c = faithfulness_correlation(maps, model=model, x=x, target=y, runs=runs, subset_size=size, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _linear(shape: tuple[int, ...], seed: int = 0) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, 1, *shape, generator=g, dtype=torch.float64)
    x = torch.rand(2, 1, *shape, generator=g, dtype=torch.float64)
    return Linear(weight), x, (weight[0] * x[:, 0])  # exact attribution of class 0


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5)])
def test_deletion_and_insertion_curves_by_hand_on_a_linear_model(shape) -> None:
    model, x, maps = _linear(shape)
    steps, n = 6, int(np.prod(shape))
    contributions = maps.flatten(1)
    ordered = contributions.sort(dim=1, descending=True).values
    removed = torch.stack([ordered[:, : round(k * n / steps)].sum(1) for k in range(steps + 1)], 1)
    total = contributions.sum(1, keepdim=True)
    deletion = perturbation_curve(model, x, maps, 0, steps=steps, baseline=0.0, output="logit")
    torch.testing.assert_close(deletion, total - removed)
    insertion = perturbation_curve(model, x, maps, 0, mode="insertion", steps=steps, baseline=0.0, output="logit")
    torch.testing.assert_close(insertion, removed)
    torch.testing.assert_close(
        deletion_auc(maps, model=model, x=x, target=0, steps=steps, output="logit"), curve_area(total - removed)
    )
    torch.testing.assert_close(pixel_flipping_curve(model, x, maps, 0, steps=steps, output="logit"), deletion)
    torch.testing.assert_close(
        pixel_flipping(maps, model=model, x=x, target=0, steps=steps, output="logit"), removed[:, 1:].mean(1)
    )


@pytest.mark.parametrize("shape", [(12, 12), (6, 6, 6)])
def test_perfect_map_beats_random_beats_inverted(shape) -> None:
    model, x, maps = _linear(shape, seed=2)
    random = torch.rand(maps.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    kwargs = {"model": model, "x": x, "target": 0, "output": "logit", "steps": 12}
    deletion = [deletion_auc(m, **kwargs) for m in (maps, random, -maps)]
    insertion = [insertion_auc(m, baseline=0.0, **kwargs) for m in (maps, random, -maps)]
    assert (deletion[0] < deletion[1]).all() and (deletion[1] < deletion[2]).all()
    assert (insertion[0] > insertion[1]).all() and (insertion[1] > insertion[2]).all()
    correlation = [
        faithfulness_correlation(m, model=model, x=x, target=0, runs=30, subset_size=20) for m in (maps, random, -maps)
    ]
    torch.testing.assert_close(correlation[0], torch.ones(2, dtype=torch.float64))  # exact: drop == relevance
    torch.testing.assert_close(correlation[2], -torch.ones(2, dtype=torch.float64))
    assert correlation[1].abs().max() < 0.8


def test_patch_ranks_and_blur_baseline() -> None:
    maps = torch.tensor([[[0.0, 0, 5, 5], [0, 1, 5, 5], [2, 2, 0, 0], [2, 2, 0, 0]]])
    ranks, features = feature_ranks(maps, patch_size=2)
    assert features == 4
    assert torch.equal(ranks[0, ::2, ::2], torch.tensor([[2, 0], [1, 3]]))
    ranks, features = feature_ranks(torch.rand(1, 5, 5), patch_size=2)  # padded to 6 x 6: 9 patches
    assert features == 9 and ranks.shape == (1, 5, 5) and set(ranks.unique().tolist()) == set(range(9))
    model, x, maps = _linear((9, 9))
    blurred_start = perturbation_curve(model, x, maps, 0, mode="insertion", steps=3, baseline="blur", blur_sigma=1.0)
    assert not torch.allclose(
        blurred_start[:, 0], perturbation_curve(model, x, maps, 0, mode="insertion", steps=3)[:, 0]
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_chunking_batching_and_forward_pass_counts(spatial_dims) -> None:
    model = CountingModel(tiny_classifier(spatial_dims))
    g = torch.Generator().manual_seed(0)
    shape = (8, 8) if spatial_dims == 2 else (4, 6, 6)
    x, maps = torch.rand(3, 1, *shape, generator=g), torch.randn(3, *shape, generator=g)
    cases = [
        ("deletion-auc", deletion_auc, {"steps": 7}),
        ("insertion-auc", insertion_auc, {"steps": 5, "patch_size": 2}),
        ("pixel-flipping", pixel_flipping, {"steps": 4}),
        ("region-perturbation", region_perturbation, {"patch_size": 2, "regions": 6}),
        ("faithfulness-correlation", faithfulness_correlation, {"runs": 9, "subset_size": 10}),
    ]
    five = 5 * activation_bytes(model, x[:1])  # measured once per model and input shape (one forward pass)
    for name, metric, params in cases:
        model.rows = model.calls = model.largest = 0
        batched = metric(maps, model=model, x=x, target=[0, 1, 2], max_memory=five, **params)
        assert model.rows == 3 * forward_passes(name, **params), name
        assert model.largest <= 5, name
        single = torch.cat(
            [metric(maps[i : i + 1], model=model, x=x[i : i + 1], target=[i], **params) for i in range(3)]
        )
        torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            metric(maps[:, None], model=model, x=x, target=[0, 1, 2], **params), batched, atol=1e-6, rtol=1e-5
        )


def test_faithfulness_bad_input() -> None:
    model, x, maps = _linear((6, 6))
    with pytest.raises(MedexplainError, match="does not match spatial shape"):
        deletion_auc(maps[:, :5], model=model, x=x, target=0)
    with pytest.raises(MedexplainError, match="unknown order"):
        deletion_auc(maps, model=model, x=x, target=0, order="random-ish")
    with pytest.raises(MedexplainError, match="unknown baseline"):
        deletion_auc(maps, model=model, x=x, target=0, baseline="white-ish")
    with pytest.raises(MedexplainError, match="subset_size"):
        faithfulness_correlation(maps, model=model, x=x, target=0, subset_size=37)
    bad = maps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(MedexplainError, match="NaN"):
        insertion_auc(bad, model=model, x=x, target=0)


@pytest.mark.parametrize("shape", [(2, 3, 20, 17), (1, 2, 9, 12, 10)])
def test_blur_baseline_equals_scipy(shape) -> None:
    from scipy.ndimage import gaussian_filter

    from medexplain.ndimage import gaussian_blur

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = np.stack(
        [np.stack([gaussian_filter(c, 1.5, mode="mirror", truncate=3.0) for c in image]) for image in x.numpy()]
    )
    np.testing.assert_allclose(gaussian_blur(x, 1.5).numpy(), expected, atol=1e-10)
