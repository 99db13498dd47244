"""Explicit, pure-torch transforms ``Sample -> Sample`` for 2-D and 3-D images.

Spatial transforms (:class:`Resize`, :class:`CropOrPad`) move the image and every mask together: images are
interpolated (area or linear), masks with nearest neighbour and re-binarised, so they stay in {0, 1}.
Intensity transforms (:class:`ScaleIntensity`, :class:`NormalizeIntensity`, :class:`Window`) change the image
only. Compose them with :class:`Compose` and pass the result as ``load_dataset(..., transform=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from medexplain.data.sample import Sample
from medexplain.data.window import apply_window
from medexplain.errors import MedexplainError
from medexplain.ndimage import LINEAR_MODES

__all__ = [
    "Compose",
    "CropOrPad",
    "NormalizeIntensity",
    "Resize",
    "ScaleIntensity",
    "Transform",
    "Window",
    "apply_window",
]

Transform = Callable[[Sample], Sample]



class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize image and masks to ``size`` (int: every spatial axis; sequence: per axis) or so that the longest
    spatial side equals ``longest_side`` (aspect ratio kept, sides rounded).

    Args:
        mode: image interpolation. ``"area"`` averages each output cell's footprint (anti-aliased shrinking),
            ``"linear"`` is bi/trilinear (``align_corners=False``), ``"auto"`` uses area when no axis grows and
            linear otherwise.
        mask_mode: ``"nearest"`` (nearest-exact, centre-aligned) or ``"any"``: a pixel is foreground when its
            footprint touches foreground, so tiny lesions survive strong shrinking. Masks stay in {0, 1}.
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        *,
        longest_side: int | None = None,
        mode: str = "auto",
        mask_mode: str = "nearest",
    ) -> None:
        if (size is None) == (longest_side is None):
            raise MedexplainError("Resize: give exactly one of size or longest_side")
        if mode not in ("auto", "area", "linear"):
            raise MedexplainError(f"Resize: unknown mode {mode!r}; use 'auto', 'area' or 'linear'")
        if mask_mode not in ("nearest", "any"):
            raise MedexplainError(f"Resize: unknown mask_mode {mask_mode!r}; use 'nearest' or 'any'")
        sizes = [longest_side] if size is None else [size] if isinstance(size, int) else list(size)
        if any(int(s) < 1 for s in sizes):
            raise MedexplainError(f"Resize: sizes must be positive, got {sizes}")
        self.size = size
        self.longest_side = longest_side
        self.mode = mode
        self.mask_mode = mask_mode

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape an input of ``spatial_shape`` is resized to."""
        if self.longest_side is not None:
            scale = self.longest_side / max(spatial_shape)
            return tuple(max(1, round(s * scale)) for s in spatial_shape)
        if isinstance(self.size, int):
            return (self.size,) * len(spatial_shape)
        if len(self.size) != len(spatial_shape):
            raise MedexplainError(f"Resize: size {tuple(self.size)} does not match a {len(spatial_shape)}-D image")
        return tuple(int(s) for s in self.size)

    def __call__(self, sample: Sample) -> Sample:
        source = sample.spatial_shape
        target = self.output_shape(source)
        if target == source:
            return sample
        mode = self.mode
        if mode == "auto":
            mode = "area" if all(t <= s for t, s in zip(target, source, strict=True)) else "linear"
        image = _interpolate(sample.image, target, mode)
        masks = {name: _resize_mask(mask, target, self.mask_mode) for name, mask in sample.masks.items()}
        return replace(sample, image=image, masks=masks)

    def __repr__(self) -> str:
        what = f"longest_side={self.longest_side}" if self.longest_side else f"size={self.size!r}"
        return f"Resize({what}, mode={self.mode!r}, mask_mode={self.mask_mode!r})"


class CropOrPad:
    """Centre-crop or zero-pad every spatial axis to ``size`` (int or per-axis sequence); masks alike.

    Where the difference is odd, the extra pixel is cropped from / padded at the end: an axis of length ``s``
    keeps ``[(s - t) // 2, (s - t) // 2 + t)`` when cropped to ``t``.
    """

    def __init__(self, size: int | Sequence[int], *, value: float = 0.0) -> None:
        self.size = size
        self.value = value

    def __call__(self, sample: Sample) -> Sample:
        source = sample.spatial_shape
        target = (self.size,) * len(source) if isinstance(self.size, int) else tuple(self.size)
        if len(target) != len(source):
            raise MedexplainError(f"CropOrPad: size {target} does not match a {len(source)}-D image")
        pads: list[int] = []
        for s, t in reversed(list(zip(source, target, strict=True))):  # F.pad lists the last axis first
            before = (t - s) // 2 if t >= s else -((s - t) // 2)
            pads += [before, t - s - before]
        return replace(
            sample,
            image=F.pad(sample.image, pads, value=self.value),
            masks={name: F.pad(mask, pads, value=0.0) for name, mask in sample.masks.items()},
        )

    def __repr__(self) -> str:
        return f"CropOrPad(size={self.size!r}, value={self.value})"


