"""``read_image(path)``: one entry point for PNG/JPEG/TIFF, DICOM, NIfTI and ``.npy`` files.

Every reader returns a float32 tensor ``(C, *spatial)`` (``(C, H, W)`` or ``(C, D, H, W)``) holding the values
stored in the file, in the file's own units: 8-bit images keep 0..255, 16-bit images 0..65535, DICOM gives
modality values (Hounsfield units for CT) and NIfTI the scaled voxel values. Scaling to [0, 1] or windowing is
an explicit step (:mod:`medexplain.data.transforms`, or ``read_image(path, window=True)`` for DICOM).

Untrusted files: sizes are checked from the header before any pixel is decoded, nothing is unpickled, and every
failure (unknown extension, corrupt or truncated file, missing pixel data, NaN/inf values, unsupported
dimensionality) raises :class:`~medexplain.errors.MedexplainError` with one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from medexplain.data.readers import dicom, nifti, numpy, pillow
from medexplain.data.readers.common import MAX_SIDE, MAX_VOXELS
from medexplain.errors import MedexplainError

__all__ = ["MAX_SIDE", "MAX_VOXELS", "SUPPORTED_SUFFIXES", "read_image"]

_READERS: dict[str, Callable[..., Tensor]] = {
    ".png": pillow.read,
    ".jpg": pillow.read,
    ".jpeg": pillow.read,
    ".tif": pillow.read,
    ".tiff": pillow.read,
    ".bmp": pillow.read,
    ".dcm": dicom.read,
    ".dicom": dicom.read,
    ".nii": nifti.read,
    ".nii.gz": nifti.read,
    ".npy": numpy.read,
}
SUPPORTED_SUFFIXES = tuple(_READERS)


def read_image(path: str | os.PathLike[str], *, window: bool = False, spatial_dims: int | None = None) -> Tensor:
    """Read one image or volume as a float32 tensor ``(C, *spatial)`` in the file's own units.

    Args:
        path: ``.png .jpg .jpeg .tif .tiff .bmp`` (Pillow), ``.dcm .dicom`` or an extension-less file with the
            DICOM preamble (pydicom), ``.nii .nii.gz`` (nibabel), ``.npy`` (NumPy, never unpickled).
        window: DICOM only: apply the file's VOI window (WindowCenter/WindowWidth, DICOM PS3.3 C.11.2.1.2)
            and return values in [0, 1]; without it the modality values (e.g. HU) are returned unwindowed.
        spatial_dims: ``.npy`` only: how to read a 3-D array, ``2`` -> ``(C, H, W)``, ``3`` (default) ->
            ``(1, D, H, W)``; see :func:`medexplain.data.readers.numpy.read`.

    Layouts: grey -> ``(1, H, W)``; RGB -> ``(3, H, W)`` (alpha dropped); multi-page TIFF and multi-frame
    DICOM -> ``(C, D, H, W)`` with one slice per page/frame; NIfTI in canonical RAS+ orientation ->
    ``(1, X, Y, Z)`` for 3D and ``(T, X, Y, Z)`` for 4D (the 4th axis becomes channels).
    """
    file = Path(path)
    reader = _READERS.get(_suffix(file))
    if reader is None and dicom.has_preamble(file):
        reader = dicom.read
    if reader is None:
        known = " ".join(SUPPORTED_SUFFIXES)
        raise MedexplainError(f"{file}: unknown image file type {_suffix(file) or '(no extension)'!r}; known: {known}")
    if not file.is_file():
        raise MedexplainError(f"{file}: image file not found")
    if reader is dicom.read:
        return dicom.read(file, window=window)
    if window:
        raise MedexplainError(f"{file}: window=True applies only to DICOM files")
    if reader is numpy.read:
        return numpy.read(file, spatial_dims=spatial_dims)
    return reader(file)


def _suffix(file: Path) -> str:
    name = file.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else file.suffix.lower()
