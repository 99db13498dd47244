"""LRP: equality with Zennit's composites (float64), conservation, rules against hand-written matrix forms."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest
import torch
from tests.explain.models import DenseNetLike, ResNetLike, plain_cnn, randomize_batchnorm, without_batchnorm_eps
from tests.explain.reference import zennit_composite, zennit_relevance
from torch import nn
from zennit import composites as zcomposites
from zennit import rules as zrules

from medexplain.errors import MedexplainError
from medexplain.explain import create_explainer
from medexplain.explain.hooks import hook_count
from medexplain.explain.lrp import AlphaBeta, Composite, Epsilon, Flat, Gamma, ZBox, ZPlus, engine, lrp_relevance
from medexplain.explain.lrp.engine import _output_chunks as output_chunks
from medexplain.explain.lrp.layers import _CACHE as layer_cache
from medexplain.explain.lrp.layers import Affine
from medexplain.explain.polyphase import conv_transpose_polyphase

COMPOSITES = ["lrp-epsilon", "lrp-epsilon-plus", "lrp-epsilon-plus-flat", "lrp-alpha2-beta1", "lrp-epsilon-gamma-box"]
ARCHITECTURES = {"cnn": plain_cnn, "resnet": ResNetLike, "densenet": DenseNetLike}


def _explainer(name: str, epsilon: float):
    params = {"epsilon": epsilon}
    if name != "lrp-epsilon":
        params["stabilizer"] = epsilon
    if name == "lrp-epsilon-gamma-box":
        params.update(low=-3.0, high=3.0)
    return create_explainer(name, **params)


@pytest.mark.parametrize("name", COMPOSITES)
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_lrp_equals_zennit(name: str, architecture: str, dims: int) -> None:
    torch.manual_seed(dims)
    model = without_batchnorm_eps(ARCHITECTURES[architecture](dims).double())
    x = torch.randn(2, 2, *[8] * dims, dtype=torch.float64).clamp(-3, 3)
    target = torch.tensor([0, 2])
    epsilon = 1e-9
    ours = _explainer(name, epsilon)(model, x, target)
    reference = zennit_relevance(model, x, target, zennit_composite(name, epsilon, epsilon)).sum(dim=1)
    torch.testing.assert_close(ours.maps[:, 0], reference, rtol=1e-5, atol=1e-7 * reference.abs().max().item())
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", COMPOSITES)
def test_lrp_equals_zennit_at_default_stabilizers(name: str) -> None:
    model = without_batchnorm_eps(ResNetLike(2).double())
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64).clamp(-3, 3)
    target = torch.tensor([1, 0, 2])
    params = {"low": -3.0, "high": 3.0} if name == "lrp-epsilon-gamma-box" else {}
    explainer = create_explainer(name, **params)
    ours = explainer(model, x, target).maps[:, 0]
    reference = zennit_relevance(model, x, target, zennit_composite(name, 1e-6, 1e-6)).sum(dim=1)
    # Zennit adds its stabiliser also where relevance is split over summands and average pools (Norm rule);
    # ours splits those exactly, so at the default 1e-6 the maps differ in the 1e-6 range.
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def _bias_free(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.zero_()
            module.bias.data.zero_()
        elif getattr(module, "bias", None) is not None:
            module.bias.data.zero_()
    return model


@pytest.mark.parametrize(
    ("name", "architecture"),
    [("lrp-epsilon", a) for a in sorted(ARCHITECTURES)]
    + [(n, a) for n in ("lrp-epsilon-plus", "lrp-epsilon-plus-flat") for a in ("cnn", "densenet")],
)
def test_relevance_is_conserved_in_bias_free_networks(name: str, architecture: str) -> None:
    """epsilon -> 0 conserves relevance in any bias-free network (Montavon et al. 2019), residual additions and
    concatenations included: the input relevance sums to the explained logit. z+ and flat conserve it where
    every convolution output passes a ReLU (no relevance on outputs with only negative contributions)."""
    model = _bias_free(ARCHITECTURES[architecture](3).double())
    x = torch.randn(2, 2, 8, 8, 8, dtype=torch.float64).abs() if "plus" in name or "alpha" in name else torch.randn(
        2, 2, 8, 8, 8, dtype=torch.float64
    )
    explanation = _explainer(name, 1e-12)(model, x, "all")
    totals = explanation.maps.flatten(2).sum(dim=2)
    torch.testing.assert_close(totals, explanation.logits, rtol=1e-6, atol=1e-9)


def test_epsilon_without_bias_is_gradient_times_input() -> None:
    model = _bias_free(ResNetLike(2).double())
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    ours = create_explainer("lrp-epsilon", epsilon=0.0)(model, x, 1).maps
    reference = create_explainer("input-x-gradient")(model, x, 1).maps
    torch.testing.assert_close(ours, reference)


def _matrix_form(rule, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Relevance ``R_x`` written out per (output k, input j) contribution, for one sample ``x (J,)``."""
    z = w * x[None, :]  # (K, J) contributions
    if isinstance(rule, Epsilon):
        y = z.sum(1) + b
        return (z * (r / (y + rule.epsilon * torch.where(y >= 0, 1.0, -1.0)))[:, None]).sum(0)
    if isinstance(rule, ZPlus | AlphaBeta):
        alpha, beta = (1.0, 0.0) if isinstance(rule, ZPlus) else (rule.alpha, rule.beta)
        zp, zn = z.clamp(min=0), z.clamp(max=0)
        p = zp.sum(1) + b.clamp(min=0)
        n = zn.sum(1) + b.clamp(max=0)
        out = alpha * zp * (r / p)[:, None]
        if beta:
            out = out - beta * zn * (r / n)[:, None]
        return out.sum(0)
    if isinstance(rule, Gamma):
        y = z.sum(1) + b
        up = z + rule.gamma * z.clamp(min=0)
        down = z + rule.gamma * z.clamp(max=0)
        ru = torch.where(y > 0, r / (up.sum(1) + b + rule.gamma * b.clamp(min=0)), 0.0)
        rd = torch.where(y < 0, r / (down.sum(1) + b + rule.gamma * b.clamp(max=0)), 0.0)
        return (up * ru[:, None] + down * rd[:, None]).sum(0)
    raise TypeError(rule)


