"""Synthetic generators: masks match what is drawn, grades follow the rule, fields are what they claim, seeds
reproduce bytes, and the folders read back through load_dataset."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score

from medexplain.data import load_dataset
from medexplain.data.synth import (
    CONCEPTS,
    GRADE_NAMES,
    LESION_TYPES,
    REFERABLE_NAMES,
    brain_sample,
    deformation,
    fundus,
    grade_from_counts,
    write_deformation,
    write_fundus,
)
from medexplain.data.synth._common import stratified_splits
from medexplain.errors import MedexplainError

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def small_fundus():
    return fundus(12, 64, seed=3)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=EIGHT_CONNECTED)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# ---------------------------------------------------------------- fundus: grade rule


@pytest.mark.parametrize(
    ("counts", "grade"),
    [
        ((0, 0, 0), 0),
        ((1, 0, 0), 1),
        ((9, 0, 0), 1),
        ((0, 1, 0), 2),
        ((0, 0, 1), 2),
        ((6, 3, 9), 2),
        ((0, 4, 0), 3),
        ((2, 8, 5), 3),
        ((0, 12, 0), 3),
        ((0, 8, 6), 4),
        ((10, 12, 12), 4),
    ],
)
def test_grade_rule_hand_cases(counts, grade) -> None:
    assert grade_from_counts(*counts) == grade


# ---------------------------------------------------------------- fundus: masks and drawing


def test_outside_the_masks_the_image_is_its_lesion_free_twin(small_fundus) -> None:
    anything = np.logical_or.reduce([small_fundus.masks[name] for name in CONCEPTS])
    assert anything.any()
    outside = ~anything[..., None].repeat(3, axis=-1)
    np.testing.assert_array_equal(small_fundus.images[outside], small_fundus.lesion_free[outside])
    # and inside, every mask really marks a change
    for name in CONCEPTS:
        changed = (small_fundus.images != small_fundus.lesion_free).any(axis=-1)
        assert changed[small_fundus.masks[name]].mean() > 0.8, name


def test_each_lesion_has_its_colour(small_fundus) -> None:
    difference = small_fundus.images.astype(float) - small_fundus.lesion_free.astype(float)  # (n, H, W, 3)
    seen = dict.fromkeys(CONCEPTS, 0)
    for i in range(len(small_fundus.images)):
        for name in CONCEPTS:
            pieces, count = _components(small_fundus.masks[name][i])
            for piece in range(1, count + 1):
                red, green, blue = difference[i][pieces == piece].mean(axis=0)
                if name in ("microaneurysm", "haemorrhage"):  # darker red: every channel drops, green most
                    assert red < -5 and green < 0 and blue <= 0, (name, i, red, green, blue)
                elif name == "exudate":  # brighter and yellower: all channels rise, green more than blue
                    assert red > 0 and green > 10 and green > blue, (name, i, red, green, blue)
                else:  # dust: greyer: red drops, blue rises
                    assert red < 0 and blue > 0, (name, i, red, green, blue)
                seen[name] += 1
    assert all(count > 0 for count in seen.values()), seen


def test_counts_presence_and_grade_agree_with_the_masks(small_fundus) -> None:
    for name in CONCEPTS:
        instances = np.array([_components(mask)[1] for mask in small_fundus.masks[name]])
        np.testing.assert_array_equal(instances, small_fundus.counts[name], err_msg=name)
        np.testing.assert_array_equal(small_fundus.presence[name], instances > 0, err_msg=name)
    measured = [
        grade_from_counts(*(_components(small_fundus.masks[t][i])[1] for t in LESION_TYPES))
        for i in range(len(small_fundus.grades))
    ]
    np.testing.assert_array_equal(small_fundus.grades, measured)
    union = small_fundus.masks["microaneurysm"] | small_fundus.masks["haemorrhage"] | small_fundus.masks["exudate"]
    np.testing.assert_array_equal(small_fundus.masks["lesion"], union)


def test_lesions_avoid_the_optic_disc_and_stay_in_the_field_of_view(small_fundus) -> None:
    size = small_fundus.images.shape[1]
    yy, xx = np.mgrid[0:size, 0:size]
    inside_fov = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2) < 0.47 * size
    for i in range(len(small_fundus.images)):
        lesions = small_fundus.masks["lesion"][i]
        assert inside_fov[lesions].all()
        # the disc is the brightest blob of the lesion-free image; no lesion touches it
        brightness = small_fundus.lesion_free[i].astype(float).sum(axis=-1)
        disc = brightness > np.percentile(brightness[inside_fov], 99.5)
        assert not (ndimage.binary_dilation(disc, iterations=1) & lesions).any(), i


def test_grade_classes_are_balanced_and_the_dust_distractor_is_independent() -> None:
    data = fundus(150, 48, seed=0)
    frequencies = np.bincount(data.grades, minlength=5) / len(data.grades)
    assert frequencies.min() > 0.08, frequencies
    presence = data.presence
    # the grade depends on the lesion types ...
    assert not presence["haemorrhage"][data.grades <= 1].any() and presence["haemorrhage"][data.grades >= 3].all()
    assert presence["exudate"][data.grades == 4].all() and not presence["exudate"][data.grades <= 1].any()
    assert not presence["microaneurysm"][data.grades == 0].any() and presence["microaneurysm"][data.grades == 1].all()
    # ... but not on dust: no association in a chi-square test, and dust in about half the images
    table = np.array([[np.sum((data.grades == g) & (presence["dust"] == d)) for d in (0, 1)] for g in range(5)])
    assert stats.chi2_contingency(table).pvalue > 0.05, table
    assert 0.35 < presence["dust"].mean() < 0.65


def test_image_i_does_not_depend_on_n(small_fundus) -> None:
    fewer = fundus(5, 64, seed=3)
    np.testing.assert_array_equal(fewer.images, small_fundus.images[:5])
    np.testing.assert_array_equal(fewer.masks["lesion"], small_fundus.masks["lesion"][:5])


# ---------------------------------------------------------------- fundus: files


def test_write_fundus_is_byte_reproducible_and_seeded(tmp_path: Path) -> None:
    first = _digests(write_fundus(tmp_path / "a", 6, 48, seed=5, show_progress=False))
    again = _digests(write_fundus(tmp_path / "b", 6, 48, seed=5, show_progress=False))
    other = _digests(write_fundus(tmp_path / "c", 6, 48, seed=6, show_progress=False))
    shorter = _digests(write_fundus(tmp_path / "d", 3, 48, seed=5, show_progress=False))
    assert first == again
    images = [name for name in first if name.startswith("images/")]
    assert len(images) == 6 and all(first[name] != other[name] for name in images)
    assert all(first[name] == digest for name, digest in shorter.items() if name != "manifest.csv")


def test_fundus_folder_round_trips_through_load_dataset(tmp_path: Path) -> None:
    memory = fundus(10, 48, seed=2)
    folder = write_fundus(tmp_path / "fundus", 10, 48, seed=2, show_progress=False)
    with (folder / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "image", "split", "label", "class_name", "grade",
        *(f"label_{c}" for c in CONCEPTS),
        "mask_lesion", *(f"mask_{c}" for c in CONCEPTS),
        *(f"count_{t}" for t in LESION_TYPES), "eye",
    ]  # fmt: skip
    assert [row["split"] for row in rows] == list(memory.splits)

    data = load_dataset(folder)
    assert len(data) == 10 and data.spatial_dims == 2 and data.in_channels == 3
    assert data.label_names == list(CONCEPTS)
    assert set(data.mask_names) == {"lesion", *CONCEPTS}
    for i in range(10):
        sample = data[i]
        np.testing.assert_array_equal(sample.image.numpy(), np.moveaxis(memory.images[i], -1, 0).astype(np.float32))
        assert sample.label == memory.grades[i]
        np.testing.assert_array_equal(sample.labels.numpy(), [memory.presence[c][i] for c in CONCEPTS])
        for name in ("lesion", *CONCEPTS):
            np.testing.assert_array_equal(sample.masks[name][0].numpy(), memory.masks[name][i])
        assert int(sample.meta["count_haemorrhage"]) == memory.counts["haemorrhage"][i]
        assert data.class_names[sample.label] == GRADE_NAMES[sample.label]


def test_referable_labelling_is_grade_at_least_2_on_the_same_images_and_splits(tmp_path: Path) -> None:
    graded = write_fundus(tmp_path / "graded", 12, 48, seed=4, show_progress=False)
    referable = write_fundus(tmp_path / "referable", 12, 48, seed=4, show_progress=False, label="referable")
    assert {k: v for k, v in _digests(graded).items() if k != "manifest.csv"} == {
        k: v for k, v in _digests(referable).items() if k != "manifest.csv"
    }
    by_grade, by_referable = load_dataset(graded), load_dataset(referable)
    assert by_referable.class_names == list(REFERABLE_NAMES)
    grades = [by_grade[i].label for i in range(12)]
    assert {0, 1} < set(grades) and max(grades) >= 2, "the seed must cover both sides of the threshold"
    for i in range(12):
        assert by_referable[i].label == int(grades[i] >= 2)
        assert by_referable[i].meta["grade"] == str(grades[i])
        assert by_referable[i].meta["split"] == by_grade[i].meta["split"]


def test_splits_are_stratified_70_15_15() -> None:
    labels = [0] * 100 + [1] * 40 + [2] * 7
    splits = np.array(stratified_splits(labels, "fundus", seed=0))
    for label, (n_val, n_test) in {0: (15, 15), 1: (6, 6), 2: (1, 1)}.items():
        members = splits[np.array(labels) == label]
        assert (np.sum(members == "val"), np.sum(members == "test")) == (n_val, n_test)
        assert np.sum(members == "train") == len(members) - n_val - n_test
    assert stratified_splits(labels, "fundus", seed=0) == tuple(splits)
    assert stratified_splits(labels, "fundus", seed=1) != tuple(splits)


# ---------------------------------------------------------------- deformation


def _diseased_and_healthy(spatial_dims: int, size: int):
    """The first class-1 and the first class-0 sample of seed 0."""
    found: dict[int, object] = {}
    index = 0
    while len(found) < 2:
        sample = brain_sample(index, spatial_dims, size, seed=0)
        found.setdefault(sample.label, sample)
        index += 1
    return found[1], found[0]


def _finite_difference_jacobian(displacement: np.ndarray) -> np.ndarray:
    """det(I + grad v) from central differences of a (d, *spatial) field."""
    d = displacement.shape[0]
    gradient = np.stack([np.stack(np.gradient(displacement[k]), axis=0) for k in range(d)], axis=0)  # (d, d, ...)
    matrix = np.moveaxis(gradient, (0, 1), (-2, -1)) + np.eye(d)
    return np.linalg.det(matrix)


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, 64), (3, 40)])
def test_atrophy_field_shrinks_inside_the_mask_only(spatial_dims: int, size: int) -> None:
    diseased, _ = _diseased_and_healthy(spatial_dims, size)
    determinant = _finite_difference_jacobian(diseased.displacement.astype(np.float64))
    grid = np.indices(diseased.mask.shape)
    distance = np.sqrt(((grid - diseased.centre.reshape((-1,) + (1,) * spatial_dims)) ** 2).sum(axis=0))
    assert diseased.mask.sum() > 10
    np.testing.assert_array_equal(diseased.mask, distance <= diseased.sigma)
    assert determinant[diseased.mask].max() < 1.0
    assert determinant[diseased.mask].min() < 0.75  # clearly shrunk at the centre
    far = distance > 5 * diseased.sigma
    assert np.abs(determinant[far] - 1.0).max() < 1e-3
    np.testing.assert_allclose(diseased.jacobian, determinant, atol=0.08)  # analytic vs finite differences
    assert roc_auc_score(diseased.mask.ravel(), -np.log(diseased.jacobian.ravel())) > 0.95


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, 64), (3, 40)])
def test_inverse_field_undoes_the_forward_field(spatial_dims: int, size: int) -> None:
    diseased, _ = _diseased_and_healthy(spatial_dims, size)
    grid = np.indices(diseased.mask.shape).astype(np.float64)
    source = grid + diseased.inverse_displacement  # psi^-1(x)
    forward_at_source = np.stack(
        [ndimage.map_coordinates(component, source, order=1, mode="nearest") for component in diseased.displacement]
    )
    residual = source + forward_at_source - grid  # psi(psi^-1(x)) - x
    assert np.abs(residual).max() < 0.05
    assert np.abs(diseased.inverse_displacement).max() > 0.5  # the warp moves tissue by voxels, not noise


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, 64), (3, 40)])
def test_only_the_atrophy_region_changes_and_the_structure_shrinks(spatial_dims: int, size: int) -> None:
    diseased, healthy = _diseased_and_healthy(spatial_dims, size)
    np.testing.assert_array_equal(healthy.image, healthy.template)
    assert not healthy.displacement.any() and not healthy.inverse_displacement.any()
    np.testing.assert_array_equal(healthy.jacobian, 1.0)
    assert healthy.strength == 0.0 and healthy.mask.sum() > 10  # where the atrophy would be

    grid = np.indices(diseased.mask.shape)
    distance = np.sqrt(((grid - diseased.centre.reshape((-1,) + (1,) * spatial_dims)) ** 2).sum(axis=0))
    change = np.abs(diseased.image.astype(int) - diseased.template.astype(int))
    assert change[distance > 4 * diseased.sigma].max() <= 1  # rounding only: |v| < 0.01 voxel there
    assert change[diseased.mask].mean() > 5
    # the grey structure shrinks towards the centre and the brighter white matter around it moves in
    brightening = diseased.image[diseased.mask].mean() - diseased.template[diseased.mask].mean()
    assert brightening > 10, brightening


def test_deformation_classes_and_location_are_consistent() -> None:
    data = deformation(12, 2, 48, seed=1)
    assert 0 < data.labels.sum() < 12
    assert np.all(data.strengths[data.labels == 0] == 0) and np.all(data.strengths[data.labels == 1] >= 0.35)
    # the same anatomical region for every sample: the left lower structure, small jitter
    assert np.ptp(data.centres, axis=0).max() < 0.15 * 48
    assert np.all(data.centres[:, 1] < 24)  # left half (x)
    np.testing.assert_array_equal(data.images[data.labels == 0], data.templates[data.labels == 0])


@pytest.mark.parametrize(("spatial_dims", "size", "suffix"), [(2, 32, ".png"), (3, 24, ".nii.gz")])
def test_write_deformation_reproducible_and_round_trips(tmp_path: Path, spatial_dims, size, suffix) -> None:
    folder = write_deformation(tmp_path / "a", 6, spatial_dims, size, seed=4, show_progress=False)
    again = write_deformation(tmp_path / "b", 6, spatial_dims, size, seed=4, show_progress=False)
    other = write_deformation(tmp_path / "c", 6, spatial_dims, size, seed=5, show_progress=False)
    shorter = write_deformation(tmp_path / "d", 2, spatial_dims, size, seed=4, show_progress=False)
    assert _digests(folder) == _digests(again)
    assert _digests(folder)[f"images/brain_00000{suffix}"] != _digests(other)[f"images/brain_00000{suffix}"]
    assert all(_digests(folder)[name] == digest for name, digest in _digests(shorter).items() if "manifest" not in name)

    memory = deformation(6, spatial_dims, size, seed=4)
    data = load_dataset(folder)
    assert data.spatial_dims == spatial_dims and data.in_channels == 1 and data.mask_names == ["atrophy"]
    assert data.class_names == ["healthy", "atrophy"]
    for i in range(6):
        sample = data[i]
        np.testing.assert_array_equal(sample.image[0].numpy(), memory.images[i].astype(np.float32))
        np.testing.assert_array_equal(sample.masks["atrophy"][0].numpy(), memory.masks[i])
        assert sample.label == memory.labels[i]
        assert float(sample.meta["atrophy_strength"]) == pytest.approx(memory.strengths[i], abs=1e-4)
        jacobian = np.load(folder / sample.meta["jacobian"], allow_pickle=False)
        np.testing.assert_array_equal(jacobian, memory.jacobians[i])
    if spatial_dims == 2:
        np.testing.assert_array_equal(np.asarray(Image.open(folder / "images/brain_00000.png")), memory.images[0])


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda out: write_fundus(out, 0, 64, 0), "n=0"),
        (lambda out: write_fundus(out, 3, 16, 0), "size=16"),
        (lambda out: write_fundus(out, 3, 64, -1), "seed=-1"),
        (lambda out: write_fundus(out, 2.5, 64, 0), "n=2.5"),
        (lambda out: write_fundus(out, 3, 64, 0, label="grades"), "'grades' is not one of: grade, referable"),
        (lambda out: write_deformation(out, 3, 4, 32, 0), "spatial_dims=4"),
        (lambda out: write_deformation(out, 3, 3, 1000, 0), "size=1000"),
        (lambda out: write_deformation(out, 3, 2, 10, 0), "size=10"),
    ],
)
def test_bad_requests_fail_with_one_line_and_write_nothing(tmp_path: Path, call, message: str) -> None:
    with pytest.raises(MedexplainError, match=message) as error:
        call(tmp_path / "out")
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []
