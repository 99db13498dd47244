"""The preprocessing a model expects, recorded with its run and rebuilt for every consumer of the run.

A run folder's ``config.json`` carries ``"preprocessing": {"size": ..., "intensity": {"mean": [...], "std":
[...]}}``; explaining, evaluating, analysing concepts or simulating feed the model exactly the inputs it was
trained on through :func:`preprocessing_transform`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medexplain.data.transforms import Compose, NormalizeIntensity, Resize, Transform


def preprocessing_transform(preprocessing: Mapping[str, Any]) -> Transform:
    """The ``Sample -> Sample`` transform described by a run's ``config["preprocessing"]``: resize to ``size``
    along every spatial axis, then standardise each channel with ``intensity["mean"]`` / ``intensity["std"]``."""
    steps: list[Transform] = []
    if preprocessing.get("size") is not None:
        steps.append(Resize(preprocessing["size"]))
    intensity = preprocessing.get("intensity", {})
    if intensity:
        steps.append(NormalizeIntensity(intensity["mean"], intensity["std"], channel_wise=True))
    return Compose(steps)
