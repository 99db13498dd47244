"""SIBnet losses: hand-computed toy cases, brute-force and scikit-image references, finite differences through
Grad-CAM wrt the weights (float64, 2D and 3D), the collapse mechanism and its fix on controlled models,
first-iteration scaling, training end to end with live and distinct maps, bad input."""

from __future__ import annotations

import copy
import csv
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.morphology import ball, disk, erosion
from torch import nn

from medexplain.cli import main
from medexplain.data import collate, load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.errors import MedexplainError
from medexplain.models import load
from medexplain.train import Objective, TrainConfig, train
from medexplain.train.sibnet import (
    PUBLISHED,
    ClassDistinctivenessLoss,
    DeadMapsWarning,
    SIBnetLoss,
    SpatialCoherenceLoss,
    class_distinctiveness,
    class_saliency,
    evidence_floor,
    map_health,
    salient_regions,
    spatial_coherence,
    warn_if_maps_died,
)


def test_distinctiveness_of_identical_orthogonal_and_hand_computed_maps() -> None:
    blob = torch.rand(1, 1, 6, 6) + 0.1
    assert float(class_distinctiveness(blob.repeat(2, 2, 1, 1))) == pytest.approx(1.0)
    left, right = torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)
    left[..., :3], right[..., 3:] = 1.0, 2.0
    assert float(class_distinctiveness(torch.cat([left, right], 1))) == 0.0
    # a = (1, 1, 0), b = (1, 0, 0), c = (0, 0, 3): cos(a, b) = 1/sqrt 2, cos(a, c) = cos(b, c) = 0
    maps = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]]).view(1, 3, 3, 1)
    assert float(ClassDistinctivenessLoss()(maps)) == pytest.approx((1 / math.sqrt(2)) / 3)
    # signed maps count by magnitude, and an all-zero map is orthogonal to everything
    signed = torch.cat([left, -left, torch.zeros_like(left)], 1)
    assert float(class_distinctiveness(signed)) == pytest.approx(1 / 3)


