"""The preprocessing a model expects, recorded with its run (or stated in its model card) and rebuilt for every
consumer of the model.

A run folder's ``config.json`` (or a model card) carries ``"preprocessing"``::

    {"channels": 3,                       # grey -> RGB (repeated) or RGB -> grey (averaged), before the rest
     "size": 128,                         # resize along every spatial axis (or one size per axis)
     "intensity": {"mean": [...], "std": [...]}      # per-channel standardisation (what training records)
               | {"window": {"center": 40, "width": 400}}   # CT window to [0, 1]
               | {"zscore": true}                    # each image standardised by its own mean and std
               | {"scale": [0, 255]}}                # a fixed value range to [0, 1]

Explaining, evaluating, auditing, analysing concepts or simulating feed the model exactly these inputs through
:func:`preprocessing_transform`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medexplain.data.transforms import (
    Channels,
    Compose,
    NormalizeIntensity,
    Resize,
    ScaleIntensity,
    Transform,
    Window,
)
from medexplain.errors import MedexplainError

INTENSITY_KINDS = ("mean/std", "window", "zscore", "scale")


def preprocessing_transform(preprocessing: Mapping[str, Any]) -> Transform:
    """The ``Sample -> Sample`` transform described by ``preprocessing`` (see the module docstring)."""
    unknown = sorted(set(preprocessing) - {"channels", "size", "intensity", "spacing"})
    if unknown:
        raise MedexplainError(f"preprocessing: unknown key {unknown[0]!r}; known: channels, size, intensity")
    if preprocessing.get("spacing") is not None:
        raise MedexplainError("preprocessing: resampling to a spacing is not supported; give a size instead")
    steps: list[Transform] = []
    if preprocessing.get("channels") is not None:
        steps.append(Channels(int(preprocessing["channels"])))
    if preprocessing.get("size") is not None:
        steps.append(Resize(preprocessing["size"]))
    intensity = preprocessing.get("intensity") or {}
    if intensity:
        steps.append(_intensity(intensity))
    return Compose(steps)


def _intensity(intensity: Mapping[str, Any]) -> Transform:
    if "mean" in intensity or "std" in intensity:
        return NormalizeIntensity(intensity["mean"], intensity["std"], channel_wise=True)
    if "window" in intensity:
        window = intensity["window"]
        return Window(float(window["center"]), float(window["width"]))
    if intensity.get("zscore"):
        return NormalizeIntensity(channel_wise=True)
    if "scale" in intensity:
        low, high = intensity["scale"]
        return ScaleIntensity((float(low), float(high)), clip=True)
    raise MedexplainError(f"preprocessing: intensity {dict(intensity)} is none of {', '.join(INTENSITY_KINDS)}")


def preprocessed_channels(preprocessing: Mapping[str, Any], raw: int) -> int:
    """The channels an image of ``raw`` channels has after ``preprocessing``."""
    return int(preprocessing["channels"]) if preprocessing.get("channels") is not None else raw
