"""The baseline maps of an audit: what each one is, computed by hand, and that none depends on the model."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.explain.models import MODELS

from medexplain.explain import create_explainer
from medexplain.metrics import pointing_game
from medexplain.metrics.sanity import parameter_layers


@pytest.mark.parametrize("dims", [2, 3])
def test_centre_prior_is_a_gaussian_at_the_centre(dims: int) -> None:
    model = MODELS["resnet"](dims).double().eval()
    x = torch.randn(2, 2, *[9] * dims, dtype=torch.float64)
    maps = create_explainer("baseline-centre", width=0.25)(model, x).maps[:, 0]
    centre = (0, *[4] * dims)
    assert maps[centre] == pytest.approx(1.0) and torch.equal(maps[0], maps[1])
    corner = (0, *[0] * dims)
    assert maps[corner] == pytest.approx(float(torch.exp(torch.tensor(-dims * (4 / 2.25) ** 2 / 2))))


def test_edges_follow_the_image_and_the_constant_map_scores_chance() -> None:
    model = MODELS["resnet"](2).double().eval()
    x = torch.zeros(1, 2, 9, 9, dtype=torch.float64)
    x[..., 5:] = 1.0  # a vertical step between columns 4 and 5
    edges = create_explainer("baseline-edges")(model, x).maps[0, 0]
    assert torch.equal(edges[:, 4], torch.full((9,), 1.0, dtype=torch.float64))  # (1 - 0) / 2 per channel, 2 channels
    assert torch.equal(edges[:, 5], edges[:, 4]) and edges[:, :4].abs().sum() == 0 and edges[:, 6:].abs().sum() == 0
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, 2:5, 2:5] = True
    constant = create_explainer("baseline-constant")(model, x).maps[:, 0]
    assert pointing_game(constant, mask).item() == pytest.approx(9 / 81)  # chance: the mask's share


def test_random_maps_depend_on_the_sample_and_seed_only() -> None:
    model = MODELS["resnet"](2).double().eval()
    x = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    explain = create_explainer("baseline-random", seed=1)
    together = explain(model, x).maps
    alone = torch.cat([explain(model, x[i : i + 1]).maps for i in range(3)])
    assert torch.equal(together, alone) and not torch.equal(together[0], together[1])
    assert not torch.equal(create_explainer("baseline-random", seed=2)(model, x).maps, together)


@pytest.mark.parametrize("name", ["baseline-constant", "baseline-random", "baseline-centre", "baseline-edges",
                                  "baseline-prior"])  # fmt: skip
def test_no_baseline_depends_on_the_model(name: str) -> None:
    model = MODELS["densenet"](2).double().eval()
    randomised = copy.deepcopy(model)
    with torch.no_grad():
        for layer in parameter_layers(randomised):
            for parameter in dict(randomised.named_modules())[layer].parameters(recurse=False):
                parameter.copy_(torch.randn_like(parameter))
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    params = {"prior": torch.rand(4, 4, dtype=torch.float64)} if name == "baseline-prior" else {}
    explain = create_explainer(name, **params)
    assert torch.equal(explain(model, x, 0).maps, explain(randomised, x, 0).maps)
