"""Writing a manifest dataset folder (the layout :func:`medexplain.data.load_dataset` reads): file encodings with
no time stamps (byte-identical under a seed) and the manifest itself, each written atomically."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from medexplain.files import csv_text, write_bytes, write_text


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of a uint8 (H, W) or (H, W, 3) array, or of a boolean mask as 0/255 (no timestamps)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def nifti_gz_bytes(array: np.ndarray) -> bytes:
    """``.nii.gz`` encoding with an identity affine and a gzip header without time stamp or file name.

    Boolean masks are stored as uint8 0/1.
    """
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = nib.Nifti1Image(np.ascontiguousarray(array), affine=np.eye(4))
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def npy_bytes(array: np.ndarray) -> bytes:
    """``.npy`` encoding (readable with ``np.load(allow_pickle=False)``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_file(folder: Path, relative: str, data: bytes) -> str:
    """Write ``data`` to ``folder / relative`` and return ``relative`` (the manifest entry)."""
    write_bytes(folder / relative, data)
    return relative


def write_manifest(folder: Path, rows: Sequence[dict[str, object]]) -> None:
    """``manifest.csv`` with the columns of the first row, in order, ``\\n`` line ends."""
    write_text(folder / "manifest.csv", csv_text(rows, list(rows[0])))
