"""``.npy`` arrays (NumPy format, never unpickled), already in medexplain's channel-first layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from medexplain.data.readers.common import check_header_size, reason, to_tensor
from medexplain.errors import MedexplainError


def read(file: Path, *, spatial_dims: int | None = None) -> Tensor:
    """A ``.npy`` array as ``(C, *spatial)``; the number of array axes decides the layout.

    ========  =========================  ====================================
    ndim      default (``spatial_dims``  ``spatial_dims=2``
              ``None`` or ``3``)
    ========  =========================  ====================================
    2         ``(H, W)`` -> ``(1, H, W)``  same
    3         ``(D, H, W)`` volume ->      ``(C, H, W)`` channels first
              ``(1, D, H, W)``
    4         ``(C, D, H, W)``             error
    ========  =========================  ====================================

    A 3-axis array is a grey volume unless the caller says the data are 2-D, because a volume saved as
    ``(D, H, W)`` is the common case and silently treating its slices as channels would be wrong. Channels-last
    arrays are not guessed: save them channels first.
    """
    if spatial_dims not in (None, 2, 3):
        raise MedexplainError(f"{file}: spatial_dims must be 2, 3 or None, got {spatial_dims!r}")
    try:
        with file.open("rb") as handle:  # the header alone first: an absurd shape is refused before any mapping
            version = np.lib.format.read_magic(handle)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = header(handle)[0]
    except Exception as error:  # bad magic, a damaged header, ...
        raise MedexplainError(f"{file}: not a readable .npy array ({reason(error)})") from None
    if len(shape) in (2, 3, 4):
        check_header_size(file, tuple(int(s) for s in shape))
    try:
        lazy = np.load(file, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # pickled object arrays, truncated data, ...
        raise MedexplainError(f"{file}: not a readable .npy array ({reason(error)})") from None
    if not isinstance(lazy, np.ndarray):
        raise MedexplainError(f"{file}: expected one .npy array, found an archive")
    ndim = lazy.ndim
    if ndim not in (2, 3, 4) or (ndim == 4 and spatial_dims == 2):
        raise MedexplainError(
            f"{file}: array of shape {lazy.shape} is not an image: expected (H, W), (D, H, W) or (C, H, W) "
            f"with spatial_dims=2, or (C, D, H, W)"
        )
    check_header_size(file, lazy.shape)
    if ndim == 2 or (ndim == 3 and spatial_dims != 2):
        lazy = lazy[None]
    return to_tensor(file, np.array(lazy))
