"""Data layer: readers for medical image formats, datasets from manifests and MedMNIST, explicit transforms.

Every image is a float32 tensor ``(C, *spatial)``: ``(C, H, W)`` in 2-D, ``(C, D, H, W)`` in 3-D.

>>> from medexplain.data import load_dataset, collate
>>> from medexplain.data.transforms import Compose, Resize, ScaleIntensity
>>> data = load_dataset("busi", split="train", transform=Compose([Resize(128), ScaleIntensity()]))
>>> batch = collate([data[0], data[1]])
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medexplain.data.dataset import ImageDataset, ManifestDataset, MedMNISTDataset, load_dataset
from medexplain.data.readers import read_image
from medexplain.data.sample import Batch, Sample, collate

__all__ = [
    "Batch",
    "ImageDataset",
    "ManifestDataset",
    "MedMNISTDataset",
    "Sample",
    "collate",
    "load_dataset",
    "read_image",
    "synth",
]


def __getattr__(name: str) -> ModuleType:
    # ``medexplain.data.synth`` is imported on first use: the generators are not needed to read data.
    if name == "synth":
        return importlib.import_module("medexplain.data.synth")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
