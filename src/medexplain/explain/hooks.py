"""The only place in medexplain that registers hooks on a model: every hook lives inside a ``with`` block.

Inspired by how Zennit scopes its hooks, written for medexplain. ``Hooks`` removes every handle it made when
the block ends, also when it ends with an exception, so no explainer can leave a model modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from medexplain.errors import MedexplainError

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Hooks:
    """Context manager that owns hook registrations and removes all of them on exit.

    Example::

        with Hooks() as hooks:
            hooks.forward(layer, lambda module, args, output: ...)
            model(x)
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def forward(self, module: nn.Module, fn: Callable[..., object], *, with_kwargs: bool = False) -> None:
        """``fn(module, args, output)`` (``fn(module, args, kwargs, output)`` with ``with_kwargs``); a non-None
        return replaces the output."""
        self._handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def forward_pre(self, module: nn.Module, fn: Callable[..., object]) -> None:
        """``fn(module, args)``; a non-None return replaces the positional arguments."""
        self._handles.append(module.register_forward_pre_hook(fn))

    def backward(self, module: nn.Module, fn: Callable[..., object]) -> None:
        """``fn(module, grad_input, grad_output)``; a non-None return replaces ``grad_input``."""
        self._handles.append(module.register_full_backward_hook(fn))

    def tensor(self, tensor: Tensor, fn: Callable[[Tensor], Tensor | None]) -> None:
        """A gradient hook on one tensor (removed on exit like the others)."""
        self._handles.append(tensor.register_hook(fn))


INPUT_SUFFIX = ":input"
"""A layer name ending in this names the first positional input of the module instead of its output."""


@dataclass
class Captured:
    """The output (or input) of one layer in the last forward pass, kept in the autograd graph."""

    output: Tensor | None = None


@contextmanager
def capture_output(model: nn.Module, layer: str | nn.Module) -> Iterator[Captured]:
    """Record the output of ``layer`` (a module or its dotted name in ``model``) during forward passes; for a name
    ending in ``":input"`` (:data:`INPUT_SUFFIX`), the module's first positional input."""
    wants_input = isinstance(layer, str) and layer.endswith(INPUT_SUFFIX)
    if isinstance(layer, str):
        module = find_module(model, layer.removesuffix(INPUT_SUFFIX) if wants_input else layer)
    else:
        module = layer
    captured = Captured()

    def keep(_module: nn.Module, _args: object, output: Tensor) -> None:
        captured.output = output

    def keep_input(_module: nn.Module, args: tuple) -> None:
        captured.output = args[0] if args else None

    with Hooks() as hooks:
        if wants_input:
            hooks.forward_pre(module, keep_input)
        else:
            hooks.forward(module, keep)
        yield captured


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name raises an error that lists the valid names."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    valid = [n for n in modules if n]
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
    raise MedexplainError(f"model has no layer {name!r}; valid layers: {shown}")


def last_conv_block(model: nn.Module) -> str:
    """Name of the default layer for CAM methods: the top-level child that holds the last convolution.

    For ``model.layer4[1].conv2`` that is ``"layer4"``, the output of the last convolutional stage as
    Grad-CAM prescribes, rather than one convolution inside a block (before its residual addition).
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):
            last = name
    if last is None:
        raise MedexplainError("model has no convolutional layer; pass the layer to explain by name")
    return last.split(".")[0]


def hook_count(model: nn.Module) -> int:
    """Number of hooks of any kind attached to ``model`` and its submodules (contract tests assert 0)."""
    total = 0
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            total += len(getattr(module, attr, {}))
    return total
