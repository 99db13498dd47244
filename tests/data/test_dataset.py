"""load_dataset on folders and .npz archives the tests write: values, labels, masks, ids, validation errors."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medexplain.data import Batch, ImageDataset, Sample, collate, load_dataset
from medexplain.data.transforms import Resize
from medexplain.errors import MedexplainError

RNG = np.random.default_rng(0)


def write_manifest(folder: Path, rows: list[dict[str, object]], header: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = header or list(rows[0])
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def png_folder(folder: Path, n: int = 4, size: tuple[int, int] = (6, 8)) -> list[np.ndarray]:
    """``n`` grey PNGs with square lesion masks, labels ``i % 3``, two 0/1 findings, a free 'site' column."""
    (folder / "img").mkdir(parents=True)
    (folder / "msk").mkdir()
    images, rows = [], []
    for i in range(n):
        pixels = RNG.integers(0, 256, size=size, dtype=np.uint8)
        mask = np.zeros(size, dtype=np.uint8)
        mask[i : i + 2, i : i + 3] = 255
        Image.fromarray(pixels).save(folder / "img" / f"case{i}.png")
        Image.fromarray(mask).save(folder / "msk" / f"case{i}.png")
        images.append(pixels)
        rows.append(
            {
                "image": f"img/case{i}.png",
                "split": "train" if i < n - 1 else "test",
                "label": i % 3,
                "label_a": i % 2,
                "label_b": 1 - i % 2,
                "mask_lesion": f"msk/case{i}.png" if i else "",
                "site": f"s{i}",
            }
        )
    write_manifest(folder, rows)
    return images


def test_manifest_folder_items(tmp_path: Path) -> None:
    images = png_folder(tmp_path / "d")
    data = load_dataset(tmp_path / "d")
    assert isinstance(data, ImageDataset) and len(data) == 4
    assert data.num_classes == 3 and data.class_names == ["0", "1", "2"]
    assert data.label_names == ["a", "b"] and data.mask_names == ["lesion"]
    assert data.spatial_dims == 2 and data.in_channels == 1
    assert torch.equal(data.labels, torch.tensor([0, 1, 2, 0]))
    for i in range(4):
        sample = data[i]
        assert torch.equal(sample.image[0], torch.from_numpy(images[i].astype(np.float32)))
        assert sample.label == i % 3
        assert torch.equal(sample.labels, torch.tensor([i % 2, 1 - i % 2], dtype=torch.float32))
        expected = torch.zeros(1, 6, 8)
        if i:  # row 0 has an empty mask cell: an all-zero mask of the image's shape
            expected[0, i : i + 2, i : i + 3] = 1
        assert torch.equal(sample.masks["lesion"], expected)
        assert sample.meta["id"] == f"case{i}" and sample.meta["site"] == f"s{i}"
        assert Path(sample.meta["path"]) == (tmp_path / "d" / "img" / f"case{i}.png").resolve()
    assert data[-1].meta["id"] == "case3"
    with pytest.raises(IndexError):
        data[4]


def test_split_filter_and_manifest_file_as_source(tmp_path: Path) -> None:
    png_folder(tmp_path / "d")
    test = load_dataset(tmp_path / "d" / "manifest.csv", split="test")
    assert len(test) == 1 and test[0].meta["id"] == "case3" and test.split == "test"
    assert test.num_classes == 3  # counted over all splits
    message = _error(lambda: load_dataset(tmp_path / "d", split="validation"))
    assert "validation" in message and "train" in message and "test" in message


def test_class_names_from_column_and_no_label_column(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"{name}.png")
    rows = [
        {"image": "a.png", "label": 2, "class_name": "malignant"},
        {"image": "b.png", "label": 0, "class_name": "normal"},
    ]
    write_manifest(folder, rows)
    data = load_dataset(folder)
    assert data.class_names == ["normal", "1", "malignant"] and data.num_classes == 3
    write_manifest(folder, [{"image": "a.png"}, {"image": "c.png"}])
    unlabelled = load_dataset(folder)
    assert unlabelled.num_classes == 0 and torch.equal(unlabelled.labels, torch.tensor([-1, -1]))
    assert unlabelled[1].label == -1 and unlabelled[1].labels is None


def _error(call) -> str:
    with pytest.raises(MedexplainError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def _one_image_folder(folder: Path, **row: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(folder / "a.png")
    write_manifest(folder, [{"image": "a.png", "split": "train", "label": 0, **row}])
    return folder


@pytest.mark.parametrize(
    "row, words",
    [
        ({"image": "b.png"}, ["b.png", "does not exist"]),
        ({"image": "../outside.png"}, ["../outside.png", "outside the dataset folder"]),
        ({"image": "/etc/passwd"}, ["/etc/passwd", "absolute"]),
        ({"label": "1.5"}, ["line 2", "label", "'1.5'", "not an integer"]),
        ({"label": "-1"}, ["line 2", "negative"]),
        ({"label": ""}, ["line 2", "not an integer"]),
        ({"label_x": "2"}, ["line 2", "label_x", "not 0 or 1"]),
        ({"mask_x": "missing.png"}, ["missing.png", "does not exist"]),
        ({"mask_x": "../../m.png"}, ["mask_x", "outside the dataset folder"]),
        ({"split": ""}, ["line 2", "empty 'split'"]),
    ],
)
def test_bad_manifest_rows_are_named(tmp_path: Path, row: dict[str, object], words: list[str]) -> None:
    folder = _one_image_folder(tmp_path / "d", **row)
    (tmp_path / "outside.png").write_bytes((folder / "a.png").read_bytes())  # exists, but outside the folder
    message = _error(lambda: load_dataset(folder))
    assert str(folder / "manifest.csv") in message or str(folder.resolve()) in message, message
    for word in words:
        assert word in message, message


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _one_image_folder(tmp_path / "d")
    (tmp_path / "secret.png").write_bytes((folder / "a.png").read_bytes())
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    write_manifest(folder, [{"image": "link.png", "label": 0}])
    assert "outside the dataset folder" in _error(lambda: load_dataset(folder))


def test_missing_columns_and_empty_manifests_are_named(tmp_path: Path) -> None:
    folder = _one_image_folder(tmp_path / "d")
    write_manifest(folder, [{"file": "a.png", "label": 0}])
    message = _error(lambda: load_dataset(folder))
    assert "'image'" in message and str(folder / "manifest.csv") in message
    write_manifest(folder, [{"image": "a.png", "label": 0}])
    message = _error(lambda: load_dataset(folder, split="train"))
    assert "'split' column" in message and str(folder / "manifest.csv") in message
    write_manifest(folder, [], header=["image", "label"])
    assert "no rows" in _error(lambda: load_dataset(folder))
    (folder / "manifest.csv").write_text("image,label\na.png,0,extra\n")
    assert "line 2" in _error(lambda: load_dataset(folder))
    assert "no manifest.csv" in _error(lambda: load_dataset(tmp_path))
    assert "not found" in _error(lambda: load_dataset(tmp_path / "nothing"))


def test_duplicate_ids_and_inconsistent_class_names(tmp_path: Path) -> None:
    folder = _one_image_folder(tmp_path / "d")
    (folder / "sub").mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(folder / "sub" / "a.png")
    write_manifest(folder, [{"image": "a.png"}, {"image": "sub/a.png"}])
    assert "id 'a' already used on line 2" in _error(lambda: load_dataset(folder))
    write_manifest(folder, [{"image": "a.png", "id": "x1"}, {"image": "sub/a.png", "id": "x2"}])
    assert [s.meta["id"] for s in load_dataset(folder)] == ["x1", "x2"]
    write_manifest(
        folder,
        [
            {"image": "a.png", "id": "1", "label": 1, "class_name": "tb"},
            {"image": "sub/a.png", "id": "2", "label": 1, "class_name": "normal"},
        ],
    )
    assert "class_name 'normal' for label 1" in _error(lambda: load_dataset(folder))


def test_mask_shape_mismatch_names_both_files_at_item_time(tmp_path: Path) -> None:
    folder = _one_image_folder(tmp_path / "d", mask_x="m.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(folder / "m.png")  # transposed size
    data = load_dataset(folder)
    message = _error(lambda: data[0])
    assert "m.png" in message and "a.png" in message and "(5, 4)" in message and "(4, 5)" in message


def test_nan_pixels_are_an_error_at_item_time(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "a.npy", np.full((4, 4), np.nan, dtype=np.float32))
    write_manifest(folder, [{"image": "a.npy", "label": 0}])
    data = load_dataset(folder)
    assert "NaN" in _error(lambda: data[0])


def test_3d_manifest_with_nifti_and_npy(tmp_path: Path) -> None:
    folder = tmp_path / "vol"
    folder.mkdir()
    volume = RNG.normal(size=(6, 7, 8)).astype(np.float32)
    mask = np.zeros((6, 7, 8), dtype=np.uint8)
    mask[1:3, 2:5, 3:4] = 1
    nib.save(nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 1.0, 1.0])), folder / "v.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.diag([-1.0, 1.0, 1.0, 1.0])), folder / "v_mask.nii.gz")
    np.save(folder / "w.npy", volume)
    np.save(folder / "w_mask.npy", mask)
    write_manifest(
        folder,
        [
            {"image": "v.nii.gz", "label": 1, "mask_atrophy": "v_mask.nii.gz"},
            {"image": "w.npy", "label": 0, "mask_atrophy": "w_mask.npy"},
        ],
    )
    data = load_dataset(folder)
    assert data.spatial_dims == 3 and data.in_channels == 1
    nifti, npy = data[0], data[1]
    assert nifti.meta["id"] == "v" and npy.meta["id"] == "w"
    assert torch.equal(nifti.image[0], torch.from_numpy(volume[::-1].copy()))  # flipped to RAS with its mask
    assert torch.equal(nifti.masks["atrophy"][0], torch.from_numpy(mask[::-1].astype(np.float32).copy()))
    assert torch.equal(npy.image[0], torch.from_numpy(volume))
    assert torch.equal(npy.masks["atrophy"][0], torch.from_numpy(mask.astype(np.float32)))


def write_medmnist(path: Path, image_shape: tuple[int, ...], sizes=(5, 2, 3), label_width: int = 1) -> dict:
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"] = RNG.integers(0, 256, size=(n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = RNG.integers(0, 2 if label_width > 1 else 4, size=(n, label_width), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.mark.parametrize(
    "image_shape, expected_shape",
    [((7, 9), (1, 7, 9)), ((7, 9, 3), (3, 7, 9)), ((4, 5, 6), (1, 4, 5, 6))],
)
def test_medmnist_layouts_values_and_ids(tmp_path: Path, image_shape, expected_shape) -> None:
    arrays = write_medmnist(tmp_path / "m.npz", image_shape)
    test = load_dataset(tmp_path / "m.npz", split="test")
    assert len(test) == 3 and test.spatial_dims == len(expected_shape) - 1
    assert torch.equal(test.labels, torch.from_numpy(arrays["test_labels"][:, 0].astype(np.int64)))
    sample = test[2]
    assert sample.image.shape == expected_shape and sample.meta["id"] == "test_000002"
    raw = torch.from_numpy(arrays["test_images"][2].astype(np.float32))
    expected = raw.permute(2, 0, 1) if len(image_shape) == 3 and image_shape[-1] == 3 else raw[None]
    assert torch.equal(sample.image, expected / 255.0)
    everything = load_dataset(tmp_path / "m.npz")
    assert len(everything) == 10 and everything[5].meta["id"] == "val_000000"
    assert everything.num_classes == int(max(arrays[f"{s}_labels"].max() for s in ("train", "val", "test"))) + 1


def test_medmnist_multilabel_and_bad_archives(tmp_path: Path) -> None:
    arrays = write_medmnist(tmp_path / "chest.npz", (6, 6), label_width=4)
    data = load_dataset(tmp_path / "chest.npz", split="val")
    assert data.label_names == ["0", "1", "2", "3"] and data.num_classes == 0
    assert torch.equal(data[1].labels, torch.from_numpy(arrays["val_labels"][1].astype(np.float32)))
    assert data[1].label == -1
    assert "'dev'" in _error(lambda: load_dataset(tmp_path / "chest.npz", split="dev"))
    np.savez(tmp_path / "partial.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    message = _error(lambda: load_dataset(tmp_path / "partial.npz", split="train"))
    assert "train_labels" in message and "partial.npz" in message
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04garbage")
    assert "broken.npz" in _error(lambda: load_dataset(tmp_path / "broken.npz"))


def test_medmnist_absurd_image_header_is_refused_without_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (2, 70000, 9)})
        archive.writestr("train_images.npy", header.getvalue())  # a header and no pixel data at all
        for split in ("train", "val", "test"):
            labels = io.BytesIO()
            np.save(labels, np.zeros((2, 1), np.uint8))
            archive.writestr(f"{split}_labels.npy", labels.getvalue())
    message = _error(lambda: load_dataset(path, split="train"))
    assert "70000x9" in message and "refusing" in message and str(path) in message


def test_npy_manifest_with_2d_channels_first_arrays(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    image = RNG.normal(size=(2, 5, 6)).astype(np.float32)
    np.save(folder / "a.npy", image)
    Image.fromarray(np.full((5, 6), 255, np.uint8)).save(folder / "m.png")
    write_manifest(folder, [{"image": "a.npy", "label": 0, "mask_roi": "m.png"}])
    assert "spatial shape" in _error(lambda: load_dataset(folder)[0])  # read as a (1, 2, 5, 6) volume by default
    data = load_dataset(folder, spatial_dims=2)
    assert data.spatial_dims == 2 and data.in_channels == 2
    assert torch.equal(data[0].image, torch.from_numpy(image)) and data[0].masks["roi"].sum() == 30


def test_collate_and_dataloader(tmp_path: Path) -> None:
    png_folder(tmp_path / "d")
    data = load_dataset(tmp_path / "d")
    batch = next(iter(DataLoader(data, batch_size=3, collate_fn=collate)))
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.image.shape == (3, 1, 6, 8) and batch.masks["lesion"].shape == (3, 1, 6, 8)
    assert torch.equal(batch.image[1], data[1].image) and torch.equal(batch.label, torch.tensor([0, 1, 2]))
    assert torch.equal(batch.labels, torch.stack([data[i].labels for i in range(3)]))
    assert [m["id"] for m in batch.meta] == ["case0", "case1", "case2"]


def test_collate_refuses_mixed_sizes_and_suggests_resize() -> None:
    small = Sample(image=torch.zeros(1, 4, 4), meta={"id": "small"})
    large = Sample(image=torch.zeros(1, 5, 4), meta={"id": "large"})
    message = _error(lambda: collate([small, large]))
    assert "'small'" in message and "'large'" in message and "Resize" in message
    resized = [Resize(8)(small), Resize(8)(large)]
    assert collate(resized).image.shape == (2, 1, 8, 8)
    with pytest.raises(MedexplainError):
        collate([small, Sample(image=torch.zeros(1, 4, 4), masks={"x": torch.zeros(1, 4, 4)})])
    with pytest.raises(MedexplainError):
        collate([])
