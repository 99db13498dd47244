"""A trained run and the data it sees: the one place that pairs a run folder with its preprocessing.

Explaining, evaluating, analysing concepts or simulating must feed the model exactly the inputs it was
trained on, so every consumer of a run folder reads its dataset through :func:`run_dataset`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from medexplain.data import ImageDataset, load_dataset


def run_dataset(config: dict[str, Any], data: str | os.PathLike[str], split: str | None) -> ImageDataset:
    """``split`` of ``data`` with the resizing and intensity standardisation recorded in a run's ``config``."""
    from medexplain.train.data import preprocessing_transform

    return load_dataset(data, split, preprocessing_transform(config.get("preprocessing") or {}))


def load_run(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    split: str | None,
    *,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    """The model of ``run_dir`` (safetensors, never unpickled), its config, and ``split`` of ``data`` as it sees it."""
    from medexplain.models import load

    model, config = load(run_dir, device=device)
    return model, config, run_dataset(config, data, split)
