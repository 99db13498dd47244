"""Robustness and sanity metrics on explainers with known answers; the bootstrap summary; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medexplain.errors import MedexplainError
from medexplain.explain import create_explainer
from medexplain.explain.budget import activation_bytes
from medexplain.metrics import (
    UndefinedScoreWarning,
    auroc_under_noise,
    avg_sensitivity,
    bootstrap_interval,
    cascading_randomisation,
    forward_passes,
    max_sensitivity,
    model_randomisation,
    noise_ssim,
    summarise,
)
from medexplain.metrics.classification import auroc
from medexplain.metrics.sanity import parameter_layers

from .conftest import Linear, tiny_classifier


def identity_explainer(model, x, target):
    """The 'map' is the input itself: its change under noise is the noise."""
    return x[:, 0]


def constant_explainer(model, x, target):
    return torch.ones(x.shape[0], *x.shape[2:])


@pytest.mark.parametrize("shape", [(8, 9), (4, 5, 6)])
def test_sensitivity_of_the_identity_explainer_is_the_relative_noise(shape) -> None:
    model = tiny_classifier(len(shape))
    x = torch.rand(3, 1, *shape, generator=torch.Generator().manual_seed(0)) + 0.5
    samples, radius = 4, 0.1
    generator = torch.Generator().manual_seed(11)  # replay the documented draws: chunks in (sample, copy) order
    noise = (torch.rand(3 * samples, 1, *shape, generator=generator) * 2 - 1) * radius
    expected = noise.flatten(1).norm(dim=1).view(3, samples) / x.flatten(1).norm(dim=1)[:, None]
    kwargs = {"model": model, "x": x, "explainer": identity_explainer, "samples": samples, "radius": radius, "seed": 11}
    five = 5 * activation_bytes(model, x[:1])
    torch.testing.assert_close(max_sensitivity(None, max_memory=five, **kwargs), expected.amax(1))
    torch.testing.assert_close(avg_sensitivity(x[:, 0], **kwargs), expected.mean(1))
    expected_linf = noise.flatten(1).abs().amax(1).view(3, samples) / x.flatten(1).amax(1)[:, None]
    torch.testing.assert_close(max_sensitivity(None, norm="linf", **kwargs), expected_linf.amax(1))
    assert torch.equal(max_sensitivity(None, **{**kwargs, "explainer": constant_explainer}), torch.zeros(3))


def test_noise_ssim_and_sensitivity_of_a_real_explainer() -> None:
    model = tiny_classifier(2)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    saliency = create_explainer("saliency")
    assert torch.allclose(noise_ssim(None, model=model, x=x, explainer=constant_explainer), torch.ones(2))
    small = noise_ssim(None, model=model, x=x, explainer=identity_explainer, sigma=0.01)
    large = noise_ssim(None, model=model, x=x, explainer=identity_explainer, sigma=0.5)
    assert (small > 0.95).all() and (large < small).all()
    calls = []

    def counting(model, x, target):
        calls.append(x.shape[0])
        return saliency(model, x, target)

    scores = max_sensitivity(None, model=model, x=x, explainer=counting, samples=3)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores > 0).all()
    assert sum(calls) == 2 * forward_passes("max-sensitivity", samples=3, with_maps=False)
    calls.clear()
    bounded = max_sensitivity(None, model=model, x=x, explainer=counting, samples=3, max_memory=1)
    assert max(calls) == 1 and sum(calls) == 8
    torch.testing.assert_close(bounded, scores)  # chunking does not change the result
    calls.clear()
    model_randomisation(None, model=model, x=x, explainer=counting, layers=2, max_memory=1)
    assert max(calls) == 1 and sum(calls) == 2 * forward_passes("model-randomisation", layers=2, with_maps=False)


def test_cascading_randomisation_is_top_down_and_leaves_the_model_alone() -> None:
    model = tiny_classifier(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    saliency = create_explainer("saliency")
    names, similarity = cascading_randomisation(None, model=model, x=x, explainer=saliency)
    assert names == ["4", "0"] == parameter_layers(model)  # Linear, then Conv: output side first
    assert similarity.shape == (2, 2)
    assert (similarity < 0.9).all()  # saliency depends on the weights
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    again = model_randomisation(None, model=model, x=x, explainer=saliency)
    torch.testing.assert_close(again, similarity.mean(1))  # seeded
    # an explanation that ignores the model fails the sanity check: similarity stays 1
    _, blind = cascading_randomisation(None, model=model, x=x, explainer=identity_explainer, similarity="ssim")
    torch.testing.assert_close(blind, torch.ones(2, 2))


def test_sanity_for_3d_and_a_layer_budget() -> None:
    model = tiny_classifier(3)
    x = torch.rand(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(3))
    names, similarity = cascading_randomisation(
        None, model=model, x=x, explainer=create_explainer("saliency"), layers=1
    )
    assert names == ["4"] and similarity.shape == (1, 1)


def test_auroc_under_noise_table() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    x = torch.rand(40, 1, 6, 6, generator=g) * 0.001 + labels.view(-1, 1, 1, 1) * 0.01
    weight = torch.zeros(2, 1, 6, 6)
    weight[1] = 1.0
    rows = auroc_under_noise(Linear(weight), x, labels, max_batch=16)
    assert [r["sigma"] for r in rows] == [0.0, 0.005, 0.01, 0.05, 0.1]
    assert rows[0]["auroc"] == 1.0  # separable: class-1 images are brighter
    assert rows[-1]["auroc"] < rows[0]["auroc"]
    with torch.no_grad():
        clean = auroc(labels, Linear(weight)(x).softmax(1))
    assert rows[0]["auroc"] == clean


def test_bootstrap_summary_is_seeded_and_excludes_nan_loudly() -> None:
    values = [0.2, 0.4, 0.9, 0.5, 0.7]
    mean, low, high = bootstrap_interval(values, resamples=2000, seed=1)
    rng = np.random.default_rng(1)
    means = np.asarray(values)[rng.integers(0, 5, size=(2000, 5))].mean(1)
    assert mean == pytest.approx(0.54)
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert low < mean < high
    rows = [{"method": "a", "metric": "dice", "score": v} for v in values] + [
        {"method": "a", "metric": "dice", "score": math.nan},
        {"method": "b", "metric": "dice", "score": 1.0},
    ]
    with pytest.warns(UserWarning, match="1 of 6 scores are NaN"):
        summary = summarise(rows, resamples=2000, seed=1)
    assert summary[0] == {
        "method": "a",
        "metric": "dice",
        "n": 5,
        "excluded": 1,
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
    }
    assert summary[1]["mean"] == summary[1]["ci_low"] == summary[1]["ci_high"] == 1.0


def test_robustness_bad_input() -> None:
    model = tiny_classifier(2)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(MedexplainError, match="unknown noise"):
        max_sensitivity(None, model=model, x=x, explainer=identity_explainer, noise="poisson")
    clean = torch.rand(2, 8, 8)
    clean[1] = 0.0  # all zero: no relative change is defined for it
    with pytest.warns(UndefinedScoreWarning, match=r"all-zero clean map for samples \[1\]"):
        scores = max_sensitivity(clean, model=model, x=x, explainer=identity_explainer)
    assert torch.isfinite(scores[0]) and torch.isnan(scores[1])
    with pytest.raises(MedexplainError, match=r"explainer maps .* does not match"):
        avg_sensitivity(None, model=model, x=x, explainer=lambda m, x, t: x[:, 0, :4])
    with pytest.raises(MedexplainError, match="unknown similarity"):
        cascading_randomisation(None, model=model, x=x, explainer=identity_explainer, similarity="cosine")


def _norm_classifier(spatial_dims: int) -> torch.nn.Module:
    """Conv -> BatchNorm (buffers) -> ReLU -> pool -> Linear, trained-looking running statistics, eval mode."""
    nn = torch.nn
    torch.manual_seed(4)
    norm = getattr(nn, f"BatchNorm{spatial_dims}d")(4)
    norm.running_mean.uniform_(-0.2, 0.2)
    norm.running_var.uniform_(0.5, 2.0)
    conv = getattr(nn, f"Conv{spatial_dims}d")(1, 4, 3, padding=1)
    pool = getattr(nn, f"AdaptiveAvgPool{spatial_dims}d")(2)
    return nn.Sequential(conv, norm, nn.ReLU(), pool, nn.Flatten(), nn.Linear(4 * 2**spatial_dims, 3)).eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cascading_randomisation_equals_a_deep_copy_reference_and_restores_the_model(spatial_dims) -> None:
    import copy

    from scipy.stats import spearmanr

    model = _norm_classifier(spatial_dims)
    model[1].train()  # a mixed flag, to be found unchanged
    x = torch.rand(3, 1, *[7] * spatial_dims, generator=torch.Generator().manual_seed(5))
    saliency = create_explainer("saliency")
    target = model(x).argmax(1)
    original = saliency(model, x, target).maps[:, 0].detach()
    tensors = {name: (t, t.data_ptr(), t.clone()) for name, t in [*model.named_parameters(), *model.named_buffers()]}
    flags = [m.training for m in model.modules()]

    names, ours = cascading_randomisation(original, model=model, x=x, explainer=saliency, target=target, seed=7)

    reference, expected = copy.deepcopy(model), []  # independent: a deep copy randomised layer by layer
    layers = dict(reference.named_modules())
    for step, name in enumerate(["5", "1", "0"]):
        with torch.random.fork_rng():
            torch.manual_seed(7 + step)
            layers[name].reset_parameters()
        maps = saliency(reference, x, target).maps[:, 0].detach()
        pairs = zip(original, maps, strict=True)
        expected.append([spearmanr(a.abs().flatten(), b.abs().flatten())[0] for a, b in pairs])
    assert names == ["5", "1", "0"]
    np.testing.assert_allclose(ours.numpy(), np.array(expected).T, rtol=0, atol=1e-6)

    for name, (tensor, pointer, values) in tensors.items():  # the same tensors, storage and bits
        now = dict([*model.named_parameters(), *model.named_buffers()])[name]
        assert now is tensor and now.data_ptr() == pointer and torch.equal(now, values), name
        assert now.grad is None, name
    assert [m.training for m in model.modules()] == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())

    def failing(model, x, target):
        raise RuntimeError("explainer failed")

    with pytest.raises(RuntimeError, match="explainer failed"):
        cascading_randomisation(original, model=model, x=x, explainer=failing, target=target)
    assert all(torch.equal(t, values) for t, _, values in tensors.values())  # restored after an error too


def test_layers_a_forward_pass_never_calls_are_not_randomised() -> None:
    """MONAI's transformer blocks build a cross-attention norm that a ViT classifier never calls: re-drawing it
    would change nothing, so the cascade skips it and re-draws what the forward pass uses, top down."""
    from medexplain.models import create_model

    model = create_model("vit", in_channels=1, num_classes=2, img_size=16, patch_size=8, hidden_size=12,
                         mlp_dim=12, num_layers=1, num_heads=2).eval()  # fmt: skip
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    registered = parameter_layers(model)
    called = parameter_layers(model, x)
    assert "vit.blocks.0.norm_cross_attn" in registered and "vit.blocks.0.norm_cross_attn" not in called
    assert set(called) == set(registered) - {"vit.blocks.0.norm_cross_attn"}
    assert called[:3] == ["vit.classification_head", "vit.norm", "vit.blocks.0.mlp.linear2"]
    names, _ = cascading_randomisation(None, model=model, x=x, explainer=create_explainer("saliency"), layers=3)
    assert names == called[:3]