def _brute_force_coherence(maps: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over p in a region and q within Chebyshev distance window // 2 of p, q not in another region of the
    same map, of (S_p - S_q)^2; pairs enumerated explicitly."""
    regions, owner = salient_regions(maps)
    flat = maps.flatten(0, 1)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in flat.shape[1:]], indexing="ij"), -1).flatten(0, -2)
    total = maps.new_zeros(())
    for region, index in zip(regions, owner, strict=True):
        others = regions[(owner == index)].any(0) & ~region
        values = flat[index].flatten()
        p = region.flatten().nonzero().squeeze(1)
        q = (~others).flatten().nonzero().squeeze(1)
        near = (grid[p][:, None] - grid[q][None]).abs().amax(-1) <= window // 2
        total = total + ((values[p][:, None] - values[q][None]) ** 2 * near).sum()
    return total / maps.shape[0]


def _smooth_noise(shape: tuple[int, ...], width: int) -> torch.Tensor:
    pool = getattr(torch.nn.functional, f"avg_pool{len(shape) - 2}d")
    return pool(torch.rand(shape, dtype=torch.float64), width, 1, width // 2)


@pytest.mark.parametrize(("spatial_dims", "side", "window"), [(2, 24, 9), (2, 17, 3), (3, 12, 9), (3, 10, 5)])
def test_coherence_equals_the_brute_force_pair_sum(spatial_dims: int, side: int, window: int) -> None:
    maps = _smooth_noise((2, 3, *[side] * spatial_dims), 3)
    expected = _brute_force_coherence(maps, window)
    assert float(expected) > 0
    torch.testing.assert_close(SpatialCoherenceLoss(window)(maps), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_salient_regions_equal_scikit_image_otsu_erosion_and_labels(spatial_dims: int) -> None:
    maps = _smooth_noise((2, 2, *[40 if spatial_dims == 2 else 16] * spatial_dims), 5 if spatial_dims == 2 else 3)
    regions, owner = salient_regions(maps)
    flat = maps.flatten(0, 1).numpy()
    for index, image in enumerate(flat):
        cross = disk(1) if spatial_dims == 2 else ball(1)
        foreground = erosion((image > threshold_otsu(image)).astype(np.uint8), cross).astype(bool)
        background = label(~foreground, connectivity=1)
        border = np.unique(np.concatenate([np.moveaxis(background, a, 0)[[0, -1]].ravel() for a in range(image.ndim)]))
        filled = foreground | ~np.isin(background, border)  # holes: background parts away from the border
        labels = label(filled, connectivity=spatial_dims)
        expected = sorted(tuple(np.flatnonzero(labels == k)) for k in range(1, labels.max() + 1))
        ours = sorted(tuple(np.flatnonzero(r.numpy())) for r in regions[owner == index])
        assert ours == expected
    assert len(owner) >= len(flat)  # every map keeps at least one region


def _blob(spatial_dims: int, side: int) -> torch.Tensor:
    axis = torch.arange(side, dtype=torch.float64) - side / 2
    grids = torch.meshgrid(*[axis] * spatial_dims, indexing="ij")
    return torch.exp(-sum(g**2 for g in grids) / (2 * (side / 3) ** 2)).view(1, 1, *[side] * spatial_dims)


@pytest.mark.parametrize(("spatial_dims", "side"), [(2, 48), (3, 32)])
def test_smooth_map_is_more_coherent_than_the_same_map_with_salt_and_pepper(spatial_dims: int, side: int) -> None:
    smooth = _blob(spatial_dims, side).repeat(1, 2, *[1] * spatial_dims)
    generator = torch.Generator().manual_seed(0)
    noisy = smooth.clone()
    hit = torch.rand(noisy.shape, generator=generator, dtype=torch.float64) < 0.05
    salt = torch.rand(noisy.shape, generator=generator, dtype=torch.float64) < 0.5
    noisy[hit] = torch.where(salt[hit], 1.0, 0.0).to(noisy)
    assert float(spatial_coherence(noisy)) > 1.5 * float(spatial_coherence(smooth)) > 0


class _Tiny(nn.Module):
    """conv -> relu -> stride-2 conv block -> relu -> mean -> linear: Grad-CAM at ``block`` is upsampled x2."""

    def __init__(self, spatial_dims: int, classes: int = 3) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.stem = nn.Sequential(conv(1, 3, 3, padding=1), nn.Softplus())
        self.block = nn.Sequential(conv(3, 8, 3, stride=2, padding=1), nn.Softplus())
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.stem(x)).flatten(2).mean(2))


@pytest.mark.parametrize(("spatial_dims", "side"), [(2, 8), (3, 6)])
def test_loss_gradients_wrt_the_weights_match_finite_differences(spatial_dims: int, side: int) -> None:
    torch.manual_seed(1)  # an initialisation where every class map is non-zero somewhere
    model = _Tiny(spatial_dims).double()
    x = torch.randn(2, 1, *[side] * spatial_dims, dtype=torch.float64)
    names = ["stem.0.weight", "block.0.bias", "fc.weight"]
    inputs = tuple(dict(model.named_parameters())[n].detach().clone().requires_grad_(True) for n in names)

    def term(loss):
        def f(*weights: torch.Tensor) -> torch.Tensor:
            with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(names, weights, strict=True))):
                maps, _ = class_saliency(model, x)
            return loss(maps)

        return f

    torch.autograd.gradcheck(term(class_distinctiveness), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    torch.autograd.gradcheck(term(spatial_coherence), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    target = torch.tensor([0, 2])

    def default_penalty(*weights: torch.Tensor) -> torch.Tensor:  # scaled maps and the floor, scales held fixed
        loss = SIBnetLoss()
        loss.cd_scale, loss.sc_scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
        with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(names, weights, strict=True))):
            return loss(model, x, target)[0]

    torch.autograd.gradcheck(default_penalty, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    # the penalty really reaches every weight through the Grad-CAM maps, and the logits are the model's
    maps, logits = class_saliency(model, x)
    assert (maps.flatten(2).amax(2) > 0).all()
    weights = [dict(model.named_parameters())[n] for n in names]
    grads = torch.autograd.grad(class_distinctiveness(maps) + spatial_coherence(maps), weights)
    assert all(g.abs().sum() > 0 for g in grads)
    torch.testing.assert_close(logits, model(x))


def test_each_term_is_scaled_by_its_first_value() -> None:
    torch.manual_seed(1)
    model = _Tiny(2)
    loss = SIBnetLoss(**PUBLISHED)
    first, second = torch.randn(4, 1, 10, 10), torch.randn(4, 1, 10, 10)
    penalty, _, parts = loss(model, first)
    assert float(parts["distinctiveness"].detach()) > 0 and float(parts["coherence"].detach()) > 0
    assert float(penalty.detach()) == pytest.approx(1.2 + 0.9)
    penalty, logits, parts = loss(model, second)
    maps = class_saliency(model, second, rectify=False)[0].clamp(min=0)  # the ReLU of the upsampled signed map
    cd, sc = class_distinctiveness(maps), spatial_coherence(maps)
    torch.testing.assert_close(parts["distinctiveness"], cd)
    expected = 1.2 * cd / loss.cd_scale + 0.9 * sc / loss.sc_scale
    torch.testing.assert_close(penalty, expected)
    assert float(loss.cd_scale) != pytest.approx(float(cd.detach()))  # the scale is the first batch's, not this one's
    torch.testing.assert_close(logits, model(second))


def test_default_formulation_scales_maps_by_their_signed_mass_and_adds_the_floor() -> None:
    torch.manual_seed(1)
    model = _Tiny(2).double()
    x, target = torch.randn(4, 1, 10, 10, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    loss = SIBnetLoss()
    loss(model, x, target)  # takes the first-iteration scales
    penalty, _, parts = loss(model, x, target)
    signed, _ = class_saliency(model, x, rectify=False)
    scaled = signed.clamp(min=0) / signed.abs().mean((2, 3), keepdim=True)
    floor = evidence_floor(signed, target)
    torch.testing.assert_close(parts["distinctiveness"], class_distinctiveness(scaled))
    torch.testing.assert_close(parts["floor"], floor)
    torch.testing.assert_close(penalty, 1.2 + 0.225 + floor)  # second call on the same batch: each ratio is 1


def test_map_health_and_the_evidence_floor_on_hand_computed_maps() -> None:
    maps = torch.zeros(2, 2, 4, 4, dtype=torch.float64)
    maps[0, 0, 1, 1] = 2.0  # alive: energy 4 / 16
    maps[0, 1] = -1.0  # negative everywhere: Grad-CAM shows nothing
    maps[1, 0, 0, 0], maps[1, 0, 3, 3] = -3.0, 1.0  # alive: energy 1 / 16 (the negative part is not shown)
    health = map_health(maps)  # maps[1, 1] is zero: empty
    assert float(health["empty_maps"]) == 0.5
    assert float(health["map_energy"]) == pytest.approx((4 + 1) / 16 / 4)
    # true-class balance sum Z / sum |Z|: 3 / 3 (no cost), -4 / 4 (cost 1), -2 / 8 (cost 0.25)
    signed = torch.tensor([[[1.0, 0.0, 2.0, 0.0]], [[-1.0, -2.0, -1.0, 0.0]], [[3.0, -1.0, -3.0, -1.0]]])
    signed = signed.view(3, 1, 4, 1).repeat(1, 2, 1, 1)
    assert float(evidence_floor(signed, torch.tensor([0, 1, 0]))) == pytest.approx((0 + 1 + 0.25) / 3)


def test_dead_maps_are_a_minimum_of_the_published_terms_with_no_way_out() -> None:
    torch.manual_seed(2)
    model = _Tiny(2).double()
    with torch.no_grad():  # every class weight negative: the Softplus features make every signed map negative
        model.fc.weight.copy_(-model.fc.weight.abs() - 0.05)
    x, target = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    assert (class_saliency(model, x)[0] == 0).all() and model(x).std(1).min() > 0  # the logits still differ
    penalty, _, parts = SIBnetLoss(**PUBLISHED)(model, x, target)
    assert float(parts["empty_maps"]) == 1.0
    assert float(penalty.detach()) == 0.0
    grads = torch.autograd.grad(penalty, list(model.parameters()), allow_unused=True)
    assert all(g is None or (g == 0).all() for g in grads)


@pytest.mark.parametrize("shift", [0.0, 0.1])
def test_descending_the_published_terms_kills_every_map_and_the_default_keeps_them(shift: float) -> None:
    """The guidance alone (no cross-entropy), 30 SGD steps from the same weights in float64: the published terms
    drive every Grad-CAM map to zero; the default formulation keeps the live ones and their energy grows."""
    ends = {}
    for name, arguments in (("published", PUBLISHED), ("default", {})):
        torch.manual_seed(0)
        model = _Tiny(2).double()
        with torch.no_grad():
            model.fc.weight.sub_(shift)  # maps already partly dead
        x, target = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
        start = map_health(class_saliency(model, x)[0])
        loss, optimiser = SIBnetLoss(**arguments), torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(30):
            penalty = loss(model, x, target)[0]
            optimiser.zero_grad()
            penalty.backward()
            optimiser.step()
        ends[name] = map_health(class_saliency(model, x)[0])
    assert 0 < float(start["empty_maps"]) < 1
    assert float(ends["published"]["empty_maps"]) == 1.0 and float(ends["published"]["map_energy"]) == 0.0
    assert float(ends["default"]["empty_maps"]) <= float(start["empty_maps"])
    assert float(ends["default"]["map_energy"]) > 1.5 * float(start["map_energy"])


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_scaled_maps_make_both_terms_blind_to_the_maps_size(scale: float) -> None:
    """Scaling the class weights scales every map: the published coherence follows it quadratically (shrinking the
    maps is a way down), the default terms do not move."""
    torch.manual_seed(3)
    model = _Tiny(2).double()
    x, target = torch.randn(4, 1, 10, 10, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    published, default = SIBnetLoss(**PUBLISHED), SIBnetLoss()
    before = {name: loss(model, x, target)[2] for name, loss in (("published", published), ("default", default))}
    with torch.no_grad():
        model.fc.weight.mul_(scale)
    after = {name: loss(model, x, target)[2] for name, loss in (("published", published), ("default", default))}
    torch.testing.assert_close(after["published"]["coherence"], scale**2 * before["published"]["coherence"])
    for term in ("distinctiveness", "coherence", "floor"):
        torch.testing.assert_close(after["default"][term], before["default"][term])


def test_dead_maps_warning() -> None:
    with pytest.warns(DeadMapsWarning, match="epoch 3: 60% of the Grad-CAM class maps were empty"):
        warn_if_maps_died(3, 0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_maps_died(3, 0.5)


def _all_images(run: Path, data: Path) -> tuple[nn.Module, torch.Tensor]:
    net, config = load(run)
    dataset = load_dataset(data, transform=preprocessing_transform(config["preprocessing"]))
    return net.eval(), collate([dataset[i] for i in range(len(dataset))]).image


def check_live_and_distinct(models: list[nn.Module], references: list[nn.Module], x: torch.Tensor) -> None:
    """Most Grad-CAM maps (every class, every image, every model) are non-empty, and the models' mean class
    distinctiveness is lower than the reference models' by a margin; raises ``AssertionError`` otherwise.

    Measured with the settings of the test below (fundus, width 4, 4 epochs): SIBnet / CE distinctiveness 0.75,
    0.69, 0.54, 0.59, 0.83, 0.84 for seeds 0-5 (mean of seeds 0-2: 0.66), empty SIBnet maps 0-19 %."""
    maps = [class_saliency(m, x)[0].detach() for m in models]
    empty = float(torch.stack([map_health(m)["empty_maps"] for m in maps]).mean())
    assert empty <= 0.5, f"{empty:.0%} of the Grad-CAM maps are empty"
    distinct = float(torch.stack([class_distinctiveness(m) for m in maps]).mean())
    reference = float(torch.stack([class_distinctiveness(class_saliency(m, x)[0].detach()) for m in references]).mean())
    assert distinct < 0.9 * reference, f"L_cd {distinct:.3f} vs the reference's {reference:.3f}"


def _dead(model: nn.Module, how: str) -> nn.Module:
    """A copy whose Grad-CAM maps are all zero: class weights zero (constant logits), or all negative on the
    non-negative features of the last block (the collapse seen on BUSI: the logits still rank the classes)."""
    dead = copy.deepcopy(model)
    with torch.no_grad():
        if how == "zero":
            dead.fc.weight.zero_()
        else:
            dead.fc.weight.copy_(-dead.fc.weight.abs() - 0.05)
    return dead


def test_ce_plus_sibnet_trains_end_to_end_with_live_and_distinct_maps(fundus: Path, tmp_path: Path) -> None:
    """Three seeds of CE and CE + SIBnet (default formulation); the check of live, distinct maps passes on the
    SIBnet models and fails on the same models with dead maps, and on CE models against themselves."""
    settings = {"model_args": {"width": 4, "small_input": True}, "epochs": 4, "batch_size": 16, "augment": False}
    nets: dict[str, list[nn.Module]] = {"ce": [], "ce+sibnet": []}
    for seed in range(3):
        for loss, models in nets.items():
            out = tmp_path / f"{loss}-{seed}"
            train(TrainConfig("resnet18", loss=loss, seed=seed, **settings), fundus, out, progress=False)
            net, x = _all_images(out, fundus)
            models.append(net)
        with (tmp_path / f"ce+sibnet-{seed}" / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 4
        logged = {"train_distinctiveness", "train_coherence", "train_floor", "train_empty_maps", "train_map_energy"}
        assert logged <= set(rows[0])
        assert all(float(r["train_empty_maps"]) <= 0.5 and float(r["train_map_energy"]) > 0 for r in rows)
    check_live_and_distinct(nets["ce+sibnet"], nets["ce"], x)
    for how in ("zero", "negative"):
        dead = [_dead(net, how) for net in nets["ce+sibnet"]]
        assert all((class_saliency(net, x)[0] == 0).all() for net in dead)
        # the lowest distinctiveness there is, and (negative weights) logits that still differ between classes
        assert all(float(class_distinctiveness(class_saliency(net, x)[0].detach())) == 0.0 for net in dead)
        if how == "negative":
            assert all(float(net(x).detach().std(1).min()) > 0 for net in dead)
        with pytest.raises(AssertionError, match="100% of the Grad-CAM maps are empty"):
            check_live_and_distinct(dead, nets["ce"], x)
    with pytest.raises(AssertionError, match="L_cd"):
        check_live_and_distinct(nets["ce"], nets["ce"], x)


def test_bad_input_raises_one_line_errors(fundus: Path, tmp_path: Path, capsys) -> None:
    objective = Objective.parse("ce+sibnet", sparsity_lambda=None, class_weights=None)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(MedexplainError, match="Sequential has no convolutional layer whose Grad-CAM it could train"):
        objective(mlp, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(MedexplainError, match="class distinctiveness needs 2"):
        objective(_Tiny(2, classes=1), torch.randn(2, 1, 8, 8), torch.tensor([0, 0]))
    with pytest.raises(MedexplainError, match="at least 2 classes"):
        class_distinctiveness(torch.rand(2, 1, 4, 4))
    with pytest.raises(MedexplainError, match="odd"):
        spatial_coherence(torch.rand(2, 2, 4, 4), window=4)
    with pytest.raises(MedexplainError, match="unknown SIBnet `cam` 'relu'; available: signed, gradcam"):
        SIBnetLoss(cam="relu")
    with pytest.raises(MedexplainError, match="unknown SIBnet `mass` 'max'"):
        SIBnetLoss(mass="max")
    with pytest.raises(MedexplainError, match="the evidence floor needs the true classes"):
        SIBnetLoss()(_Tiny(2), torch.randn(2, 1, 8, 8))
    with pytest.raises(MedexplainError, match=r"`sibnet` arguments .*unexpected keyword argument 'w_xy'"):
        Objective.parse("ce+sibnet", sparsity_lambda=None, class_weights=None, sibnet={"w_xy": 1.0})
    with pytest.raises(MedexplainError, match="`sibnet` arguments given but loss 'ce' has no SIBnet term"):
        Objective.parse("ce", sparsity_lambda=None, class_weights=None, sibnet={"w_cd": 1.0})
    with pytest.raises(MedexplainError, match="has no sparsity term"):
        Objective.parse("ce+sibnet", sparsity_lambda=0.1, class_weights=None)
    one_class = shutil.copytree(fundus, tmp_path / "one")
    with (fundus / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (one_class / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "split", "label"])
        writer.writeheader()
        writer.writerows({"image": r["image"], "split": r["split"], "label": 0} for r in rows)
    base = ["train", "--model", "resnet18", "--out", str(tmp_path / "r"), "--no-progress", "--epochs", "1"]
    assert main([*base, "--data", str(one_class), "--loss", "ce+sibnet"]) == 2
    assert "needs at least two classes" in capsys.readouterr().err
    assert main([*base, "--data", str(fundus), "--loss", "sibnet"]) == 2
    assert "unknown loss 'sibnet'; available:" in capsys.readouterr().err