@pytest.mark.parametrize("rule", [Epsilon(0.1), ZPlus(0.0), AlphaBeta(2.0, 1.0, 0.0), Gamma(0.25, 0.0)])
def test_rules_equal_their_matrix_form(rule) -> None:
    """Each rule on a Linear layer against the per-contribution definition (mixed-sign inputs)."""
    torch.manual_seed(1)
    layer = nn.Linear(5, 4).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    r = torch.randn(3, 4, dtype=torch.float64)
    y = layer(x)
    c_x = rule.backward(Affine.of(layer), x, y.detach(), r / y.detach())
    expected = torch.stack([_matrix_form(rule, layer.weight, layer.bias, x[i], r[i]) for i in range(3)])
    torch.testing.assert_close(x * c_x, expected.detach())


def test_user_model_is_untouched_and_composites_compose() -> None:
    model = ResNetLike(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    custom = Composite(((nn.Conv2d, Gamma(0.5)), ((nn.Linear,), Epsilon(0.01))))
    relevance, _, _ = lrp_relevance(model, torch.randn(2, 2, 8, 8), 0, custom)
    assert relevance.shape == (2, 1, 2, 8, 8)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert hook_count(model) == 0


def test_box_rule_needs_first_layer_on_the_input() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = plain_cnn(2)

        def forward(self, x):
            return self.net(x * 2)

    model = Scaled()
    with pytest.raises(MedexplainError, match="model input directly"):
        create_explainer("lrp-epsilon-gamma-box")(model, torch.randn(1, 2, 8, 8))
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["lrp-epsilon", "lrp-epsilon-plus", "lrp-alpha2-beta1"])
def test_pass_rule_through_activations_and_unfolded_batchnorm_equals_zennit(name: str) -> None:
    """A BatchNorm after an activation cannot be folded: relevance passes through it unchanged, as through
    SiLU / LeakyReLU (Zennit's Pass rule). Equal wherever the BatchNorm input is non-zero, as here; an input
    that is exactly zero (e.g. a dead ReLU unit before a shifted BatchNorm) has no relevance in our engine,
    while Zennit passes the BatchNorm's bias share on to it."""
    model = without_batchnorm_eps(randomize_batchnorm(nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.SiLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3, padding=1),
        nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3),
    ).double()))
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    target = torch.tensor([2, 1])
    ours = _explainer(name, 1e-9)(model, x, target).maps[:, 0]
    reference = zennit_relevance(model, x, target, zennit_composite(name, 1e-9, 1e-9)).sum(dim=1)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6 * reference.abs().max().item())


