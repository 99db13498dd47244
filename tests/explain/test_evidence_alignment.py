"""Evidence maps of BagNets sit on their patches' centres (Brendel & Bethge, ICLR 2019: position i sees
input [8 i, 8 i + q)); a plain resize of the grid would shift them by up to the stride."""

from __future__ import annotations

import pytest
import torch

from medexplain.explain import create_explainer
from medexplain.explain.resample import patches_to_input
from medexplain.models import create_model
from medexplain.models.bagnet import FlipAveraged


def test_patches_to_input_places_values_at_centres_and_interpolates_between_them() -> None:
    coarse = torch.tensor([[[2.0, 6.0, -4.0]]])  # (B=1, K=1, 3 patches of 9 px, stride 8) on a 1-D input of 30 px
    placed = patches_to_input(coarse, (30,), patch_size=9, stride=8)[0, 0]
    assert placed[4] == 2.0 and placed[12] == 6.0 and placed[20] == -4.0  # centres 8 i + 4
    assert placed[8] == 4.0 and placed[16] == 1.0  # halfway between two centres
    assert placed[10] == pytest.approx(2.0 + 6 / 8 * 4.0)
    assert placed[:5].eq(2.0).all() and placed[20:].eq(-4.0).all()  # beyond the outer centres: their value


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_evidence_of_every_patch_is_at_its_centre_and_its_mean_is_the_logit(spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = create_model("bagnet9-light", in_channels=2, num_classes=3, spatial_dims=spatial_dims, width=4)
    model = model.double().eval()
    side = 33 if spatial_dims == 2 else 25  # 4 x 4 patches in 2D, 3 x 3 x 3 in 3D; no patch covers the last pixel
    x = torch.randn(2, 2, *[side] * spatial_dims, dtype=torch.float64)
    explanation = create_explainer("evidence")(model, x, [2, 0])
    with torch.no_grad():
        evidence = model.evidence_map(x)
    coarse = torch.stack([evidence[0, 2], evidence[1, 0]])
    centres = torch.arange(coarse.shape[-1]) * model.patch_stride + (model.patch_size - 1) // 2
    at_centres = explanation.maps[:, 0]
    for axis in range(spatial_dims):
        at_centres = at_centres.index_select(1 + axis, centres)
    torch.testing.assert_close(at_centres, coarse)
    torch.testing.assert_close(coarse.flatten(1).mean(1), explanation.logits[[0, 1], [2, 0]])


def test_flip_averaged_evidence_sits_at_the_patch_centres_like_its_bagnet() -> None:
    torch.manual_seed(2)
    bagnet = create_model("bagnet9-light", in_channels=1, num_classes=2, width=4).double().eval()
    averaged = FlipAveraged(bagnet, (0, 1))
    x = torch.randn(1, 1, 33, 33, dtype=torch.float64)
    explanation = create_explainer("evidence")(averaged, x, 1)
    with torch.no_grad():
        expected = patches_to_input(averaged.evidence_map(x)[:, 1:], (33, 33), bagnet.patch_size, bagnet.patch_stride)
    torch.testing.assert_close(explanation.maps[:, 0], expected[:, 0])
    assert not torch.allclose(averaged.evidence_map(x), bagnet.evidence_map(x))  # the flips do change the map


@pytest.mark.parametrize("flip_averaged", [False, True])
def test_a_changed_patch_moves_the_map_where_the_change_is(flip_averaged: bool) -> None:
    torch.manual_seed(1)
    model = create_model("bagnet9-light", in_channels=1, num_classes=2, width=4).double().eval()
    if flip_averaged:  # 41 - 9 is a multiple of 8: flipped-back patches coincide with the unflipped ones
        model = FlipAveraged(model, (0, 1))
    x = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    changed = x.clone()
    changed[0, 0, 24:33, 8:17] = torch.randn(9, 9, dtype=torch.float64) * 5  # exactly patch (3, 1): centre (28, 12)
    explain = create_explainer("evidence")
    difference = (explain(model, changed, 1).maps - explain(model, x, 1).maps)[0, 0].abs()
    assert difference.max() > 0
    assert divmod(int(difference.argmax()), 41) == (28, 12)


@pytest.mark.parametrize("flip_averaged", [False, True])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_evidence_runs_the_network_once_and_its_logits_are_the_models(spatial_dims: int, flip_averaged: bool) -> None:
    torch.manual_seed(3)
    bagnet = create_model("bagnet9-light", in_channels=1, num_classes=3, spatial_dims=spatial_dims, width=4).eval()
    model = FlipAveraged(bagnet, [0]) if flip_averaged else bagnet
    x = torch.randn(2, 1, *[25] * spatial_dims)
    calls = []
    handle = bagnet.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        explanation = create_explainer("evidence")(model, x, "predicted")
    finally:
        handle.remove()
    assert len(calls) == (2 if flip_averaged else 1)  # one pass per flip, none to compute the logits again
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, model(x), rtol=0, atol=0)
    assert explanation.targets[:, 0].tolist() == model(x).argmax(1).tolist()
