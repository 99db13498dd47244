"""DICOM through pydicom: modality values (rescale slope/intercept), MONOCHROME1 inverted, optional VOI window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import FileDataset
from pydicom.pixels import apply_modality_lut
from torch import Tensor

from medexplain.data.readers.common import check_header_size, reason, to_tensor
from medexplain.data.window import apply_window
from medexplain.errors import MedexplainError

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read(file: Path, *, window: bool = False) -> Tensor:
    """``(C, H, W)`` for one frame, ``(C, F, H, W)`` for ``NumberOfFrames > 1``; C is 1 (grey) or 3 (colour).

    Grey values are modality values (``RescaleSlope * stored + RescaleIntercept``, or the Modality LUT), so CT
    comes back in Hounsfield units. MONOCHROME1 images (low values displayed bright) are inverted within the
    modality range of the stored bits, so that, as for MONOCHROME2, higher means brighter. With ``window=True``
    the file's first VOI window (WindowCenter/WindowWidth/VOILUTFunction) maps the modality values to [0, 1]
    (inverted afterwards for MONOCHROME1); a file without a window is then an error.
    """
    dataset = _open(file)
    if not any(tag in dataset for tag in _PIXEL_TAGS):
        raise MedexplainError(f"{file}: DICOM file has no pixel data")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    try:
        check_header_size(file, (frames, int(dataset.Rows), int(dataset.Columns), samples))
        pixels = dataset.pixel_array
    except MedexplainError:
        raise
    except Exception as error:  # pydicom raises many exception types on corrupt or truncated pixel data
        raise MedexplainError(
            f"{file}: cannot decode the DICOM pixel data (corrupt, truncated or unsupported compression: "
            f"{reason(error)})"
        ) from None
    if samples == 1:
        values = _grey_values(file, dataset, pixels, window)[None]
    else:
        if window:
            raise MedexplainError(f"{file}: window=True needs a greyscale DICOM, this one has {samples} samples")
        values = np.moveaxis(pixels, -1, 0)
    return to_tensor(file, values)


def _open(file: Path) -> FileDataset:
    try:
        return pydicom.dcmread(file)
    except Exception as error:  # InvalidDicomError, EOFError, struct/Value errors on damaged headers, ...
        raise MedexplainError(f"{file}: not a readable DICOM file ({reason(error)})") from None


def _grey_values(file: Path, dataset: FileDataset, pixels: np.ndarray, window: bool) -> np.ndarray:
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    inverted = dataset.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1"
    if window:
        center, width, function = _file_window(file, dataset)
        unit = apply_window(torch.from_numpy(values), center, width, function).numpy()
        return 1.0 - unit if inverted else unit
    if inverted:
        low, high = _modality_range(dataset)
        return low + high - values
    return values


def _file_window(file: Path, dataset: FileDataset) -> tuple[float, float, str]:
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        raise MedexplainError(f"{file}: window=True but the DICOM file has no WindowCenter/WindowWidth")

    def first(value: object) -> float:
        return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)

    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").lower()
    return first(dataset.WindowCenter), first(dataset.WindowWidth), function


def _modality_range(dataset: FileDataset) -> tuple[float, float]:
    """Modality values of the smallest and largest storable pixel, the mirror for MONOCHROME1 inversion."""
    bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 16)))
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    low, high = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)
    return float(low), float(high)
