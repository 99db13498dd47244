"""PNG, JPEG, TIFF and BMP through Pillow: grey -> 1 channel, colour -> 3 (alpha dropped), pages -> depth."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError
from torch import Tensor

from medexplain.data.readers.common import check_header_size, reason, to_tensor
from medexplain.errors import MedexplainError


def read(file: Path) -> Tensor:
    """``(C, H, W)`` for one page, ``(C, D, H, W)`` for a multi-page TIFF; 16-bit and float values are kept."""
    try:
        with warnings.catch_warnings():
            # Our own size limit below is the one that applies; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
        with image:
            pages = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
            width, height = image.size
            check_header_size(file, (pages, height, width, _channels(image)))
            slices = [_page_array(page) for page in itertools.islice(ImageSequence.Iterator(image), pages)]
    except MedexplainError:
        raise
    except Image.DecompressionBombError as error:
        raise MedexplainError(f"{file}: header declares an image too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise MedexplainError(f"{file}: corrupt or truncated image ({reason(error)})") from None
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise MedexplainError(f"{file}: TIFF pages differ in size or channels: {sorted(shapes)}")
    array = slices[0] if pages == 1 else np.stack(slices, axis=1)
    return to_tensor(file, array)


def _grey(mode: str) -> bool:
    """Single-channel modes kept as they are: bilevel, 8-bit, and every integer/float mode (I;16, I;16B, I, F, ...)."""
    return mode in ("1", "L") or mode.startswith(("I", "F"))


def _channels(image: Image.Image) -> int:
    return 1 if _grey(image.mode) or _conversion(image) == "L" else 3


def _conversion(image: Image.Image) -> str | None:
    """The mode to convert to: ``None`` keeps grey and RGB; alpha is dropped; palettes of greys become ``L``."""
    if _grey(image.mode) or image.mode == "RGB":
        return None
    if image.mode in ("LA", "La"):
        return "L"
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [0, 0, 0]).reshape(-1, 3)
        return "L" if (palette == palette[:, :1]).all() else "RGB"
    return "RGB"


def _page_array(page: Image.Image) -> np.ndarray:
    """``(C, H, W)`` of the current page, converted as :func:`_conversion` says."""
    mode = _conversion(page)
    if mode is not None:
        page = page.convert(mode)
    array = np.asarray(page)
    if array.ndim == 2:
        return array[None]
    return np.moveaxis(array, -1, 0)