@pytest.mark.parametrize("name", COMPOSITES)
def test_in_place_activations_give_the_same_relevance(name: str) -> None:
    """Pre-activation order (BatchNorm -> in-place ReLU -> conv, as in DenseNet) and conv -> in-place ReLU."""

    def build(inplace: bool) -> nn.Module:
        torch.manual_seed(3)
        return randomize_batchnorm(nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(inplace=inplace), nn.BatchNorm2d(6), nn.ReLU(inplace=inplace),
            nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(inplace=inplace), nn.Flatten(), nn.Linear(4 * 36, 3),
        ).double())

    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    explainer = _explainer(name, 1e-9)
    torch.testing.assert_close(explainer(build(True), x, "all").maps, explainer(build(False), x, "all").maps)


def _grouped_model(dims: int) -> nn.Module:
    """Grouped convolutions, the second and third with inputs of both signs (SiLU and an unfolded BatchNorm)."""
    conv, norm = {2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}[dims]
    return without_batchnorm_eps(randomize_batchnorm(nn.Sequential(
        conv(4, 6, 3, padding=1, groups=2), norm(6), nn.SiLU(), conv(6, 6, 3, padding=1, groups=3), nn.SiLU(),
        norm(6), conv(6, 4, 1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5**dims, 3),
    ).double()))


@pytest.mark.parametrize("name", COMPOSITES)
@pytest.mark.parametrize("dims", [2, 3])
def test_grouped_convolutions_and_inputs_of_both_signs_equal_zennit(name: str, dims: int) -> None:
    """The block weights of the sign-aware rules and z^B, and flat's unit filter per group, keep groups apart."""
    model = _grouped_model(dims)
    x = torch.randn(2, 4, *[5] * dims, dtype=torch.float64).clamp(-3, 3)
    target = torch.tensor([1, 2])
    ours = _explainer(name, 1e-9)(model, x, target).maps[:, 0]
    reference = zennit_relevance(model, x, target, zennit_composite(name, 1e-9, 1e-9)).sum(dim=1)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7 * reference.abs().max().item())


@pytest.mark.parametrize("first", ["flat", "box"])
def test_first_layer_rules_on_a_linear_layer_equal_zennit(first: str) -> None:
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(4, 7, dtype=torch.float64).clamp(-3, 3)
    target = torch.tensor([0, 1, 2, 1])
    ours_first, zennit_first = (Flat(1e-9), zrules.Flat(1e-9)) if first == "flat" else (
        ZBox(-3.0, 3.0, 1e-9), zrules.ZBox(-3.0, 3.0, 1e-9))
    ours, _, _ = lrp_relevance(model, x, target, Composite((((nn.Linear,), Epsilon(1e-9)),),
                                                           (((nn.Linear,), ours_first),)))
    composite = zcomposites.SpecialFirstLayerMapComposite([(nn.Linear, zrules.Epsilon(1e-9))],
                                                          [(nn.Linear, zennit_first)])
    torch.testing.assert_close(ours[:, 0], zennit_relevance(model, x, target, composite), rtol=1e-6, atol=1e-9)


