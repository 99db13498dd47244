"""Run folders, the format every trained or saved model travels in (one owner: this module).

```
RUN/config.json          {"format": "medexplain-run/1", "model": name, "model_args": {...},
                          "preprocessing": {...}, ...}   (``medexplain train`` adds data, training, metrics)
RUN/model.safetensors    the weights (never unpickled)
```

:func:`save_run` writes one for any model built from the registry (weights trained elsewhere, an untrained model),
:func:`load` rebuilds the model, and :func:`load_run` pairs it with a dataset as the model sees it (the run's
recorded preprocessing), which is how explaining, evaluating, concept analysis and simulation read data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medexplain.data import ImageDataset, load_dataset
from medexplain.data.preprocessing import preprocessed_channels, preprocessing_transform
from medexplain.errors import MedexplainError
from medexplain.files import read_json, write_text
from medexplain.models.bagnet import FlipAveraged
from medexplain.models.cards import build_from_card, is_card, read_card
from medexplain.models.checkpoint import load_weights, save_weights
from medexplain.models.registry import create_model

RUN_FORMAT = "medexplain-run/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_run(model: nn.Module, run_dir: str | os.PathLike[str], name: str, model_args: dict[str, Any]) -> Path:
    """Write ``model`` (built as ``create_model(name, **model_args)``) as a run folder that :func:`load` reads.

    For weights trained elsewhere, or an untrained model: ``model.safetensors`` and a ``config.json`` with the
    format, the model's name and arguments (training runs add data, preprocessing and metrics). Both files are
    written atomically; returns the folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, run_dir / WEIGHTS_FILE)
    config = {"format": RUN_FORMAT, "model": name, "model_args": dict(model_args)}
    write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return run_dir


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a run folder, or the config of a model card (a ``.json`` file, see
    :mod:`medexplain.models.cards`): ``model``, ``model_args``, ``preprocessing``, ``class_names``, ..."""
    if is_card(run_dir):
        return read_card(run_dir)
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
    """Rebuild the model of a run folder from ``config.json`` and load ``model.safetensors``, or the model that a
    model card describes.

    Returns ``(model, config)`` with the model in eval mode on ``device``; a run trained with test-time flips
    (``training.tta_flip_axes``) comes back wrapped in :class:`~medexplain.models.bagnet.FlipAveraged`, the model
    its metrics were measured on.
    """
    config = read_config(run_dir)
    if is_card(run_dir):
        return build_from_card(config).to(device).eval(), config
    if config.get("status") == "training":
        raise MedexplainError(f"{run_dir}: its training has not finished (continue it with resume, then use it)")
    model = create_model(config["model"], **config.get("model_args", {}))
    load_weights(model, Path(run_dir) / WEIGHTS_FILE)
    flip_axes = config.get("training", {}).get("tta_flip_axes")
    if flip_axes:
        model = FlipAveraged(model, flip_axes)
    return model.to(device).eval(), config


def initialise_from(model: nn.Module, name: str, run_dir: str | os.PathLike[str]) -> list[str]:
    """Copy the weights of the trained run ``run_dir`` into ``model`` (a new ``name`` model) to fine-tune it: every
    tensor of the same name and shape. Tensors whose shape differs (e.g. a classifier head for another number of
    classes) keep their initialisation; their names are returned. Another model, or nothing in common, is refused.
    """
    source, config = load(run_dir)
    if config["model"] != name:
        raise MedexplainError(f"{run_dir}: was trained as {config['model']!r}, not {name!r}: it cannot initialise it")
    tensors = (source.model if isinstance(source, FlipAveraged) else source).state_dict()
    own = model.state_dict()
    missing = [key for key in own if key not in tensors] + [key for key in tensors if key not in own]
    if missing:
        raise MedexplainError(f"{run_dir}: its weights do not fit the model: tensor {missing[0]!r} is not in both")
    reshaped = [key for key, tensor in own.items() if tensors[key].shape != tensor.shape]
    if len(reshaped) == len(own):
        raise MedexplainError(f"{run_dir}: no tensor of its model has the new model's shape")
    model.load_state_dict({key: own[key] if key in reshaped else tensors[key] for key in own})
    return reshaped


def run_dataset(
    config: Mapping[str, Any], data: str | os.PathLike[str], split: str | None, *, size: int | None = None,
    run_dir: str | os.PathLike[str] | None = None, partial_labels: bool = False,
) -> ImageDataset:
    """``split`` of ``data`` with the resizing and intensity standardisation recorded in a run's ``config``.

    ``size`` resizes every image to it along each spatial axis instead of the recorded size (for models saved
    without one, e.g. with :func:`save_run`, on data of mixed sizes). Data whose channels differ from the model's
    are refused, naming both (the model by ``run_dir`` when given). ``partial_labels`` as in
    :func:`medexplain.data.load_dataset` (concept annotations).
    """
    preprocessing = dict(config.get("preprocessing") or {})
    if size is not None:
        if size < 1:
            raise MedexplainError(f"`size` must be positive, got {size}", parameter="size")
        preprocessing["size"] = size
    dataset = load_dataset(data, split, preprocessing_transform(preprocessing), partial_labels=partial_labels)
    expected = (config.get("model_args") or {}).get("in_channels")
    if expected is not None and len(dataset):
        raw = load_dataset(data, split, partial_labels=partial_labels)
        found = preprocessed_channels(preprocessing, raw.in_channels)
        if found != expected:
            raise MedexplainError(
                f"{run_dir or 'model ' + repr(config.get('model'))}: the model expects {expected}-channel images; "
                f"{data} has {found}-channel images"
            )
    return dataset


def load_run(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    split: str | None,
    *,
    device: str | torch.device = "cpu",
    size: int | None = None,
    partial_labels: bool = False,
) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    """The model of ``run_dir`` (eval mode), its config, and ``split`` of ``data`` as the model sees it
    (``size``, ``partial_labels``: see :func:`run_dataset`)."""
    model, config = load(run_dir, device=device)
    return model, config, run_dataset(config, data, split, size=size, run_dir=run_dir, partial_labels=partial_labels)
