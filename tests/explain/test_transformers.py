"""Transformer explanations, 2D and 3D, against independent references (float64): AttnLRP against lxt, CP-LRP and
AttnLRP conservation, attention rollout and gradient-weighted attention against hand computations on the attention
matrices of a separate functional forward pass, token Grad-CAM against Captum's LayerGradCam on a reshaped token
layer, and a user's ``nn.MultiheadAttention`` ViT explained exactly like the MONAI ViT it copies."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from tests.explain.models import MHAViT, mha_copy, tiny_vit
from tests.explain.transformer_reference import lxt_relevance, plain_operations, vit_forward
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain import create_explainer
from medexplain.explain.cam import default_layer
from medexplain.explain.hooks import Hooks, hook_count

MODES = {2: "bilinear", 3: "trilinear"}


def _input(dims: int, batch: int = 2, size: int = 9) -> Tensor:
    return torch.randn(batch, 2, *[size] * dims, generator=torch.Generator().manual_seed(dims), dtype=torch.float64)


@pytest.mark.parametrize("dims", [2, 3])
def test_attnlrp_equals_lxt(dims: int) -> None:
    """At a vanishing stabiliser (lxt adds epsilon to every denominator, ours epsilon * sign; lxt stabilises the
    products too, ours splits them exactly), both implement the same rules."""
    model = tiny_vit(dims).double()
    x, target = _input(dims), torch.tensor([0, 2])
    reference = lxt_relevance(model, x, target, epsilon=1e-12)[0].sum(dim=1)
    ours = create_explainer("attnlrp", epsilon=1e-12)(model, x, target).maps[:, 0]
    torch.testing.assert_close(ours, reference, rtol=1e-7, atol=1e-9 * reference.abs().max().item())


def _bias_free(model: nn.Module) -> nn.Module:
    """Zero every bias and the parameters that act as biases (position embeddings, class token)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "position" in name or "cls_token" in name:
                parameter.zero_()
    return model


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model_name", ["vit", "mha-vit"])
def test_cp_lrp_conserves_relevance_without_biases(dims: int, model_name: str) -> None:
    """CP-LRP holds the attention constant: every rule is then conservative, so without biases the input
    relevance sums to each logit (epsilon -> 0)."""
    model = _bias_free(tiny_vit(dims) if model_name == "vit" else MHAViT(dims)).double().eval()
    explanation = create_explainer("cp-lrp", epsilon=1e-12)(model, _input(dims), "all")
    totals = explanation.maps.flatten(2).sum(dim=2)
    torch.testing.assert_close(totals, explanation.logits, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_attnlrp_conserves_relevance_up_to_the_softmax_bias(dims: int) -> None:
    """AttnLRP's softmax rule ``R_in = x (R - s sum R)`` (Prop. 3.1) absorbs ``sum R - sum R_in``; every other rule
    conserves. Without biases, input relevance + what the softmaxes absorbed = the logit. ``sum R_in`` needs only
    ``A`` and the relevance at ``A``: ``x = log A`` up to a per-row constant, which the rule ignores.
    Our uniform rule halves the gradient at ``drop_weights``' output, so the relevance at ``A`` is ``A * 2 g``."""
    model = _bias_free(tiny_vit(dims)).double()
    x = _input(dims)
    captured: list[tuple[Tensor, list[Tensor]]] = []

    def keep(_module, _args, output: Tensor) -> None:
        grads: list[Tensor] = []
        output.register_hook(grads.append)
        captured.append((output.detach(), grads))

    with Hooks() as hooks:
        for block in model.vit.blocks:
            hooks.forward(block.attn.drop_weights, keep)
        explanation = create_explainer("attnlrp", epsilon=1e-12)(model, x, 1)
    absorbed = torch.zeros(x.shape[0], dtype=torch.float64)
    for a, (g,) in captured:
        relevance = a * 2 * g
        into_softmax = torch.log(a) * a * (2 * g - (a * 2 * g).sum(dim=-1, keepdim=True))
        absorbed += (relevance - into_softmax).flatten(1).sum(dim=1)
    logit = explanation.logits[:, 1]
    total = explanation.maps.flatten(1).sum(dim=1)
    assert (absorbed.abs() > 1e-3 * logit.abs()).all()  # the bias term is not negligible: the test has teeth
    torch.testing.assert_close(total + absorbed, logit, rtol=1e-6, atol=0)


def test_relevance_with_biases_is_documented() -> None:
    """With biases, position embeddings and a class token (all parameters), relevance is not conserved: on this
    random ViT CP-LRP's input relevance differs from the logit; the explainer says so rather than rescaling."""
    model = tiny_vit(2).double()
    explanation = create_explainer("cp-lrp", epsilon=1e-12)(model, _input(2), "all")
    totals = explanation.maps.flatten(2).sum(dim=2)
    assert not torch.allclose(totals, explanation.logits, rtol=1e-2)


@pytest.mark.parametrize("dims", [2, 3])
def test_rollout_equals_the_hand_computed_two_layer_product(dims: int) -> None:
    model = tiny_vit(dims).double()
    x = _input(dims)
    ops = plain_operations()
    with torch.no_grad():
        vit_forward(model, x, ops)
    first, second = (a.mean(dim=1).numpy() for a in ops.attentions)
    n = first.shape[-1]
    expected = []
    for b in range(x.shape[0]):
        joint = (0.5 * second[b] + 0.5 * np.eye(n)) @ (0.5 * first[b] + 0.5 * np.eye(n))
        expected.append(joint[0, 1:].reshape([3] * dims))
    coarse = torch.from_numpy(np.stack(expected)).unsqueeze(1)
    reference = LayerAttribution.interpolate(coarse, tuple(x.shape[2:]), MODES[dims])
    ours = create_explainer("attention-rollout")(model, x, "all")
    assert ours.maps.shape == (2, 3, *x.shape[2:])
    for k in range(3):
        torch.testing.assert_close(ours.maps[:, k : k + 1], reference)


@pytest.mark.parametrize("relevance", ["lrp", "attention"])
@pytest.mark.parametrize("dims", [2, 3])
def test_attention_gradient_equals_the_hand_computed_relevance(dims: int, relevance: str) -> None:
    """``R = (I + Abar_2)(I + Abar_1)``, ``Abar = mean_h (dS/dA * R_A)^+`` with ``R_A`` lxt's AttnLRP relevance of
    the attention (CVPR 2021 form) or ``A`` itself (ICCV 2021), from the functional forward passes."""
    model = tiny_vit(dims).double()
    x, target = _input(dims), torch.tensor([2, 1])
    ops = plain_operations()
    logits = vit_forward(model, x, ops)
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), ops.attentions)
    weights = lxt_relevance(model, x, target, 1e-12)[1] if relevance == "lrp" else ops.attentions
    eye = torch.eye(ops.attentions[0].shape[-1], dtype=torch.float64)
    joint = eye
    for w, g in zip(weights, grads, strict=True):
        joint = (eye + (w.detach() * g).clamp(min=0).mean(dim=1)) @ joint
    coarse = joint[:, 0, 1:].reshape(2, 1, *[3] * dims)
    reference = LayerAttribution.interpolate(coarse, tuple(x.shape[2:]), MODES[dims])
    ours = create_explainer("attention-gradient", relevance=relevance, epsilon=1e-12)(model, x, target).maps
    torch.testing.assert_close(ours, reference, rtol=1e-7, atol=1e-10 * reference.abs().max().item())


