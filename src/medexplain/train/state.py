"""The resume checkpoint: model, optimizer and RNG state of the last completed epoch, in one safetensors file.

Tensors (weights, optimizer buffers, generator states) are safetensors entries; everything else (epoch,
optimizer hyperparameters, early-stopping counters, the run configuration) is JSON in the file's metadata.
Nothing is pickled, and the file is replaced atomically, so an interruption leaves the previous epoch's state.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.files import write_bytes
from medexplain.models.checkpoint import read_tensors, state_to_bytes

RESUME_FILE = "resume.safetensors"


def save_resume(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Tensor],
    info: dict[str, Any],
    averaged: nn.Module | None = None,
) -> None:
    """Write the state after a completed epoch; ``info`` is JSON (epoch, counters, configuration);
    ``averaged``: the weight average (EMA) of the model, when the run keeps one."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"average.{k}": v for k, v in averaged.state_dict().items()})
    optimizer_state = optimizer.state_dict()
    for index, buffers in optimizer_state["state"].items():
        for key, value in buffers.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    tensors.update({f"rng.{name}": state for name, state in generators.items()})
    metadata = {"info": json.dumps(info), "param_groups": json.dumps(optimizer_state["param_groups"])}
    write_bytes(path, state_to_bytes(tensors, metadata))


def read_resume_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON part of a resume checkpoint (without reading its tensors)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return json.loads(metadata["info"])
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as error:
        raise MedexplainError(f"{path}: not a valid resume checkpoint ({error})") from None


def load_resume(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    averaged: nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore ``model``, ``optimizer`` (and the weight average ``averaged``) in place; returns
    ``(generator states, info)``."""
    tensors = read_tensors(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    try:
        info = json.loads(metadata["info"])
        param_groups = json.loads(metadata["param_groups"])
    except (KeyError, json.JSONDecodeError) as error:
        raise MedexplainError(f"{path}: not a valid resume checkpoint ({error})") from None
    for prefix, module in (("model.", model), ("average.", averaged)):
        if module is None:
            continue
        module_state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(module_state, strict=True)
        except RuntimeError as error:
            raise MedexplainError(f"{path}: resume checkpoint does not match the model ({error})") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    generators = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return generators, info
