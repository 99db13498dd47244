"""Scaling out with existing engines: Ray for the workflows (explain, evaluate), torch distributed for training.

Ray is an optional extra (``pip install 'medexplain[ray]'``); only :mod:`medexplain.scale.ray_engine` imports it,
and only when the Ray engine is asked for. Distributed training lives in :mod:`medexplain.train.distributed`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medexplain.errors import MedexplainError
from medexplain.workflows.executors import Executor, LocalExecutor

ENGINES = ("local", "ray")
RAY_EXTRA = "pip install 'medexplain[ray]'"


def load_ray_engine() -> ModuleType:
    """:mod:`medexplain.scale.ray_engine`, or one clear error naming the extra when Ray is not installed."""
    try:
        importlib.import_module("ray")
    except ImportError as error:
        raise MedexplainError(f"`engine` ray needs Ray, which is not installed ({error}): {RAY_EXTRA}",
                              parameter="engine") from None  # fmt: skip
    return importlib.import_module("medexplain.scale.ray_engine")


def make_executor(
    engine: str = "local", *, address: str | None = None, workers: int | None = None, device: str = "cpu"
) -> Executor:
    """The executor of ``engine``: ``"local"`` (this process) or ``"ray"`` (a pool of Ray actors, see
    :class:`medexplain.scale.ray_engine.RayExecutor` for ``address``, ``workers`` and ``device``)."""
    if engine not in ENGINES:
        raise MedexplainError(f"`engine`: expected one of {', '.join(ENGINES)}, got {engine!r}", parameter="engine")
    if engine == "local":
        return LocalExecutor()
    return load_ray_engine().RayExecutor(address=address, workers=workers, device=device)
