"""Concept maps: a concept placed at a known position is found there, in 2D and 3D, and the maps are Explanations
that the metrics score like any other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medexplain.concepts import collect_activations, fit_probe
from medexplain.concepts.maps import ConceptMaps
from medexplain.explain import Explanation
from medexplain.explain.hooks import hook_count
from medexplain.metrics import mask_auroc, pointing_game


class Features(nn.Module):
    """``features``: a fixed 3x3 box filter per channel, stride ``stride`` (a coarse layer) -> mean -> linear."""

    def __init__(self, channels: int, dims: int, stride: int) -> None:
        super().__init__()
        conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
        self.features = conv(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)
        nn.init.constant_(self.features.weight, 1.0 / 3**dims)
        self.head = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(2).mean(-1))


def patch_images(n: int, dims: int, side: int, seed: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Noise in 4 channels; where the concept is present, channel 0 is raised by 3 in a 4-voxel cube at a random
    place (channel 1 carries an unrelated blob elsewhere). Returns images, concept (N,), concept masks."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 4, *[side] * dims))
    present = np.arange(n) % 2
    masks = np.zeros((n, *[side] * dims), dtype=bool)
    for i in range(n):
        corner = rng.integers(0, side - 4, size=dims)
        region = tuple(slice(c, c + 4) for c in corner)
        if present[i]:
            images[(i, 0, *region)] += 3.0
            masks[(i, *region)] = True
        other = tuple(slice(c, c + 4) for c in rng.integers(0, side - 4, size=dims))
        images[(i, 1, *other)] += 3.0
    return torch.from_numpy(images), present, torch.from_numpy(masks)


def samples(images, present):
    from medexplain.data.sample import Sample

    return [Sample(image=images[i], label=int(present[i]), meta={"id": str(i)}) for i in range(len(images))]


@pytest.mark.parametrize(("dims", "side", "stride"), [(2, 24, 2), (3, 12, 1)])
def test_concept_maps_peak_where_the_concept_was_placed(dims, side, stride):
    torch.manual_seed(0)
    model = Features(4, dims, stride).double().eval()
    images, present, _ = patch_images(120, dims, side, seed=dims)
    record = collect_activations(model, samples(images, present), ["features"], progress=False)
    probe = fit_probe(record.features["features"], present, concept="patch", folds=3)
    maps_of = ConceptMaps.from_probes([probe], "features", channels=4)
    test_images, test_present, test_masks = patch_images(30, dims, side, seed=10 + dims)
    explanation = maps_of(model, test_images)
    assert isinstance(explanation, Explanation) and hook_count(model) == 0
    assert explanation.maps.shape == (30, 1, *[side] * dims)
    assert explanation.targets.eq(-1).all() and explanation.params["concepts"] == ["patch"]
    positive = torch.from_numpy(test_present.astype(bool))
    maps = explanation.maps[positive]
    # the maximum of every positive image's map lies on the placed cube, not on the equally bright unrelated blob of
    # channel 1, and the map ranks the cube's voxels above the rest
    assert pointing_game(maps, test_masks[positive].unsqueeze(1).double()).eq(1).all()
    assert mask_auroc(maps, test_masks[positive].unsqueeze(1).double()).min() > 0.9


def test_mean_of_a_mean_pooled_concept_map_is_the_probe_logit():
    """At the layer's resolution (stride 1 here: no resampling) the spatial mean of the map is the probe logit."""
    torch.manual_seed(1)
    model = Features(4, 2, 1).double().eval()
    images, present, _ = patch_images(60, 2, 16, seed=5)
    record = collect_activations(model, samples(images, present), ["features"], progress=False)
    probe = fit_probe(record.features["features"], present, concept="patch", folds=3)
    maps = ConceptMaps.from_probes([probe, probe], "features", channels=4)(model, images, target=[1])
    np.testing.assert_allclose(
        maps.maps.flatten(1).mean(1).numpy(), probe.logit(record.features["features"]), rtol=1e-10, atol=1e-10
    )


def test_concept_maps_restore_training_mode_and_reject_bad_requests():
    from medexplain.errors import MedexplainError

    model = Features(4, 2, 1).double().train()
    ones, zeros = torch.ones(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    maps = ConceptMaps("features", ones, zeros, ("a", "b"))
    maps(model, torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert model.training and hook_count(model) == 0
    with pytest.raises(MedexplainError, match="concept index 2 out of range for 2 concepts"):
        maps(model, torch.randn(1, 4, 8, 8, dtype=torch.float64), target=2)
    with pytest.raises(MedexplainError, match="layer 'features' has 4 channels, the probes 3"):
        ConceptMaps("features", torch.ones(1, 3), torch.zeros(1), ("a",))(model, torch.randn(1, 4, 8, 8).double())