def _perturb(model: nn.Module, how: str) -> None:
    """Change every weight of ``model`` the ways a user would: in place, by loading a state, by new tensors."""
    generator = torch.Generator().manual_seed(7)
    if how == "in place":  # e.g. an optimiser step; BatchNorm statistics too
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if tensor.is_floating_point():
                    tensor.mul_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) + 0.5)
    elif how == "load_state_dict":
        state = {k: v * (torch.rand(v.shape, generator=generator, dtype=v.dtype) + 0.5)
                 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        model.load_state_dict(state)
    else:  # new Parameter objects of the same shape
        for module in model.modules():
            for key, parameter in list(module.named_parameters(recurse=False)):
                setattr(module, key, nn.Parameter(parameter.detach() * -1.5))


@pytest.mark.parametrize("how", ["in place", "load_state_dict", "new parameters"])
@pytest.mark.parametrize("name", ["lrp-epsilon", "lrp-alpha2-beta1", "lrp-epsilon-gamma-box"])
def test_cached_weights_follow_every_change_of_the_model(name: str, how: str) -> None:
    """Folded and derived weights are cached across calls: after the model changes, the next result is again
    Zennit's on the changed model (not the cached one), no hook is left and the explanation changed nothing."""
    model = without_batchnorm_eps(ResNetLike(2).double())
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64).clamp(-3, 3)
    target = torch.tensor([0, 2])
    explainer = _explainer(name, 1e-9)
    before = explainer(model, x, target).maps[:, 0]
    _perturb(model, how)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    after = explainer(model, x, target).maps[:, 0]
    reference = zennit_relevance(model, x, target, zennit_composite(name, 1e-9, 1e-9)).sum(dim=1)
    torch.testing.assert_close(after, reference, rtol=1e-5, atol=1e-7 * reference.abs().max().item())
    assert (after - before).abs().max() > 1e-3 * before.abs().max()
    assert hook_count(model) == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_derived_weights_are_reused_until_a_source_changes_and_die_with_the_model() -> None:
    conv, batchnorm = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3).eval()
    folded = Affine.of(conv, batchnorm)
    assert Affine.of(conv, batchnorm).weight_pos is folded.weight_pos
    assert Affine.of(conv).weight is not folded.weight  # unfolded and folded maps are cached apart
    with torch.no_grad():
        batchnorm.running_var.add_(1.0)
    refolded = Affine.of(conv, batchnorm)
    assert refolded.weight_pos is not folded.weight_pos
    scale = torch.rsqrt(batchnorm.running_var + batchnorm.eps).view(-1, 1, 1, 1)
    torch.testing.assert_close(refolded.weight, conv.weight.detach() * scale)
    alive = weakref.ref(conv)
    del conv, folded, refolded
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_polyphase_transpose_equals_the_input_gradient_of_the_convolution(dims: int) -> None:
    """Every stride / kernel / padding / size combination, odd and even, against autograd's input gradient."""
    generator = torch.Generator().manual_seed(dims)
    for stride, kernel, padding, size in itertools.product((2, 3), (1, 2, 4, 7), (0, 3), (5, 8)):
        if size + 2 * padding < kernel:
            continue
        x = torch.randn(2, 2, *[size] * dims, dtype=torch.float64, generator=generator, requires_grad=True)
        weight = torch.randn(3, 2, *[kernel] * dims, dtype=torch.float64, generator=generator)
        y = getattr(nn.functional, f"conv{dims}d")(x, weight, None, stride, padding)
        grad = torch.randn(y.shape, dtype=torch.float64, generator=generator)
        (expected,) = torch.autograd.grad(y, x, grad)
        ours = conv_transpose_polyphase(grad, x.shape[2:], weight, [stride] * dims, [padding] * dims)
        torch.testing.assert_close(ours, expected, msg=f"stride {stride} kernel {kernel} padding {padding}")


@pytest.mark.parametrize("export", ["script", "trace"])
def test_a_torchscript_model_is_refused_not_explained_as_gradient_times_input(export: str) -> None:
    """A TorchScript module's layers are opaque, so no rule could hook them: the map would silently be the plain
    gradient x input. The audit lists LRP as not applicable to it instead."""
    from medexplain.workflows.audit import applicable_methods

    model = plain_cnn().eval()
    x = torch.randn(2, 2, 12, 12)
    exported = torch.jit.script(model) if export == "script" else torch.jit.trace(model, x)
    for name in COMPOSITES:
        with pytest.raises(MedexplainError, match="TorchScript model hides them"):
            create_explainer(name)(exported, x, 0)
    usable, skipped = applicable_methods(exported, x[:1], COMPOSITES, None, {})
    assert not usable and set(skipped) == set(COMPOSITES)


