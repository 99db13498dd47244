"""NIfTI (``.nii``/``.nii.gz``) through nibabel, reoriented to the closest canonical (RAS+) orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation
from torch import Tensor

from medexplain.data.readers.common import check_header_size, reason, to_tensor
from medexplain.errors import MedexplainError


def read(file: Path) -> Tensor:
    """``(1, X, Y, Z)`` for a 3-D volume, ``(T, X, Y, Z)`` for 4-D (4th axis -> channels), ``(C, *2 axes)`` for 2-D.

    Voxel values are the scaled values (``scl_slope``/``scl_inter`` applied). The voxel axes are permuted and
    flipped exactly as :func:`nibabel.as_closest_canonical` does, so axis 0 runs towards Right, axis 1 towards
    Anterior and axis 2 towards Superior (the MONAI ``Orientation("RAS")`` layout). Spatial axes of size 1 are
    dropped after reorientation, so a single-slice volume is a 2-D image; 1-D and 5-D+ files are errors.
    """
    try:
        image = nib.load(file)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, ValueError, ... on damaged headers
        raise MedexplainError(f"{file}: not a readable NIfTI file ({reason(error)})") from None
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (2, 3, 4):
        raise MedexplainError(
            f"{file}: NIfTI image has {len(shape)} dimensions {shape}; medexplain reads 2-D, 3-D and 4-D images"
        )
    check_header_size(file, shape)
    try:
        data = image.get_fdata(dtype=np.float32)
    except Exception as error:  # truncated or unreadable voxel data
        raise MedexplainError(f"{file}: corrupt or truncated NIfTI voxel data ({reason(error)})") from None
    if data.ndim == 2:
        data = data[..., None]
    data = apply_orientation(data, io_orientation(image.affine))
    channels_last = data if data.ndim == 4 else data[..., None]
    spatial = [s for s in channels_last.shape[:3] if s != 1]
    if len(spatial) < 2:
        raise MedexplainError(f"{file}: NIfTI image {shape} has fewer than 2 spatial axes longer than 1")
    array = np.moveaxis(channels_last, -1, 0).reshape(channels_last.shape[-1], *spatial)
    return to_tensor(file, array)