class ScaleIntensity:
    """Map ``in_range = (low, high)`` linearly to [0, 1]; by default ``low``/``high`` are the image's own
    minimum and maximum (per channel with ``channel_wise``). A constant image becomes 0. ``clip`` clamps the
    result to [0, 1] (useful with a fixed ``in_range``, e.g. ``(0, 255)`` for 8-bit files)."""

    def __init__(
        self, in_range: tuple[float, float] | None = None, *, channel_wise: bool = False, clip: bool = False
    ) -> None:
        if in_range is not None and not in_range[1] > in_range[0]:
            raise MedexplainError(f"ScaleIntensity: in_range must be (low, high) with high > low, got {in_range}")
        self.in_range = in_range
        self.channel_wise = channel_wise
        self.clip = clip

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image
        if self.in_range is not None:
            low, high = (torch.tensor(float(v)) for v in self.in_range)
        else:
            flat = _flatten(image, self.channel_wise)
            low, high = _unflatten(flat.amin(dim=-1), image), _unflatten(flat.amax(dim=-1), image)
        span = high - low
        scaled = torch.where(span > 0, (image - low) / torch.where(span > 0, span, 1.0), 0.0)
        return replace(sample, image=scaled.clamp(0.0, 1.0) if self.clip else scaled)

    def __repr__(self) -> str:
        return f"ScaleIntensity(in_range={self.in_range}, channel_wise={self.channel_wise}, clip={self.clip})"


class NormalizeIntensity:
    """``(image - mean) / std``. Given ``mean``/``std`` (scalars or one value per channel) are used as is;
    otherwise the image's own mean and population standard deviation (per channel with ``channel_wise``).
    A zero standard deviation is replaced by 1, as MONAI's ``NormalizeIntensity`` does."""

    def __init__(
        self,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        *,
        channel_wise: bool = False,
    ) -> None:
        if (mean is None) != (std is None):
            raise MedexplainError("NormalizeIntensity: give both mean and std, or neither for per-image statistics")
        self.mean = mean
        self.std = std
        self.channel_wise = channel_wise

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image
        if self.mean is not None and self.std is not None:
            mean, std = (_per_channel(v, image) for v in (self.mean, self.std))
        else:
            flat = _flatten(image, self.channel_wise)
            mean = _unflatten(flat.mean(dim=-1), image)
            std = _unflatten(flat.std(dim=-1, correction=0), image)
        std = torch.where(std == 0, 1.0, std)
        return replace(sample, image=(image - mean) / std)

    def __repr__(self) -> str:
        return f"NormalizeIntensity(mean={self.mean}, std={self.std}, channel_wise={self.channel_wise})"


class Channels:
    """Give every image ``count`` channels: a grey image is repeated (grey -> RGB), a colour image is averaged
    (RGB -> grey); an image that already has ``count`` channels is unchanged, any other count is an error."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise MedexplainError(f"Channels: count must be positive, got {count}")
        self.count = count

    def __call__(self, sample: Sample) -> Sample:
        have = sample.image.shape[0]
        if have == self.count:
            return sample
        if have == 1:
            return replace(sample, image=sample.image.expand(self.count, *sample.image.shape[1:]).clone())
        if self.count == 1:
            return replace(sample, image=sample.image.mean(0, keepdim=True))
        raise MedexplainError(f"{sample.meta.get('path', 'image')}: cannot turn {have} channels into {self.count}")

    def __repr__(self) -> str:
        return f"Channels({self.count})"


class Window:
    """Display window ``(center, width)`` mapping intensities to [0, 1] (e.g. ``Window(40, 400)`` for CT soft
    tissue in HU); see :func:`apply_window`."""

    def __init__(self, center: float, width: float, function: str = "linear") -> None:
        self.center = center
        self.width = width
        self.function = function
        apply_window(torch.zeros(1), center, width, function)  # validate the parameters now

    def __call__(self, sample: Sample) -> Sample:
        return replace(sample, image=apply_window(sample.image, self.center, self.width, self.function))

    def __repr__(self) -> str:
        return f"Window(center={self.center}, width={self.width}, function={self.function!r})"


def _interpolate(image: Tensor, size: tuple[int, ...], mode: str) -> Tensor:
    torch_mode = LINEAR_MODES[len(size)] if mode == "linear" else "area"
    extra = {"align_corners": False} if mode == "linear" else {}
    return F.interpolate(image[None], size=size, mode=torch_mode, **extra)[0]


def _resize_mask(mask: Tensor, size: tuple[int, ...], mask_mode: str) -> Tensor:
    if mask_mode == "any":
        return (F.interpolate(mask[None], size=size, mode="area")[0] > 0).to(torch.float32)
    return (F.interpolate(mask[None], size=size, mode="nearest-exact")[0] > 0.5).to(torch.float32)


def _flatten(image: Tensor, channel_wise: bool) -> Tensor:
    """``(C, N)`` per channel or ``(1, N)`` over the whole image."""
    return image.reshape(image.shape[0], -1) if channel_wise else image.reshape(1, -1)


def _unflatten(stat: Tensor, image: Tensor) -> Tensor:
    """Per-row statistics ``(C,)`` or ``(1,)`` shaped to broadcast over ``(C, *spatial)``."""
    return stat.reshape(-1, *([1] * (image.ndim - 1)))


def _per_channel(value: float | Sequence[float], image: Tensor) -> Tensor:
    stat = torch.as_tensor(value, dtype=image.dtype).reshape(-1)
    if stat.numel() not in (1, image.shape[0]):
        raise MedexplainError(f"{stat.numel()} statistics given for an image with {image.shape[0]} channels")
    return _unflatten(stat, image)
