"""CAM, gradient, IG, SmoothGrad, occlusion and evidence maps against Captum, pytorch-grad-cam and hand-derived
values (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import Saliency as CaptumSaliency
from pytorch_grad_cam import GradCAMPlusPlus, HiResCAM, LayerCAM
from tests.explain.models import BagNetLike, DenseNetLike, ResNetLike
from torch import nn

from medexplain.explain import cam_maps, create_explainer
from medexplain.explain.gradients import target_gradients
from medexplain.explain.hooks import capture_output, hook_count

MODES = {2: "bilinear", 3: "trilinear"}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("layer", [None, "layer1"])
def test_gradcam_equals_captum_layer_gradcam(dims: int, layer: str | None) -> None:
    model = ResNetLike(dims).double()
    x = torch.randn(3, 2, *[8] * dims, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    ours = create_explainer("gradcam", layer=layer)(model, x, target)
    module = getattr(model, layer or "layer2")
    coarse = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    reference = LayerAttribution.interpolate(coarse, tuple(x.shape[2:]), MODES[dims])
    assert ours.params["layer"] == (layer or "layer2")
    torch.testing.assert_close(ours.maps, reference)


@pytest.mark.parametrize(
    ("name", "peer"), [("gradcam++", GradCAMPlusPlus), ("hirescam", HiResCAM), ("layercam", LayerCAM)]
)
def test_cam_weightings_equal_pytorch_grad_cam(name: str, peer) -> None:
    """At a stride-1 layer (no resizing), ours equals relu of pytorch-grad-cam's raw ``get_cam_image``.

    pytorch-grad-cam adds 1e-6 to the Grad-CAM++ denominator ``2 G^2 + sum(A) G^3``; ours adds nothing, so
    the logits are scaled up (gradients ~1) to make that epsilon negligible in the comparison."""
    model = ResNetLike(2).double()
    model.fc.weight.data *= 1000
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    ours = create_explainer(name, layer="layer1")(model, x, 1).maps[:, 0]
    with capture_output(model, "layer1") as captured, torch.enable_grad():
        logits = model(x)
        (grads,) = torch.autograd.grad(logits[:, 1].sum(), captured.output)
    acts = captured.output.detach().numpy()
    cam = peer(model=model, target_layers=[model.layer1])
    reference = cam.get_cam_image(x, model.layer1, None, acts, grads.numpy(), eigen_smooth=False)
    np.testing.assert_allclose(ours.numpy(), np.maximum(reference, 0), rtol=1e-4, atol=1e-6 * np.abs(reference).max())


def test_cam_maps_are_differentiable_for_training() -> None:
    model = ResNetLike(2)
    x = torch.randn(2, 2, 8, 8)
    explanation = cam_maps(model, x, torch.tensor([0, 1]), create_graph=True)
    loss = explanation.maps.mean() + nn.functional.cross_entropy(explanation.logits, torch.tensor([0, 1]))
    loss.backward()
    grad = model.layer1.body[0][0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    detached = create_explainer("gradcam")(model, x, torch.tensor([0, 1])).maps
    torch.testing.assert_close(explanation.maps.detach(), detached)


@pytest.mark.parametrize("dims", [2, 3])
def test_saliency_and_input_x_gradient_equal_captum(dims: int) -> None:
    model = DenseNetLike(dims).double()
    x = torch.randn(2, 2, *[6] * dims, dtype=torch.float64)
    target = torch.tensor([2, 0])
    saliency = CaptumSaliency(model).attribute(x, target=target, abs=True).amax(dim=1)
    torch.testing.assert_close(create_explainer("saliency")(model, x, target).maps[:, 0], saliency)
    ixg = CaptumInputXGradient(model).attribute(x, target=target).sum(dim=1)
    torch.testing.assert_close(create_explainer("input-x-gradient")(model, x, target).maps[:, 0], ixg)


@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_through_a_strided_stem_equal_captum(dims: int) -> None:
    """A strided stem with few input channels reading the input gets its input gradient by the polyphase
    decomposition (also before an in-place ReLU); the maps stay Captum's, no hook stays, weights get no grad."""
    conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    model = nn.Sequential(
        conv(2, 6, 5, stride=2, padding=2), nn.ReLU(inplace=True), conv(6, 4, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 2**dims, 3),
    ).double()
    x = torch.randn(2, 2, *[9] * dims, dtype=torch.float64)
    target = torch.tensor([2, 0])
    saliency = CaptumSaliency(model).attribute(x, target=target, abs=True).amax(dim=1)
    torch.testing.assert_close(create_explainer("saliency")(model, x, target).maps[:, 0], saliency)
    ours = create_explainer("integrated-gradients", steps=8, max_memory=1)(model, x, target).maps[:, 0]
    reference = CaptumIG(model).attribute(x, target=target, n_steps=8).sum(dim=1)
    torch.testing.assert_close(ours, reference)
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())
    # with create_graph the stem keeps autograd's own backward: a loss on the gradients reaches its weights
    grads, _, _ = target_gradients(model, x, target, create_graph=True)
    (stem_grad,) = torch.autograd.grad(grads.square().sum(), model[0].weight)
    leaf = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf, create_graph=True)
    torch.testing.assert_close(stem_grad, torch.autograd.grad(plain.square().sum(), model[0].weight)[0])


