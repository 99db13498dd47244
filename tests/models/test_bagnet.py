"""BagNet properties, 2D and 3D: the evidence map is the decision, and each position sees exactly a q-patch."""

from __future__ import annotations

import itertools

import pytest
import torch

from medexplain.errors import MedexplainError
from medexplain.models import MODELS, BagNet, create_model
from medexplain.models.bagnet import FlipAveraged

STRIDE = BagNet.patch_stride


def _random_eval_model(name: str, spatial_dims: int, in_channels: int = 2, num_classes: int = 3) -> torch.nn.Module:
    """A float64 model in eval mode with non-trivial BatchNorm statistics and evidence bias."""
    model = create_model(name, in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims).double()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    torch.nn.init.normal_(model.class_bias, std=1.0)
    return model.eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["bagnet9-light", "sparse-bagnet17-light", "bagnet33-light"])
def test_logits_are_the_spatial_mean_of_the_evidence_map(name: str, spatial_dims: int) -> None:
    model = _random_eval_model(name, spatial_dims)
    size = (35, 42, 33) if spatial_dims == 3 else (61, 52)
    x = torch.randn(2, 2, *size, dtype=torch.float64)
    evidence = model.evidence_map(x)
    expected_spatial = tuple((n - model.patch_size) // STRIDE + 1 for n in size)
    assert evidence.shape == (2, 3, *expected_spatial)
    # Independent pooling: sum every position by hand and divide by their number.
    by_hand = sum(evidence[(..., *index)] for index in itertools.product(*map(range, expected_spatial)))
    torch.testing.assert_close(model(x), by_hand / evidence[0, 0].numel(), atol=1e-6, rtol=0)
    # The same under training-mode BatchNorm (batch statistics).
    model.train()
    torch.testing.assert_close(model(x), model.evidence_map(x).mean(dim=tuple(range(2, 2 + spatial_dims))))


def test_published_architecture_logits_equal_mean_evidence() -> None:
    model = _random_eval_model("bagnet33", 2, in_channels=3, num_classes=4)
    x = torch.randn(1, 3, 41, 41, dtype=torch.float64)
    torch.testing.assert_close(model(x), model.evidence_map(x).mean(dim=(2, 3)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("patch_size", [9, 17, 33])
def test_each_evidence_position_sees_exactly_its_patch(patch_size: int, spatial_dims: int) -> None:
    model = _random_eval_model(f"bagnet{patch_size}-light", spatial_dims, in_channels=1)
    side = patch_size + STRIDE  # two evidence positions per axis; position 1 sees [8, 8 + q)
    x = torch.randn(1, 1, *[side] * spatial_dims, dtype=torch.float64, requires_grad=True)
    position = (1,) * spatial_dims
    inside = torch.zeros(x.shape, dtype=torch.bool)
    inside[(0, 0, *[slice(STRIDE, STRIDE + patch_size)] * spatial_dims)] = True

    reference = model.evidence_map(x)[(..., *position)]
    # The gradient of the position's evidence is non-zero exactly on the patch (checked at its bounding box).
    (gradient,) = torch.autograd.grad(reference.sum(), x)
    support = gradient[0, 0] != 0
    assert not support[~inside[0, 0]].any()
    for axis in range(spatial_dims):
        used = support.any(dim=tuple(a for a in range(spatial_dims) if a != axis))
        assert used.nonzero().min().item() == STRIDE
        assert used.nonzero().max().item() == STRIDE + patch_size - 1

    with torch.no_grad():
        # Changing every voxel outside the patch leaves the position's evidence unchanged ...
        outside_changed = torch.where(inside, x, torch.randn_like(x) * 5)
        torch.testing.assert_close(model.evidence_map(outside_changed)[(..., *position)], reference, atol=0, rtol=0)
        # ... and changing any single corner of the patch changes it.
        for corner in itertools.product((STRIDE, STRIDE + patch_size - 1), repeat=spatial_dims):
            poked = x.detach().clone()
            poked[(0, 0, *corner)] += 3.0
            assert (model.evidence_map(poked)[(..., *position)] - reference).abs().max() > 1e-9


@pytest.mark.parametrize("patch_size, three_by_three", [(9, 3), (17, 4), (33, 5)])
def test_published_layout_keeps_3x3_convolutions_where_the_paper_does(patch_size: int, three_by_three: int) -> None:
    model = create_model(f"bagnet{patch_size}")
    kernels = [m.kernel_size[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # Stem 3x3 plus the first block of stages 1..n; ResNet-50 block counts (3, 4, 6, 3); widths 256..2048.
    assert kernels.count(3) == three_by_three
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    assert model.num_features == 2048


def test_input_smaller_than_the_patch_is_refused() -> None:
    model = create_model("bagnet33-light", in_channels=1)
    with pytest.raises(MedexplainError, match="33-pixel patch"):
        model(torch.zeros(1, 1, 32, 40))
    with pytest.raises(MedexplainError, match="does not fit"):
        model(torch.zeros(1, 3, 40, 40))


def test_sparse_names_register_the_same_architectures_as_interpretable() -> None:
    for q in (9, 17, 33):
        for suffix in ("", "-light"):
            plain, sparse = MODELS.entry(f"bagnet{q}{suffix}"), MODELS.entry(f"sparse-bagnet{q}{suffix}")
            assert plain.metadata["interpretable"] and sparse.metadata["interpretable"]
            assert sparse.metadata["sparsity_lambda"] > 0 and "sparsity_lambda" not in plain.metadata
            a, b = plain.obj(in_channels=1, num_classes=2), sparse.obj(in_channels=1, num_classes=2)
            shapes = [[(k, v.shape) for k, v in m.state_dict().items()] for m in (a, b)]
            assert shapes[0] == shapes[1]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_relu_local_evidence_is_non_negative_and_still_pools_to_the_logits(spatial_dims: int) -> None:
    model = create_model(
        "sparse-bagnet9-light", in_channels=1, num_classes=3, spatial_dims=spatial_dims, evidence_activation="relu"
    ).double()
    model.eval()
    torch.nn.init.normal_(model.class_bias)
    x = torch.randn(2, 1, *[25] * spatial_dims, dtype=torch.float64)
    local = model.local_evidence(x)
    assert (local >= 0).all() and (local == 0).any() and (local > 0).any()
    evidence = model.evidence_map(x)
    torch.testing.assert_close(evidence, local + model.class_bias.view(1, 3, *[1] * spatial_dims), atol=0, rtol=0)
    torch.testing.assert_close(model(x), evidence.mean(dim=tuple(range(2, 2 + spatial_dims))), atol=1e-6, rtol=0)
    with pytest.raises(MedexplainError, match="evidence_activation must be 'linear' or 'relu'"):
        create_model("bagnet9-light", evidence_activation="softmax")


def _sees_only_its_patch(model: torch.nn.Module, x: torch.Tensor, position: int) -> bool:
    """Whether evidence position ``(position, ...)`` is unchanged when every input outside its q-patch changes."""
    q = model.model.patch_size if hasattr(model, "model") else model.patch_size
    inside = tuple(slice(STRIDE * position, STRIDE * position + q) for _ in x.shape[2:])
    changed = x + 1 + torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    changed[(..., *inside)] = x[(..., *inside)]
    at = (..., *[position] * (x.ndim - 2))
    return torch.allclose(model.evidence_map(changed)[at], model.evidence_map(x)[at], atol=1e-10, rtol=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flip_averaged_logits_are_the_mean_over_flips_and_aligned_positions_keep_their_patch(spatial_dims: int) -> None:
    model = _random_eval_model("sparse-bagnet9-light", spatial_dims)
    axes = (0, 1) if spatial_dims == 2 else (0, 2)
    size = (25, 33) if spatial_dims == 2 else (25, 17, 33)  # (n - 9) is a multiple of 8: positions align
    x = torch.randn(2, 2, *size, dtype=torch.float64)
    tta = FlipAveraged(model, axes)
    flips = [dims for r in range(len(axes) + 1) for dims in itertools.combinations([2 + a for a in axes], r)]
    assert len(flips) == 2 ** len(axes)
    # Independent reference: the plain model's logits of every flipped copy, averaged.
    expected = sum(model(x.flip(dims) if dims else x) for dims in flips) / len(flips)
    torch.testing.assert_close(tta(x), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(tta(x), tta.evidence_map(x).flatten(2).mean(2), atol=1e-12, rtol=0)
    # Aligned positions: every averaged position still sees exactly its own q-patch.
    assert _sees_only_its_patch(tta, x, position=1)
    # The plain model is not flip-invariant, so the averaging changes the map.
    assert not torch.allclose(tta.evidence_map(x), model.evidence_map(x), atol=1e-6)
    # The bias is the model's, so the local evidence E - b of the averaged map is the average of local evidence.
    local = sum(
        (model.local_evidence(x.flip(dims)).flip(dims) if dims else model.local_evidence(x)) for dims in flips
    ) / len(flips)
    torch.testing.assert_close(tta.evidence_map(x) - tta.class_bias.view(1, -1, *[1] * spatial_dims), local)


def test_flip_averaged_misaligned_sizes_shift_positions_and_bad_requests_are_refused() -> None:
    model = _random_eval_model("bagnet9-light", 2)
    x = torch.randn(1, 2, 28, 25, dtype=torch.float64)  # (28 - 9) mod 8 = 3: flipped positions are shifted
    assert _sees_only_its_patch(model, x, position=1)
    assert not _sees_only_its_patch(FlipAveraged(model, (0,)), x, position=1)  # it sees 3 more pixels
    assert _sees_only_its_patch(FlipAveraged(model, (1,)), x, position=1)  # (25 - 9) mod 8 = 0
    with pytest.raises(MedexplainError, match=r"flip axes must be distinct spatial axes in 0\.\.1"):
        FlipAveraged(model, (2,))
    with pytest.raises(MedexplainError, match="flip axes"):
        FlipAveraged(model, (0, 0))
    with pytest.raises(MedexplainError, match="has no evidence map"):
        FlipAveraged(create_model("resnet18", in_channels=2, num_classes=3), (0,))
