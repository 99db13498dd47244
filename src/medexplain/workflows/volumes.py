"""3D maps back on their source image's grid, so they overlay the scan in 3D Slicer or ITK-SNAP.

The readers give volumes in canonical (RAS+) orientation and the model's preprocessing may resize them; a map is
resized back to the canonical grid, reoriented to the source file's voxel order and written with the source
file's affine (``OUT/<method>/<item id>.nii.gz``, float32, the first explained target). Items whose source is
not a NIfTI file are skipped.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medexplain.data import load_dataset
from medexplain.files import write_bytes
from medexplain.workflows.explanations import load_explanations, map_filename


def source_grid_map(map_: np.ndarray, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """``map_`` ``(*spatial)`` (canonical orientation, any size) on the voxel grid of the NIfTI ``source``; returns
    ``(array with the source's shape, the source's affine)``."""
    import nibabel
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    image = nibabel.load(str(source))
    shape = tuple(int(s) for s in image.shape[:3])
    orientation = io_orientation(image.affine)
    canonical_shape = apply_orientation(np.empty(shape, dtype=np.bool_), orientation).shape
    values = torch.from_numpy(np.ascontiguousarray(map_, dtype=np.float32))
    if tuple(values.shape) != tuple(canonical_shape):
        values = F.interpolate(values[None, None], size=canonical_shape, mode="trilinear", align_corners=False)[0, 0]
    back = apply_orientation(values.numpy(), ornt_transform(axcodes2ornt("RAS"), orientation))
    return np.ascontiguousarray(back, dtype=np.float32), image.affine


def write_source_grid_maps(
    explanations: str | os.PathLike[str], data: str | os.PathLike[str], split: str | None,
    out: str | os.PathLike[str],
) -> int:  # fmt: skip
    """Write every 3D map of ``explanations`` whose source image (in ``split`` of ``data``) is a NIfTI file on that
    image's grid; returns how many were written."""
    import nibabel

    stored = load_explanations(explanations)
    raw = load_dataset(data, split)
    written = 0
    for item in stored.items:
        source = Path(str(raw[item.index].meta.get("path", "")))
        if not source.name.endswith((".nii", ".nii.gz")):
            continue
        for method in item.maps:
            maps = stored.load(item, method).numpy()
            if maps.ndim != 4:
                continue
            array, affine = source_grid_map(maps[0], source)
            target = Path(out) / method / map_filename(item.id, item.index, "nifti")
            write_bytes(target, gzip.compress(nibabel.Nifti1Image(array, affine).to_bytes()))
            written += 1
    return written
