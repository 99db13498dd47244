"""Datasets of :class:`~medexplain.data.sample.Sample` from a manifest folder or a MedMNIST ``.npz``."""

from __future__ import annotations

import operator
import os
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from medexplain.data import medmnist
from medexplain.data.manifest import MANIFEST_NAME, ManifestRow, check_files, read_manifest, select_split
from medexplain.data.readers import read_image
from medexplain.data.sample import Sample
from medexplain.data.transforms import Transform
from medexplain.errors import MedexplainError


class ImageDataset(Dataset[Sample], ABC):
    """Images with class labels, multi-label targets, masks and metadata; 2-D and 3-D alike.

    Attributes:
        source: the dataset folder or ``.npz`` file.
        split: the split this dataset holds, or ``None`` for all rows.
        class_names: names of the ``label`` classes (``class_name`` column, else ``"0"``, ``"1"``, ...).
        num_classes: ``max(label) + 1`` over all splits (0 when there are no class labels).
        label_names: multi-label target names (``label_<name>`` columns), ``[]`` if none.
        mask_names: mask names (``mask_<name>`` columns), ``[]`` if none.
        transform: applied to every sample on access, or ``None``.
        label_problems: ``{name: problem}`` for multi-label columns read as all-NaN (``partial_labels``).
    """

    label_problems: dict[str, str] = {}  # noqa: RUF012  (never mutated; set per instance by readers)

    def __init__(
        self,
        source: Path,
        split: str | None,
        labels: Tensor,
        *,
        class_names: list[str],
        label_names: list[str],
        mask_names: list[str],
        transform: Transform | None,
    ) -> None:
        self.source = source
        self.split = split
        self._labels = labels
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.label_names = label_names
        self.mask_names = mask_names
        self.transform = transform

    @property
    def labels(self) -> Tensor:
        """``(N,)`` long class labels of this split (``-1`` where there are none), without decoding images."""
        return self._labels.clone()

    @property
    def spatial_dims(self) -> int:
        """2 or 3, from the first image (after the transform)."""
        return len(self._first_image_shape) - 1

    @property
    def in_channels(self) -> int:
        """Channels of the first image (after the transform)."""
        return self._first_image_shape[0]

    @cached_property
    def _first_image_shape(self) -> tuple[int, ...]:
        return tuple(self[0].image.shape)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> Sample:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        sample = self._load(index % len(self))
        return self.transform(sample) if self.transform is not None else sample

    @abstractmethod
    def _load(self, index: int) -> Sample:
        """The untransformed sample at ``0 <= index < len(self)``."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.source)!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}, labels={len(self.label_names)}, masks={self.mask_names})"
        )


class ManifestDataset(ImageDataset):
    """A folder with ``manifest.csv`` (see :mod:`medexplain.data.manifest`): files decoded on access.

    Masks are binarised (any channel > 0) to ``(1, *spatial)`` float32; an empty mask cell gives an all-zero
    mask of the image's shape. A mask whose spatial shape differs from its image is an error naming both files.
    """

    def __init__(
        self,
        folder: Path,
        split: str | None = None,
        transform: Transform | None = None,
        *,
        spatial_dims: int | None = None,
        partial_labels: bool = False,
    ) -> None:
        manifest = read_manifest(folder, partial_labels=partial_labels)
        rows = select_split(manifest, split)
        check_files(manifest, rows)
        super().__init__(
            folder,
            split,
            torch.tensor([row.label for row in rows], dtype=torch.long),
            class_names=manifest.class_names,
            label_names=manifest.label_names,
            mask_names=manifest.mask_names,
            transform=transform,
        )
        self.rows: list[ManifestRow] = rows
        self.label_problems = manifest.label_problems
        self._spatial_dims_hint = spatial_dims

    def _load(self, index: int) -> Sample:
        row = self.rows[index]
        image = read_image(row.image, spatial_dims=self._spatial_dims_hint)
        masks = {name: self._mask(row, name, image) for name in self.mask_names}
        labels = None if row.labels is None else torch.tensor(row.labels, dtype=torch.float32)
        return Sample(image=image, label=row.label, labels=labels, masks=masks, meta=dict(row.meta))

    def _mask(self, row: ManifestRow, name: str, image: Tensor) -> Tensor:
        path = row.masks[name]
        if path is None:
            return torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
        mask = read_image(path, spatial_dims=self._spatial_dims_hint)
        if mask.shape[1:] != image.shape[1:]:
            raise MedexplainError(
                f"{path}: mask {name!r} has spatial shape {tuple(mask.shape[1:])} but its image {row.image} "
                f"has {tuple(image.shape[1:])}"
            )
        return (mask > 0).any(dim=0, keepdim=True).to(torch.float32)


class MedMNISTDataset(ImageDataset):
    """A MedMNIST ``.npz`` (see :mod:`medexplain.data.medmnist`): uint8 -> float32 in [0, 1] (divided by 255).

    Labels and array headers are validated at load time; a split's images are decompressed on first access.
    ``split=None`` holds train, val and test in that order. Ids are ``<split>_<index in split>``, e.g.
    ``test_000123``. Multi-label archives (labels ``(N, K)``, K > 1) give ``Sample.labels`` and ``label = -1``.
    """

    def __init__(self, file: Path, split: str | None = None, transform: Transform | None = None) -> None:
        all_labels = medmnist.read_labels(file)
        parts = [medmnist.open_split(file, name) for name in ([split] if split else medmnist.SPLITS)]
        widths = {labels.shape[1] for labels in all_labels.values()}
        if len(widths) != 1:
            raise MedexplainError(f"{file}: label arrays differ in width across splits: {sorted(widths)}")
        multi_label = widths.pop() > 1
        stacked = np.concatenate([part.labels for part in parts])
        num_classes = 0 if multi_label else int(max(labels.max(initial=-1) for labels in all_labels.values())) + 1
        super().__init__(
            file,
            split,
            torch.full((len(stacked),), -1) if multi_label else torch.from_numpy(stacked[:, 0].copy()),
            class_names=[str(k) for k in range(num_classes)],
            label_names=[str(k) for k in range(stacked.shape[1])] if multi_label else [],
            mask_names=[],
            transform=transform,
        )
        self._parts = {part.name: part for part in parts}
        self._images: dict[str, np.ndarray] = {}  # split -> uint8 images, decompressed on first access
        self._multi_labels = torch.from_numpy(stacked.astype(np.float32)) if multi_label else None
        self._ids = [(part.name, i) for part in parts for i in range(len(part.labels))]

    def _load(self, index: int) -> Sample:
        split, position = self._ids[index]
        if split not in self._images:
            self._images[split] = self._parts[split].images()
        pixels = medmnist.to_channels_first(self._images[split][position])
        return Sample(
            image=torch.from_numpy(pixels.astype(np.float32) / 255.0),
            label=int(self._labels[index]),
            labels=None if self._multi_labels is None else self._multi_labels[index],
            meta={"id": f"{split}_{position:06d}", "path": str(self.source), "split": split},
        )


def load_dataset(
    source: str | os.PathLike[str],
    split: str | None = None,
    transform: Transform | None = None,
    *,
    spatial_dims: int | None = None,
    partial_labels: bool = False,
) -> ImageDataset:
    """Open a dataset: a folder with ``manifest.csv`` (or that file itself), or a MedMNIST ``.npz``.

    Validation happens here, without decoding any image: required columns, labels, ids, paths that stay inside
    the folder, files that exist, the split name. Problems raise a one-line :class:`MedexplainError`.

    Args:
        split: keep only this split (e.g. ``"train"``); ``None`` keeps every row.
        transform: a ``Sample -> Sample`` callable applied on access (see :mod:`medexplain.data.transforms`).
        spatial_dims: for ``.npy`` files in a manifest, how 3-axis arrays are read (see ``read_image``).
        partial_labels: ``label_<name>`` cells may be empty (NaN, not annotated), and a column with other values
            is read as all-NaN and explained in ``label_problems`` instead of failing (see ``read_manifest``).
    """
    path = Path(source)
    if path.is_file() and path.name == MANIFEST_NAME:
        path = path.parent
    if path.is_dir():
        return ManifestDataset(path, split, transform, spatial_dims=spatial_dims, partial_labels=partial_labels)
    if path.is_file() and path.suffix.lower() == ".npz":
        return MedMNISTDataset(path, split, transform)
    if not path.exists():
        raise MedexplainError(f"{path}: dataset not found")
    raise MedexplainError(f"{path}: not a dataset (expected a folder with {MANIFEST_NAME} or a MedMNIST .npz)")