@pytest.mark.parametrize("name", COMPOSITES)
@pytest.mark.parametrize("architecture", ["cnn", "densenet"])
@pytest.mark.parametrize("dims", [2, 3])
def test_rules_taken_a_few_output_channels_at_a_time_equal_zennit(name, architecture, dims, monkeypatch) -> None:
    """With no minimum chunk size, every layer whose output is larger than its input (the stems here, 2 -> 4 or 6
    channels at full resolution) applies its rule to groups of output channels and adds their input relevances:
    the maps stay Zennit's, first-layer rules (flat, z^B) and sign-aware rules on mixed-sign inputs included."""
    chunked = []

    def spy(layer, x, y):
        chunks = output_chunks(layer, x, y)
        chunked.extend(chunks if len(chunks) > 1 else [])
        return chunks

    monkeypatch.setattr(engine, "RULE_CHUNK_BYTES", 0)
    monkeypatch.setattr(engine, "_output_chunks", spy)
    torch.manual_seed(dims)
    model = without_batchnorm_eps(ARCHITECTURES[architecture](dims).double())
    x = torch.randn(2, 2, *[6] * dims, dtype=torch.float64).clamp(-3, 3)
    target = torch.tensor([0, 2])
    ours = _explainer(name, 1e-9)(model, x, target).maps[:, 0]
    reference = zennit_relevance(model, x, target, zennit_composite(name, 1e-9, 1e-9)).sum(dim=1)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7 * reference.abs().max().item())
    assert len(chunked) >= 2  # the stem at least was taken in groups


def test_an_explanation_frees_the_activations_it_kept_without_the_garbage_collector() -> None:
    """The rule and pass nodes keep their layer's output for the backward pass without a reference cycle, and
    the output of a convolution whose BatchNorm is folded is not kept at all (freed during the forward pass):
    after the call, with the garbage collector off, nothing of the forward pass is alive (at 3D scale, each is a
    forward pass's worth)."""

    class Recorded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4).eval()
            self.act, self.head = nn.SiLU(), nn.Linear(4, 3)

        def forward(self, x):
            raw = self.conv(x)
            folded = self.norm(raw)
            activated = self.act(folded)
            self.outputs = [weakref.ref(t) for t in (raw, folded, activated)]
            del raw
            self.unfolded_freed_in_forward = self.outputs[0]() is None
            return self.head(activated.mean((2, 3)))

    model = Recorded()
    gc.disable()
    try:
        for name in COMPOSITES:
            _explainer(name, 1e-6)(model, torch.randn(2, 2, 7, 7), "all")
            assert model.unfolded_freed_in_forward, name
            assert [ref() for ref in model.outputs] == [None, None, None], name
    finally:
        gc.enable()


def test_epsilon_stores_no_copy_of_the_weights_and_z_plus_one() -> None:
    """The folded weight is never stored (``W_folded^T g = W^T (scale g)``): LRP-epsilon keeps no weight-sized
    tensor across calls, z+ only ``W+`` per convolution (mixed-sign inputs of the first one: ``W-`` and
    ``[W+ W-]`` as well)."""
    model = ResNetLike(2)
    x = torch.randn(1, 2, 8, 8)
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]

    def cached_elements() -> int:  # of weight-shaped tensors (not the per-channel scale and bias)
        entries = [entry for m in convolutions for entry in layer_cache[m].values()]
        tensors = [t for entry in entries for t in (entry[1], entry[2], *entry[3].values()) if t is not None]
        return sum(t.numel() for t in tensors if t.ndim > 1)

    create_explainer("lrp-epsilon")(model, x, "all")
    assert cached_elements() == 0
    create_explainer("lrp-epsilon-plus")(model, x, "all")
    weights = sum(m.weight.numel() for m in convolutions)
    assert cached_elements() == weights + 3 * convolutions[0].weight.numel()