@pytest.mark.parametrize("baseline", ["zeros", 0.5, "blur", "tensor"])
@pytest.mark.parametrize("dims", [2, 3])
def test_integrated_gradients_equal_captum(baseline, dims: int) -> None:
    model = ResNetLike(dims).double()
    x = torch.randn(2, 2, *[6] * dims, dtype=torch.float64)
    target = torch.tensor([1, 2])
    if baseline == "tensor":
        baseline = torch.randn_like(x)
    explainer = create_explainer("integrated-gradients", steps=64, baseline=baseline, blur_sigma=1.0)
    ours = explainer(model, x, target)
    reference_baseline = {"zeros": torch.zeros_like(x), "blur": None}.get(baseline) if isinstance(baseline, str) else (
        baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, baseline)
    )
    if reference_baseline is None:
        from medexplain.ndimage import gaussian_blur

        reference_baseline = gaussian_blur(x, 1.0)
    attributions, delta = CaptumIG(model).attribute(
        x, baselines=reference_baseline, target=target, n_steps=64, return_convergence_delta=True
    )
    torch.testing.assert_close(ours.maps[:, 0], attributions.sum(dim=1))
    torch.testing.assert_close(ours.extras["completeness_delta"][:, 0], delta)


def test_integrated_gradients_complete_within_one_percent_at_64_steps() -> None:
    model = DenseNetLike(3).double()
    x = torch.randn(2, 2, 8, 8, 8, dtype=torch.float64)
    explanation = create_explainer("integrated-gradients", steps=64)(model, x, "all")
    with torch.no_grad():
        difference = model(x) - model(torch.zeros_like(x))
    totals = explanation.maps.flatten(2).sum(dim=2)
    assert ((totals - difference).abs() <= 0.01 * difference.abs()).all()


def test_riemann_gradient_of_a_linear_model_is_exact() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 3)).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    explanation = create_explainer("integrated-gradients", steps=7, method="riemann_trapezoid")(model, x, 1)
    expected = (model[1].weight[1].view(2, 4, 4) * x).sum(dim=1)
    torch.testing.assert_close(explanation.maps[:, 0], expected.detach())


@pytest.mark.parametrize("dims", [2, 3])
def test_occlusion_of_a_linear_model_sums_w_times_x_minus_fill_per_window(dims: int) -> None:
    size, window, fill = 6, 3, 0.25
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * size**dims, 2)).double()
    x = torch.randn(2, 2, *[size] * dims, dtype=torch.float64)
    maps = create_explainer("occlusion", window=window, stride=window, fill=fill, max_memory=1)(model, x, 1).maps
    contribution = (model[1].weight[1].view(2, *[size] * dims) * (x - fill)).sum(dim=1).detach()
    pooled = nn.functional.avg_pool2d if dims == 2 else nn.functional.avg_pool3d
    per_window = pooled(contribution.unsqueeze(1), window).squeeze(1) * window**dims
    expected = per_window.repeat_interleave(window, 1).repeat_interleave(window, 2)
    if dims == 3:
        expected = expected.repeat_interleave(window, 3)
    torch.testing.assert_close(maps[:, 0], expected)


def test_occlusion_with_overlapping_windows_averages_the_drops() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 1)).double()
    x = torch.randn(1, 1, 5, dtype=torch.float64)
    maps = create_explainer("occlusion", window=2, stride=1)(model, x, 0).maps[0, 0]
    c = (model[1].weight[0] * x[0, 0]).detach()
    drops = [c[i : i + 2].sum() for i in range(4)]
    expected = torch.stack([drops[0], (drops[0] + drops[1]) / 2, (drops[1] + drops[2]) / 2,
                            (drops[2] + drops[3]) / 2, drops[3]])
    torch.testing.assert_close(maps, expected)


def test_smoothgrad_without_noise_is_the_wrapped_method_and_averages_noisy_maps() -> None:
    model = ResNetLike(2).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    plain = create_explainer("input-x-gradient")(model, x, 1).maps
    smooth = create_explainer("smoothgrad", method="input-x-gradient", samples=3, noise_level=0.0)(model, x, 1)
    torch.testing.assert_close(smooth.maps, plain)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(2 * 64, 3)).double()
    noisy = create_explainer("smoothgrad", samples=4, noise_level=0.5, seed=3)(linear, x, 2).maps
    torch.testing.assert_close(noisy, create_explainer("saliency")(linear, x, 2).maps)


@pytest.mark.parametrize("dims", [2, 3])
def test_evidence_is_the_upsampled_class_evidence_whose_mean_is_the_logit(dims: int) -> None:
    model = BagNetLike(dims).double()
    x = torch.randn(2, 2, *[9] * dims, dtype=torch.float64)
    explanation = create_explainer("evidence")(model, x, [[0, 2], [1, 0]])
    with torch.no_grad():
        evidence = model.evidence_map(x)
    coarse = torch.stack([evidence[0, [0, 2]], evidence[1, [1, 0]]])
    torch.testing.assert_close(explanation.maps, nn.functional.interpolate(coarse, size=x.shape[2:], mode=MODES[dims]))
    torch.testing.assert_close(coarse.flatten(2).mean(2), explanation.logits.gather(1, explanation.targets))


def test_several_targets_equal_separate_calls_and_callables_explain_multilabel_sums() -> None:
    model = ResNetLike(2).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    for name in ("gradcam", "integrated-gradients", "lrp-epsilon-plus", "occlusion"):
        explainer = create_explainer(name)
        both = explainer(model, x, [[0, 2], [1, 1]])
        first = explainer(model, x, [0, 1]).maps[:, 0]
        second = explainer(model, x, [2, 1]).maps[:, 0]
        torch.testing.assert_close(both.maps, torch.stack([first, second], dim=1))
    multilabel = create_explainer("input-x-gradient")(model, x, lambda out: torch.sigmoid(out[:, [0, 2]]).sum(1))
    x_leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.sigmoid(model(x_leaf)[:, [0, 2]]).sum(), x_leaf)
    torch.testing.assert_close(multilabel.maps[:, 0], (grad * x).sum(1))
    assert multilabel.targets.tolist() == [[-1], [-1]]
