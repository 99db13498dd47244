"""Round trip over every real dataset in ../shared/data: what load_dataset returns equals an independent read
of the manifest (csv module), the image files (Pillow) and the MedMNIST archives (np.load)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medexplain.data import load_dataset

pytestmark = pytest.mark.shared_data

FOLDERS = ["busi", "cxr_lung_tb", "idrid_seg20", "nih_cxr1000"]
SAMPLED_ROWS = 20  # per dataset, spread evenly over the manifest (idrid_seg20 has exactly 20: all of them)

MEDMNIST = {  # file: (split sizes from the README table, image shape (C, *spatial))
    "retinamnist.npz": ({"train": 1080, "val": 120, "test": 400}, (3, 28, 28)),
    "pneumoniamnist.npz": ({"train": 4690, "val": 524, "test": 624}, (1, 28, 28)),
    "breastmnist.npz": ({"train": 546, "val": 78, "test": 156}, (1, 28, 28)),
    "adrenalmnist3d_64.npz": ({"train": 1188, "val": 98, "test": 298}, (1, 64, 64, 64)),
}


def manifest_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def pillow_pixels(path: Path) -> torch.Tensor:
    """``(C, H, W)`` float32 straight from Pillow, the independent decode."""
    array = np.asarray(Image.open(path)).astype(np.float32)
    return torch.from_numpy(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0).copy())


@pytest.mark.parametrize("name", FOLDERS)
def test_every_split_loads_with_the_manifest_labels(shared_data: Path, name: str) -> None:
    folder = shared_data / name
    rows = manifest_rows(folder)
    for split in sorted({row["split"] for row in rows}):
        expected = [row for row in rows if row["split"] == split]
        data = load_dataset(folder, split=split)
        assert len(data) == len(expected)
        assert data.labels.tolist() == [int(row["label"]) for row in expected]
        assert [item.meta["id"] for item in (data[0], data[len(data) - 1])] == [
            Path(expected[i]["image"]).stem for i in (0, -1)
        ]
    assert load_dataset(folder).num_classes == max(int(row["label"]) for row in rows) + 1


@pytest.mark.parametrize("name", FOLDERS)
def test_sampled_images_and_masks_equal_an_independent_decode(shared_data: Path, name: str) -> None:
    folder = shared_data / name
    rows = manifest_rows(folder)
    data = load_dataset(folder)
    mask_columns = [column for column in rows[0] if column.startswith("mask_")]
    assert data.mask_names == [column[len("mask_") :] for column in mask_columns]
    for index in np.linspace(0, len(rows) - 1, min(SAMPLED_ROWS, len(rows))).round().astype(int):
        row, sample = rows[index], data[int(index)]
        assert sample.label == int(row["label"])
        assert torch.equal(sample.image, pillow_pixels(folder / row["image"]))
        for column in mask_columns:
            mask = sample.masks[column[len("mask_") :]]
            assert mask.shape == (1, *sample.image.shape[1:])
            assert torch.equal(mask, (pillow_pixels(folder / row[column]) > 0).any(dim=0, keepdim=True).float())
            area_column = f"area_{column[len('mask_') :]}" if name == "idrid_seg20" else "lesion_area"
            if area_column in row:  # the manifest's area is the mask's foreground fraction, rounded to 6 decimals
                assert abs(mask.mean().item() - float(row[area_column])) < 1e-6


def test_nih_multilabel_columns_equal_the_manifest(shared_data: Path) -> None:
    folder = shared_data / "nih_cxr1000"
    rows = manifest_rows(folder)
    findings = [column for column in rows[0] if column.startswith("label_")]
    data = load_dataset(folder)
    assert data.label_names == [column[len("label_") :] for column in findings] and len(findings) == 14
    expected = torch.tensor([[float(row[c]) for c in findings] for row in rows])
    assert torch.equal(torch.stack([data[i].labels for i in range(len(data))]), expected)


def test_busi_normal_images_have_empty_lesion_masks(shared_data: Path) -> None:
    data = load_dataset(shared_data / "busi")
    assert data.class_names == ["normal", "benign", "malignant"]
    normal = [i for i in range(len(data)) if data.labels[i] == 0]
    assert len(normal) > 100
    for i in normal:
        sample = data[i]
        assert sample.meta["class_name"] == "normal" and sample.masks["lesion"].sum() == 0
    lesions = [i for i in range(len(data)) if data.labels[i] > 0][::40]
    assert all(data[i].masks["lesion"].sum() > 0 for i in lesions)


@pytest.mark.parametrize("file_name", sorted(MEDMNIST))
def test_medmnist_archives(shared_data: Path, file_name: str) -> None:
    path = shared_data / "medmnist" / file_name
    sizes, shape = MEDMNIST[file_name]
    with np.load(path) as archive:
        reference = {key: archive[key] for key in (*(f"{s}_labels" for s in sizes), "test_images")}
    for split, size in sizes.items():
        data = load_dataset(path, split=split)
        assert len(data) == size
        assert torch.equal(data.labels, torch.from_numpy(reference[f"{split}_labels"][:, 0].astype(np.int64)))
    test = load_dataset(path, split="test")
    assert test.spatial_dims == len(shape) - 1 and test.in_channels == shape[0]
    for index in (0, 123, len(test) - 1):
        sample = test[index]
        assert sample.image.shape == shape and sample.meta["id"] == f"test_{index:06d}"
        raw = reference["test_images"][index].astype(np.float32) / 255.0
        expected = np.moveaxis(raw, -1, 0) if raw.shape[-1] == 3 else raw[None]
        assert torch.equal(sample.image, torch.from_numpy(expected.copy()))
        assert sample.label == int(reference["test_labels"][index, 0])