class GridTap(nn.Module):
    """A LayerNorm whose patch tokens pass through ``grid`` as a ``(B, D, *grid)`` feature map (for Captum)."""

    def __init__(self, norm: nn.Module, grid: tuple[int, ...]) -> None:
        super().__init__()
        self.norm, self.shape, self.grid = norm, grid, nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.norm(x)
        feature_map = self.grid(tokens[:, 1:].transpose(1, 2).unflatten(2, self.shape))
        return torch.cat([tokens[:, :1], feature_map.flatten(2).transpose(1, 2)], dim=1)


@pytest.mark.parametrize("dims", [2, 3])
def test_token_gradcam_equals_captum_on_the_reshaped_token_layer(dims: int) -> None:
    model = tiny_vit(dims).double()
    reference_model = copy.deepcopy(model)
    last = reference_model.vit.blocks[-1]
    last.norm1 = GridTap(last.norm1, (3,) * dims)
    x, target = _input(dims), torch.tensor([0, 2])
    coarse = LayerGradCam(reference_model, last.norm1.grid).attribute(x, target=target, relu_attributions=True)
    reference = LayerAttribution.interpolate(coarse, tuple(x.shape[2:]), MODES[dims])
    ours = create_explainer("gradcam")(model, x, target)
    assert ours.params["layer"] == "vit.blocks.1.attn:input" == default_layer(model)
    torch.testing.assert_close(ours.maps, reference)
    assert reference.abs().sum() > 0
    # in a pre-norm block the last attention's input is the output of its LayerNorm
    named = create_explainer("gradcam", layer="vit.blocks.1.norm1")(model, x, target)
    torch.testing.assert_close(named.maps, reference)


