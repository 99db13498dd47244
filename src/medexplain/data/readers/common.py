"""Checks shared by every reader: header sizes before decoding, finite values after."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medexplain.errors import MedexplainError

MAX_VOXELS = 2**28
"""Largest number of pixels/voxels (all channels and frames together) a header may claim: 1 GiB as float32."""
MAX_SIDE = 65536
"""Largest size along any axis a header may claim."""


def has_dicom_preamble(file: Path) -> bool:
    """True when ``file`` starts with the 128-byte DICOM preamble and ``DICM`` (files often lack an extension)."""
    try:
        with file.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def check_header_size(file: Path, shape: tuple[int, ...]) -> None:
    """Refuse a header-declared ``shape`` that is empty or absurdly large, before any pixel is decoded."""
    dims = "x".join(str(s) for s in shape)
    if any(s <= 0 for s in shape):
        raise MedexplainError(f"{file}: header declares an empty image ({dims})")
    if max(shape) > MAX_SIDE or math.prod(shape) > MAX_VOXELS:
        raise MedexplainError(
            f"{file}: header declares a {dims} image, larger than the limit ({MAX_SIDE} per side, "
            f"{MAX_VOXELS} values); refusing to decode it"
        )


def to_tensor(file: Path, array: np.ndarray) -> Tensor:
    """A float32 tensor of ``array`` (already ``(C, *spatial)``); NaN or infinite values are an error."""
    if array.dtype.kind not in "biuf":
        raise MedexplainError(f"{file}: unsupported pixel type {array.dtype}")
    values = torch.from_numpy(np.require(array, dtype=np.float32, requirements=["C_CONTIGUOUS", "WRITEABLE"]))
    if values.dtype.is_floating_point and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise MedexplainError(f"{file}: image contains {bad} NaN or infinite values")
    return values


def reason(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
