"""Folder-level workflows behind ``medexplain simulate train`` and ``medexplain simulate apply``.

A classifier run folder (``medexplain train``) gives the model and its preprocessing; the simulator works in
the classifier's input space (after that preprocessing), so its fields are in voxels of the preprocessed image.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from medexplain.data import ImageDataset, load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.errors import MedexplainError
from medexplain.files import atomic_directory, csv_text, write_text
from medexplain.models import load as load_model
from medexplain.progress import progress_bar
from medexplain.simulate.apply import apply_simulator
from medexplain.simulate.checkpoint import load_simulator, save_simulator
from medexplain.simulate.network import SimulatorConfig
from medexplain.simulate.training import TrainingConfig, train_simulator


def load_classifier(run_dir: str | os.PathLike[str], device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of a run folder (eval mode) and its ``config.json``."""
    return load_model(run_dir, device=device)


def open_data(source: str | os.PathLike[str], classifier_config: dict[str, Any], split: str | None) -> ImageDataset:
    """``load_dataset`` with the classifier's preprocessing; refuses data the classifier cannot read."""
    dataset = load_dataset(source, split, transform=preprocessing_transform(classifier_config.get("preprocessing", {})))
    args = classifier_config.get("model_args", {})
    dims, channels = args.get("spatial_dims"), args.get("in_channels")
    if dims is not None and dims != dataset.spatial_dims:
        raise MedexplainError(f"{source}: {dataset.spatial_dims}D images, but the classifier takes {dims}D inputs")
    if channels is not None and channels != dataset.in_channels:
        raise MedexplainError(
            f"{source}: {dataset.in_channels}-channel images, but the classifier takes {channels} channels"
        )
    if len(dataset) == 0:
        raise MedexplainError(f"{source}: no images{f' in split {split!r}' if split else ''}")
    return dataset


def _disease_class(value: int, classifier_config: dict[str, Any], run_dir: str | os.PathLike[str]) -> int:
    num_classes = int(classifier_config.get("model_args", {}).get("num_classes", 2))
    if not 0 <= value < max(num_classes, 2):
        raise MedexplainError(f"disease class {value}: the classifier in {run_dir} has {num_classes} classes")
    return value


def preload(dataset: ImageDataset, progress: bool = True) -> TensorDataset:
    """Decode every image once: ``TensorDataset`` of ``(N, C, *spatial)`` (images must share one shape)."""
    with progress_bar(progress, transient=True) as bar:
        images = [dataset[i].image for i in bar.track(range(len(dataset)), description="loading images")]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise MedexplainError(f"{dataset.source}: images of different shapes {sorted(shapes)[:2]}; resize them first")
    return TensorDataset(torch.stack(images))


def train_from_run(
    classifier_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str | None = "train",
    simulator: dict[str, Any] | None = None,
    settings: TrainingConfig | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a simulator for the classifier in ``classifier_dir`` on ``data`` and write the folder ``out``.

    ``simulator``: :class:`SimulatorConfig` fields other than ``spatial_dims``/``in_channels`` (from the data).
    Returns the JSON document written to ``out/simulator.json``.
    """
    settings = settings or TrainingConfig()
    classifier, classifier_config = load_classifier(classifier_dir, device)
    disease_class = _disease_class(settings.disease_class, classifier_config, classifier_dir)
    dataset = open_data(data, classifier_config, split)
    unknown = sorted(set(simulator or {}) - {f.name for f in fields(SimulatorConfig)})
    if unknown:
        raise MedexplainError(f"unknown simulator setting {unknown[0]!r}")
    config = SimulatorConfig(spatial_dims=dataset.spatial_dims, in_channels=dataset.in_channels, **(simulator or {}))
    images = preload(dataset, progress)
    with atomic_directory(out, overwrite=overwrite) as folder:
        network, history = train_simulator(classifier, images, config, settings, device=device, progress=progress)
        info = {
            "classifier": str(Path(classifier_dir).resolve()),
            "data": str(data),
            "split": split,
            "image_shape": list(images.tensors[0].shape[1:]),
            "disease_class": disease_class,
            "class_names": classifier_config.get("class_names", []),
            "training": settings.to_dict(),
            "history": history,
        }
        save_simulator(network, folder, **info)
        write_text(folder / "history.csv", csv_text([{k: f"{v:.6g}" for k, v in row.items()} for row in history]))
    return {"simulator": config.to_dict(), **info}


def apply_from_folder(
    simulator_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    direction: str,
    out: str | os.PathLike[str],
    *,
    classifier_dir: str | os.PathLike[str] | None = None,
    split: str | None = None,
    file_format: str = "npy",
    batch_size: int = 8,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate ``data`` with the simulator in ``simulator_dir`` and write ``out``; returns the summary.

    The classifier defaults to the one the simulator was trained for (recorded in ``simulator.json``).
    """
    network, document = load_simulator(simulator_dir, device)
    classifier_dir = classifier_dir or document.get("classifier")
    if not classifier_dir:
        raise MedexplainError(f"{simulator_dir}: simulator.json names no classifier; give `classifier_dir`",
                              parameter="classifier_dir")  # fmt: skip
    classifier, classifier_config = load_classifier(classifier_dir, device)
    dataset = open_data(data, classifier_config, split)
    disease_class = _disease_class(int(document.get("disease_class", 1)), classifier_config, classifier_dir)
    return apply_simulator(
        network, classifier, dataset, direction, out, disease_class=disease_class, batch_size=batch_size,
        file_format=file_format, overwrite=overwrite, device=device, progress=progress, source=str(data),
    )