@pytest.mark.parametrize(("batch_first", "torch_encoder"), [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize(
    "name", ["attnlrp", "cp-lrp", "attention-rollout", "attention-gradient", "gradcam", "saliency"]
)
def test_a_multihead_attention_vit_is_explained_like_the_monai_vit_it_copies(
    name: str, batch_first: bool, torch_encoder: bool
) -> None:
    """The ``nn.MultiheadAttention`` taps recompute its fused attention explicitly; on a copy of the MONAI ViT
    (whose taps need no recomputation), with our blocks or ``nn.TransformerEncoderLayer`` (whose fused fast path
    skips the attention module unless a gradient is recorded), every explainer gives the same maps, 2D. (LRP at a
    vanishing epsilon: the input projection of ``nn.MultiheadAttention`` is no module, so it has LRP-0.)"""
    model = tiny_vit(2).double()
    user = mha_copy(model, batch_first, torch_encoder)
    x = _input(2)
    explainer = create_explainer(name, **({"epsilon": 1e-12} if "lrp" in name or "gradient" in name else {}))
    ours = explainer(user, x, [1, 0]).maps
    torch.testing.assert_close(ours, explainer(model, x, [1, 0]).maps, rtol=1e-8, atol=1e-12)
    assert hook_count(user) == 0


def test_multihead_attention_keeps_its_output_format_and_masks() -> None:
    """Inside the taps, ``nn.MultiheadAttention`` returns what it would without them, weights and masks included."""
    attention = nn.MultiheadAttention(6, 2, batch_first=True).double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[False, False, True, False, True], [False] * 5])
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    calls = [
        {"need_weights": True},
        {"need_weights": True, "average_attn_weights": False, "key_padding_mask": mask},
        {"need_weights": False, "attn_mask": causal},
    ]
    from medexplain.explain.transformer import tapped

    for kwargs in calls:
        expected = attention(x, x, x, **kwargs)
        with tapped(attention) as attentions:
            got = attention(x, x, x, **kwargs)
        torch.testing.assert_close(got[0], expected[0])
        if expected[1] is None:
            assert got[1] is None
        else:
            torch.testing.assert_close(got[1], expected[1])
        assert len(attentions) == 1 and attentions[0].shape == (2, 2, 5, 5)
    assert hook_count(attention) == 0


def test_clear_errors_for_models_attention_explainers_cannot_read() -> None:
    from tests.explain.models import ResNetLike

    with pytest.raises(MedexplainError, match="has no attention module"):
        create_explainer("attention-rollout")(ResNetLike(2), torch.randn(1, 2, 8, 8), 0)
    model = tiny_vit(2)
    for block in model.vit.blocks:
        block.attn.use_flash_attention = True
    with pytest.raises(MedexplainError, match="flash attention"):
        create_explainer("attnlrp")(model, torch.randn(1, 2, 9, 9), 0)
    assert hook_count(model) == 0
    with pytest.raises(MedexplainError, match=r"does not fit a ViT built for img_size \(9, 9\)"):
        tiny_vit(2)(torch.randn(1, 2, 12, 12))
