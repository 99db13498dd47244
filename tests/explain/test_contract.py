"""Contract of every registered explainer, 2D and 3D, on ResNet-, DenseNet- and BagNet-like models and on vision
transformers (MONAI's ViT, a user's nn.MultiheadAttention ViT): maps at input resolution, no hook left (after
success and after an exception), ``model.training`` unchanged, batch results equal single-sample results,
deterministic; clear errors for bad input."""

from __future__ import annotations

import pytest
import torch
from tests.explain.models import BATCHNORM, MODELS, TRANSFORMERS, BagNetLike, tiny_vit
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain import EXPLAINERS, Explanation, available, create_explainer
from medexplain.explain.hooks import hook_count

NAMES = available()
LIGHT = {"integrated-gradients": {"steps": 8}, "smoothgrad": {"samples": 4}}
"""Fewer path points / noise draws than the defaults keep the contract tests fast; the contract is the same."""


def make(name: str, dims: int = 2):
    """The explainer ``name`` with the light settings, and a prior map for ``baseline-prior``."""
    if name == "baseline-prior":
        return create_explainer(name, prior=torch.rand(*[5] * dims, generator=torch.Generator().manual_seed(9)))
    return create_explainer(name, **LIGHT.get(name, {}))


ALL_MODELS = {**MODELS, **TRANSFORMERS}


def _applicable(name: str, model_name: str) -> bool:
    metadata = EXPLAINERS.entry(name).metadata
    needs, transformer = metadata.get("needs"), model_name in TRANSFORMERS
    return (
        (needs != "evidence_map" or model_name == "bagnet")
        and (needs != "attention" or transformer)
        and (metadata.get("attention") != "refused" or not transformer)
    )


def _transformer(name: str) -> bool:
    """Whether the failure tests give ``name`` a ViT (the attention explainers need one)."""
    return EXPLAINERS.entry(name).metadata.get("needs") == "attention"


CASES = [(n, m, d) for n in NAMES for m in sorted(ALL_MODELS) for d in (2, 3) if _applicable(n, m)]


