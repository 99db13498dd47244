"""Model weights as safetensors files; nothing is ever unpickled."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.files import write_bytes


def state_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise named tensors (copied to contiguous CPU memory) to safetensors bytes."""
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return save_safetensors(plain, metadata=metadata)


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Named tensors of a safetensors file; a missing or corrupt file raises a :class:`MedexplainError`."""
    path = Path(path)
    if not path.is_file():
        raise MedexplainError(f"{path}: no such checkpoint file")
    try:
        return load_safetensors(path.read_bytes())
    except (SafetensorError, ValueError) as error:
        raise MedexplainError(f"{path}: not a valid safetensors file ({error})") from None


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model.state_dict()`` (parameters and buffers) to ``path`` atomically."""
    write_bytes(path, state_to_bytes(model.state_dict()))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a safetensors state dict into ``model``; any missing, extra or reshaped tensor is an error.

    The error names the file and the first mismatching tensor (in the model's order).
    """
    return load_state(model, read_tensors(path), path)


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> nn.Module:
    """Load ``tensors`` into ``model`` strictly; a mismatch names ``source`` and the first missing, unexpected or
    reshaped tensor."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in tensors:
            raise MedexplainError(f"{source}: checkpoint does not match the model: tensor {name!r} is missing")
        if tensors[name].shape != tensor.shape:
            raise MedexplainError(
                f"{source}: checkpoint does not match the model: tensor {name!r} has shape "
                f"{tuple(tensors[name].shape)}, the model expects {tuple(tensor.shape)}"
            )
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise MedexplainError(f"{source}: checkpoint does not match the model: unexpected tensor {extra[0]!r}")
    model.load_state_dict(tensors, strict=True)
    return model
