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

import importlib
import os
from pathlib import Path

from torch import Tensor

from medexplain.data.readers.common import MAX_SIDE, MAX_VOXELS, has_dicom_preamble
from medexplain.errors import MedexplainError

__all__ = ["MAX_SIDE", "MAX_VOXELS", "SUPPORTED_SUFFIXES", "read_image"]

# The reader module of each suffix, imported on first use (pydicom alone takes half a second to import).
_READERS: dict[str, str] = {
    ".png": "pillow",
    ".jpg": "pillow",
    ".jpeg": "pillow",
    ".tif": "pillow",
    ".tiff": "pillow",
    ".bmp": "pillow",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".npy": "numpy",
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
    kind = _READERS.get(_suffix(file))
    if kind is None and has_dicom_preamble(file):
        kind = "dicom"
    if kind is None:
        known = " ".join(SUPPORTED_SUFFIXES)
        raise MedexplainError(f"{file}: unknown image file type {_suffix(file) or '(no extension)'!r}; known: {known}")
    if not file.is_file():
        raise MedexplainError(f"{file}: image file not found")
    reader = importlib.import_module(f"medexplain.data.readers.{kind}").read
    if kind == "dicom":
        return reader(file, window=window)
    if window:
        raise MedexplainError(f"{file}: window=True applies only to DICOM files")
    if kind == "numpy":
        return reader(file, spatial_dims=spatial_dims)
    return reader(file)


def _suffix(file: Path) -> str:
    name = file.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else file.suffix.lower()
