"""Training data in memory: splits read once, resized, standardised with training-set statistics.

The preprocessing is recorded in the run's ``config.json`` and rebuilt by
:func:`medexplain.data.preprocessing.preprocessing_transform`, so explanations and evaluations see exactly the
inputs the model was trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor

from medexplain.data import load_dataset
from medexplain.data.sample import Sample
from medexplain.data.transforms import NormalizeIntensity, Resize
from medexplain.errors import MedexplainError

MAX_BYTES = 8 * 2**30  # refuse to hold more than this in memory; ask for a smaller size instead


@dataclass(frozen=True)
class Split:
    """One split held in memory.

    Attributes:
        images: ``(N, C, *spatial)`` float32, preprocessed.
        targets: ``(N,)`` long class labels (task "ce") or ``(N, L)`` float32 multi-label targets (task "bce").
        ids: sample ids.
    """

    images: Tensor
    targets: Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def read_split(
    source: str | os.PathLike[str],
    split: str,
    *,
    size: int | None,
    task: str,
    progress: Progress | None = None,
) -> Split:
    """Read every sample of ``split`` (resized to ``size`` when given) into one tensor."""
    # concept columns may be partly annotated; only the multi-label task ("bce") trains on them
    dataset = load_dataset(source, split, Resize(size) if size else None, partial_labels=task != "bce")
    images, targets, ids = [], [], []
    task_id = progress.add_task(f"reading {split}", total=len(dataset)) if progress is not None else None
    for index in range(len(dataset)):
        sample = dataset[index]
        if images and sample.image.shape != images[0].shape:
            raise MedexplainError(
                f"{source}: images {ids[0]!r} {tuple(images[0].shape)} and {sample.meta.get('id')!r} "
                f"{tuple(sample.image.shape)} differ in size; give a common `size`",
                parameter="size",
            )
        if index == 0 and sample.image.numel() * 4 * len(dataset) > MAX_BYTES:
            raise MedexplainError(f"{source}: split {split!r} needs more than 8 GiB in memory; use a smaller `size`",
                                  parameter="size")  # fmt: skip
        images.append(sample.image)
        targets.append(_target(sample, task, source))
        ids.append(sample.meta.get("id", str(index)))
        if progress is not None:
            progress.advance(task_id)
    if progress is not None:
        progress.remove_task(task_id)
    return Split(torch.stack(images), torch.stack(targets), ids)


def _target(sample: Sample, task: str, source: str | os.PathLike[str]) -> Tensor:
    if task == "bce":
        if sample.labels is None:
            raise MedexplainError(f"{source}: the BCE loss needs multi-label targets (label_<name> columns)")
        return sample.labels.to(torch.float32)
    if sample.label < 0:
        raise MedexplainError(
            f"{source}: sample {sample.meta.get('id')!r} has no class label (multi-label targets need `loss` 'bce')",
            parameter="loss",
        )
    return torch.tensor(sample.label, dtype=torch.long)


def standardisation(images: Tensor) -> dict[str, list[float]]:
    """Per-channel mean and (population) standard deviation of ``(N, C, *spatial)`` training images."""
    per_channel = images.transpose(0, 1).flatten(1).to(torch.float64)
    std = per_channel.std(1, correction=0)
    return {"mean": per_channel.mean(1).tolist(), "std": torch.where(std > 0, std, 1.0).tolist()}


def standardise(split: Split, intensity: dict[str, list[float]]) -> Split:
    """``split`` with :class:`NormalizeIntensity` of ``intensity`` applied to every image."""
    normalise = NormalizeIntensity(intensity["mean"], intensity["std"], channel_wise=True)
    images = torch.stack([normalise(Sample(image=image)).image for image in split.images])
    return Split(images, split.targets, split.ids)


def check_labels(splits: dict[str, Split], num_classes: int, source: str | os.PathLike[str], task: str) -> None:
    """Class labels of every split must lie in ``[0, num_classes)``; multi-label widths must equal it."""
    for name, split in splits.items():
        if task == "bce":
            if split.targets.shape[1] != num_classes:
                raise MedexplainError(
                    f"{source}: split {name!r} has {split.targets.shape[1]} labels but the model has {num_classes}"
                )
            continue
        outside = split.targets[(split.targets < 0) | (split.targets >= num_classes)]
        if outside.numel():
            raise MedexplainError(
                f"{source}: split {name!r} has label {int(outside[0])} outside the model's {num_classes} classes "
                f"(0..{num_classes - 1})"
            )


MIN_VALIDATION = 5
"""Fewer validation images than this in a class (or a label's positives or negatives) cannot choose an epoch."""


class SmallValidationWarning(UserWarning):
    """The validation split is too small to choose the saved epoch reliably."""


def small_validation(split: Split, names: list[str], task: str, source: str | os.PathLike[str]) -> str | None:
    """Why ``split`` (the validation split) is too small to select an epoch, or ``None``: a class (``names``, task
    "ce") with fewer than :data:`MIN_VALIDATION` images, or a label (task "bce") with fewer positives or negatives.
    With one negative image, every epoch that ranks it lowest reaches AUROC 1 and the first of them is saved."""
    if task == "bce":
        positives = split.targets.sum(0)
        counts = {f"{name} (positives)": int(p) for name, p in zip(names, positives, strict=True)}
        counts |= {f"{name} (negatives)": len(split) - int(p) for name, p in zip(names, positives, strict=True)}
    else:
        counts = {name: int((split.targets == k).sum()) for k, name in enumerate(names)}
    small = {name: n for name, n in counts.items() if n < MIN_VALIDATION}
    if not small:
        return None
    listed = ", ".join(f"{name}: {n}" for name, n in small.items())
    return (f"{source}: the validation split has fewer than {MIN_VALIDATION} images of {listed}; the epoch it "
            "selects (and the saved weights) may be chance: use a larger validation split")  # fmt: skip


def dataset_info(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Class names, label names and the resolved path of a data source (nothing decoded)."""
    dataset = load_dataset(source, partial_labels=True)  # names only; read_split checks the labels it trains on
    return {
        "data": str(Path(source).resolve()),
        "class_names": list(dataset.class_names),
        "label_names": list(dataset.label_names),
        "num_classes": dataset.num_classes,
    }
