"""MedMNIST ``.npz`` archives (official layout): ``{train,val,test}_images`` uint8 and ``{train,val,test}_labels``.

Image arrays are ``(N, H, W)`` (grey 2-D), ``(N, H, W, 3)`` (RGB 2-D) or ``(N, D, H, W)`` (3-D; a last axis of
3 always means RGB, MedMNIST volumes are 28 or 64 wide). Labels are ``(N, 1)`` class indices or ``(N, K)``
0/1 multi-label targets (ChestMNIST). Yang et al., "MedMNIST v2", Scientific Data 2023.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medexplain.data.readers.common import check_header_size, reason
from medexplain.errors import MedexplainError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MedMNISTSplit:
    """One split, validated from the ``.npy`` headers: ``labels`` int64 ``(N, K)``; images decompressed on demand."""

    file: Path
    name: str
    labels: np.ndarray
    image_shape: tuple[int, ...]

    def images(self) -> np.ndarray:
        """Decompress the uint8 images ``(N, *image_shape)`` of this split."""
        with _open(self.file) as archive:
            images = _member(self.file, archive, f"{self.name}_images")
        if images.shape != (len(self.labels), *self.image_shape) or images.dtype != np.uint8:
            raise MedexplainError(f"{self.file}: {self.name}_images does not match its header")
        return images


def read_labels(file: Path) -> dict[str, np.ndarray]:
    """``{split: (N, K) int64 labels}`` for every split, without decompressing any image array."""
    with _open(file) as archive:
        return {split: _labels(file, archive, split) for split in SPLITS}


def open_split(file: Path, split: str) -> MedMNISTSplit:
    """Validate one split (image array header: dtype, layout, per-image size, count) without decompressing it."""
    if split not in SPLITS:
        raise MedexplainError(f"{file}: unknown split {split!r}; MedMNIST splits are {', '.join(SPLITS)}")
    key = f"{split}_images"
    with _open(file) as archive:
        labels = _labels(file, archive, split)
        if key not in archive.files:
            raise MedexplainError(f"{file}: missing array {key!r} (found: {', '.join(archive.files)})")
    shape, dtype = _array_header(file, key)
    if dtype != np.uint8 or len(shape) not in (3, 4):
        raise MedexplainError(
            f"{file}: {key} must be uint8 (N, H, W), (N, H, W, 3) or (N, D, H, W), got {dtype} {shape}"
        )
    check_header_size(file, shape[1:])
    if shape[0] != len(labels):
        raise MedexplainError(f"{file}: {key} has {shape[0]} images but {split}_labels has {len(labels)} rows")
    return MedMNISTSplit(file, split, labels, shape[1:])


def to_channels_first(image: np.ndarray) -> np.ndarray:
    """One image ``(H, W)``, ``(H, W, 3)`` or ``(D, H, W)`` as ``(C, *spatial)``."""
    if image.ndim == 3 and image.shape[-1] == 3:
        return np.moveaxis(image, -1, 0)
    return image[None]


def _open(file: Path) -> np.lib.npyio.NpzFile:
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as error:  # BadZipFile, OSError, ValueError on damaged archives
        raise MedexplainError(f"{file}: not a readable .npz archive ({reason(error)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise MedexplainError(f"{file}: expected a MedMNIST .npz archive, found a single array")
    return archive


def _member(file: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    if key not in archive.files:
        raise MedexplainError(f"{file}: missing array {key!r} (found: {', '.join(archive.files)})")
    try:
        return archive[key]
    except Exception as error:  # truncated or corrupt member, pickled object array
        raise MedexplainError(f"{file}: cannot read array {key!r} ({reason(error)})") from None


def _labels(file: Path, archive: np.lib.npyio.NpzFile, split: str) -> np.ndarray:
    labels = _member(file, archive, f"{split}_labels")
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.dtype.kind not in "biu" or (labels.size and labels.min() < 0):
        raise MedexplainError(
            f"{file}: {split}_labels must be non-negative integers (N, K), got {labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int64)


def _array_header(file: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the ``.npy`` header of archive member ``key``, reading only its first bytes."""
    try:
        with zipfile.ZipFile(file) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(member)
    except Exception as error:  # BadZipFile, bad magic, malformed header
        raise MedexplainError(f"{file}: cannot read the header of {key!r} ({reason(error)})") from None
    return tuple(int(s) for s in shape), dtype
