"""Model weights as safetensors and run folders (``config.json`` + ``model.safetensors``); nothing is unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.files import read_json, write_bytes, write_text
from medexplain.models.bagnet import FlipAveraged
from medexplain.models.registry import create_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


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
    tensors = read_tensors(path)
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in tensors:
            raise MedexplainError(f"{path}: checkpoint does not match the model: tensor {name!r} is missing")
        if tensors[name].shape != tensor.shape:
            raise MedexplainError(
                f"{path}: checkpoint does not match the model: tensor {name!r} has shape "
                f"{tuple(tensors[name].shape)}, the model expects {tuple(tensor.shape)}"
            )
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise MedexplainError(f"{path}: checkpoint does not match the model: unexpected tensor {extra[0]!r}")
    model.load_state_dict(tensors, strict=True)
    return model


def save_run(model: nn.Module, run_dir: str | os.PathLike[str], name: str, model_args: dict[str, Any]) -> Path:
    """Write ``model`` (built as ``create_model(name, **model_args)``) as a run folder that :func:`load` reads.

    For weights trained elsewhere, or an untrained model: ``model.safetensors`` and a ``config.json`` with just
    the model's name and arguments (``medexplain train`` adds data, preprocessing and metrics). Both files are
    written atomically; returns the folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, run_dir / WEIGHTS_FILE)
    write_text(run_dir / CONFIG_FILE, json.dumps({"model": name, "model_args": dict(model_args)}, indent=2) + "\n")
    return run_dir


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a run folder."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise MedexplainError(f"{path}: no such file (is {run_dir} a model run folder written by `medexplain train`?)")
    config = read_json(path)
    if not isinstance(config.get("model"), str):
        raise MedexplainError(f'{path}: has no "model" name')
    if not isinstance(config.get("model_args", {}), dict):
        raise MedexplainError(f'{path}: "model_args" must be an object')
    return config


def load(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder from ``config.json`` and load ``model.safetensors``.

    Returns ``(model, config)`` with the model in eval mode on ``device``; a run trained with test-time flips
    (``training.tta_flip_axes``) comes back wrapped in :class:`~medexplain.models.bagnet.FlipAveraged`, the model
    its metrics were measured on.
    """
    config = read_config(run_dir)
    model = create_model(config["model"], **config.get("model_args", {}))
    load_weights(model, Path(run_dir) / WEIGHTS_FILE)
    flip_axes = config.get("training", {}).get("tta_flip_axes")
    if flip_axes:
        model = FlipAveraged(model, flip_axes)
    return model.to(device).eval(), config
