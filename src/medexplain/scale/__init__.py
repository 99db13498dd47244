"""Scaling out with existing engines: Ray for ``explain`` / ``evaluate``, torch distributed for ``train``.

Ray is an optional extra (``pip install 'medexplain[ray]'``); only :mod:`medexplain.scale.ray_engine` imports it,
and only when ``--engine ray`` is asked for. Distributed training lives in :mod:`medexplain.train.distributed`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medexplain.errors import MedexplainError

ENGINES = ("local", "ray")
RAY_EXTRA = "pip install 'medexplain[ray]'"


def check_engine(engine: str) -> None:
    """Refuse an unknown ``--engine`` value."""
    if engine not in ENGINES:
        raise MedexplainError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")


def load_ray_engine() -> ModuleType:
    """:mod:`medexplain.scale.ray_engine`, or one clear error naming the extra when Ray is not installed."""
    try:
        importlib.import_module("ray")
    except ImportError as error:
        raise MedexplainError(f"--engine ray needs Ray, which is not installed ({error}): {RAY_EXTRA}") from None
    return importlib.import_module("medexplain.scale.ray_engine")
