"""Layer classes chosen by the number of spatial dimensions, so 1D/2D/3D networks share one code path."""

from __future__ import annotations

from torch import Tensor, nn

from medexplain.errors import MedexplainError

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def conv(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``."""
    return _CONV[spatial_dims]


def batch_norm(spatial_dims: int) -> type[nn.Module]:
    """``nn.BatchNorm1d``, ``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return _BATCH_NORM[spatial_dims]


def max_pool(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool1d``, ``nn.MaxPool2d`` or ``nn.MaxPool3d``."""
    return _MAX_POOL[spatial_dims]


def crop(x: Tensor, start: int, size: list[int] | tuple[int, ...]) -> Tensor:
    """``x[:, :, start:start+size[0], start:start+size[1], ...]`` for ``(B, C, *spatial)`` tensors."""
    index = (slice(None), slice(None), *(slice(start, start + n) for n in size))
    return x[index]


def check_input(x: Tensor, in_channels: int, spatial_dims: int, min_size: int = 1) -> None:
    """Raise a :class:`MedexplainError` unless ``x`` is ``(B, in_channels, *spatial)`` with every side >= min_size."""
    if x.dim() != spatial_dims + 2 or x.shape[1] != in_channels:
        raise MedexplainError(
            f"input of shape {tuple(x.shape)} does not fit the model: expected (B, {in_channels}, "
            f"{', '.join(['*'] * spatial_dims)})"
        )
    if min(x.shape[2:]) < min_size:
        raise MedexplainError(f"input of shape {tuple(x.shape)} is smaller than the model's {min_size}-pixel patch")


def init_weights(module: nn.Module) -> None:
    """He-normal convolutions (fan-out), unit BatchNorm scales, zero biases: the ResNet initialisation."""
    for m in module.modules():
        if isinstance(m, tuple(_CONV.values())):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, tuple(_BATCH_NORM.values())):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