def _input(dims: int, batch: int = 3) -> Tensor:
    generator = torch.Generator().manual_seed(dims)
    return torch.randn(batch, 2, *[9] * dims, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(("name", "model_name", "dims"), CASES)
def test_explainer_contract(name: str, model_name: str, dims: int) -> None:
    model = ALL_MODELS[model_name](dims).double().eval()
    x = _input(dims)
    explainer = make(name, dims)
    first = explainer(model, x, [0, 2, 1])
    assert isinstance(first, Explanation)
    assert first.maps.shape == (3, 1, *x.shape[2:])
    assert first.targets.tolist() == [[0], [2], [1]]
    assert torch.isfinite(first.maps).all()
    assert hook_count(model) == 0
    assert not model.training
    again = explainer(model, x, [0, 2, 1])
    torch.testing.assert_close(again.maps, first.maps, rtol=0, atol=0)
    for i in range(3):
        single = explainer(model, x[i : i + 1], [[0], [2], [1]][i])
        torch.testing.assert_close(single.maps[0], first.maps[i], rtol=1e-9, atol=1e-12)
    model.train()
    explainer(model, x, 0)
    assert model.training and hook_count(model) == 0


class Failing(BagNetLike):
    """Raises in the middle of its forward pass (in its evidence map), after hooked layers ran."""

    def evidence_map(self, x: Tensor) -> Tensor:
        self.classifier(self.features(x))
        raise RuntimeError("boom")


class FailingViT(nn.Module):
    """A ViT that raises after its whole transformer ran (every hook and attention tap fired)."""

    def __init__(self, dims: int = 2) -> None:
        super().__init__()
        self.inner = tiny_vit(dims)

    def forward(self, x: Tensor) -> Tensor:
        self.inner.vit(x)
        raise RuntimeError("boom")


FAILURES = [(n, m, d) for n in NAMES for m, dims in (("bagnet", (2,)), ("vit", (2, 3))) for d in dims
            if _applicable(n, m)]  # fmt: skip


@pytest.mark.parametrize(("name", "model_name", "dims"), FAILURES)
def test_no_hook_left_after_an_exception(name: str, model_name: str, dims: int) -> None:
    model = (FailingViT(dims) if model_name == "vit" else Failing(dims)).double().eval()
    with pytest.raises(RuntimeError, match="boom"):
        make(name, dims)(model, _input(dims), 0)
    assert hook_count(model) == 0
    assert not model.training


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", [n for n in NAMES if EXPLAINERS.entry(n).metadata.get("attention") == "refused"])
def test_lrp_made_for_cnns_refuses_a_transformer(name: str, dims: int) -> None:
    """Without rules for attention and LayerNorm, relevance would cross them by gradient: not LRP."""
    model = TRANSFORMERS["mha-vit"](dims).double().eval()
    with pytest.raises(MedexplainError, match=f"^{name} has no rule for attention or LayerNorm, and 'blocks.0.attn' "
                       "is an attention module; explain transformers with attnlrp or cp-lrp$"):  # fmt: skip
        make(name, dims)(model, _input(dims), 0)
    assert hook_count(model) == 0


class Normed(BagNetLike):
    """With a BatchNorm, whose running statistics a forward pass in training mode updates."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(2)
        self.features.insert(1, BATCHNORM[2](8))
        self.fail = fail

    def evidence_map(self, x: Tensor) -> Tensor:
        evidence = super().evidence_map(x)
        if self.fail:
            raise RuntimeError("boom")
        return evidence


class NormedViT(nn.Module):
    """A ViT behind a BatchNorm of its input (running statistics), raising after the transformer when ``fail``."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.norm, self.inner, self.fail = BATCHNORM[2](2), tiny_vit(2), fail

    def forward(self, x: Tensor) -> Tensor:
        logits = self.inner(self.norm(x))
        if self.fail:
            raise RuntimeError("boom")
        return logits


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fail", [False, True])
def test_a_model_in_training_mode_keeps_every_state_tensor(name: str, fail: bool) -> None:
    """BatchNorm in training mode updates its running statistics on each forward pass; explaining must not."""
    model = (NormedViT(fail) if _transformer(name) else Normed(fail)).double().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert any(key.endswith("running_mean") for key in before)
    explain = make(name)
    if fail:
        with pytest.raises(RuntimeError, match="boom"):
            explain(model, _input(2), 0)
    else:
        explain(model, _input(2), 0)
    after = model.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert model.training and hook_count(model) == 0


@pytest.mark.parametrize("name", NAMES)
def test_target_out_of_range_is_a_clear_error(name: str) -> None:
    model = (tiny_vit() if _transformer(name) else BagNetLike(2)).double().eval()
    with pytest.raises(MedexplainError, match="out of range for a model with 3 outputs"):
        make(name)(model, _input(2), 5)
    assert hook_count(model) == 0


class NotLogits(BagNetLike):
    def forward(self, x: Tensor) -> Tensor:
        return self.evidence_map(x)


class TokensNotLogits(nn.Module):
    """A ViT returning its token states ``(B, N, D)`` instead of logits."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_vit(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner.vit(x)[1][-1]


@pytest.mark.parametrize("name", [n for n in NAMES if n != "evidence"])  # evidence reads the map, not the output
def test_model_output_not_b_k_is_a_clear_error(name: str) -> None:
    model = (TokensNotLogits() if _transformer(name) else NotLogits(2)).double().eval()
    with pytest.raises(MedexplainError, match=r"model output must be \(B, K\) logits"):
        make(name)(model, _input(2), 0)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "hirescam", "layercam"])
def test_unknown_layer_lists_the_valid_ones(name: str) -> None:
    model = MODELS["resnet"](2).double()
    with pytest.raises(MedexplainError, match=r"no layer 'layer9'; valid layers: stem, stem\.0"):
        create_explainer(name, layer="layer9")(model, _input(2), 0)
    assert hook_count(model) == 0


def test_evidence_needs_an_evidence_model_and_smoothgrad_a_known_method() -> None:
    with pytest.raises(MedexplainError, match="has no evidence_map"):
        create_explainer("evidence")(MODELS["resnet"](2), torch.randn(1, 2, 8, 8), 0)
    with pytest.raises(MedexplainError, match="unknown explainer 'salency'"):
        create_explainer("smoothgrad", method="salency")(MODELS["resnet"](2), torch.randn(1, 2, 8, 8), 0)
