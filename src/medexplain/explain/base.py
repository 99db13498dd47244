"""The explainer protocol and the explainer registry."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.explanation import Explanation
from medexplain.explain.targets import Target
from medexplain.registry import Registry


@runtime_checkable
class Explainer(Protocol):
    """A frozen dataclass of hyperparameters, called as ``explainer(model, x, target)``.

    ``x`` is ``(B, C, *spatial)``; the result holds maps ``(B, K, *spatial)``. An explainer never leaves
    hooks on the model and never changes ``model.training``.
    """

    name: str

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation: ...


EXPLAINERS: Registry[type] = Registry("explainer")


@contextmanager
def unchanged_state(model: nn.Module) -> Iterator[None]:
    """Give ``model`` its buffers back after the block, also after an exception.

    A model (or part of it) in training mode updates its BatchNorm running statistics on every forward pass;
    explaining it must leave them as they were. Models entirely in eval mode change no buffer: nothing is copied.
    """
    if not any(module.training for module in model.modules()):
        yield
        return
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def register_explainer(name: str, **metadata: Any):
    """Class decorator adding an explainer dataclass to the registry under ``name``.

    The registered class's call runs inside :func:`unchanged_state`, so no explainer changes a model's state.
    ``metadata``: ``category``; ``needs`` (``"evidence_map"``, ``"attention"``: the explainer raises on a model
    without it); ``attention`` (``"made-for"``: built for transformers, ``"refused"``: refuses a model with
    attention modules).
    """

    def add(cls: type) -> type:
        call = cls.__call__

        @functools.wraps(call)
        def explain(self: Any, model: nn.Module, x: Tensor, target: Any = None) -> Explanation:
            with unchanged_state(model):
                return call(self, model, x, target)

        cls.__call__ = explain
        EXPLAINERS.add(name, cls, **metadata)
        return cls

    return add


def create_explainer(name: str, **params: Any) -> Explainer:
    """Build the registered explainer ``name`` with hyperparameters ``params``.

    Unknown names and unknown parameters raise :class:`MedexplainError` listing the valid choices.
    """
    cls = EXPLAINERS.get(name)
    if dataclasses.is_dataclass(cls):
        valid = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise MedexplainError(
                f"explainer {name!r} has no parameter {unknown[0]!r}; its parameters: {', '.join(sorted(valid))}"
            )
    return cls(**params)


def available() -> list[str]:
    """Names of the registered explainers."""
    return EXPLAINERS.available()


def explainer_params(explainer: object) -> dict[str, Any]:
    """The hyperparameters of a dataclass explainer that reproduce its maps, as plain values (tensors become their
    shape description); fields marked ``reproduces_maps=False`` (the memory budget) are left out."""
    params: dict[str, Any] = {}
    for f in dataclasses.fields(explainer):  # type: ignore[arg-type]
        if not f.metadata.get("reproduces_maps", True):
            continue
        value = getattr(explainer, f.name)
        if isinstance(value, Tensor):
            value = f"tensor{tuple(value.shape)}"
        params[f.name] = value
    return params
