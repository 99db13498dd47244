"""Temporary evaluation mode: run a model in eval mode for a block and give every submodule its own mode back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; each submodule's ``training`` flag is restored on exit, also after
    an exception (a model whose parts were in different modes gets exactly those modes back)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.train(mode)
