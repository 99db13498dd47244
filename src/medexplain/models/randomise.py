"""Models with their weights re-drawn: the reference of the model randomisation check (Adebayo et al., NeurIPS
2018). An explanation that does not change when the weights it should depend on are destroyed explains the image,
not the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, from the output side to the input side (top down)."""
    names = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    return names[::-1]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-draw the parameters of ``module`` (its own, not its children's), seeded: ``reset_parameters`` under a
    forked RNG, or a normal draw with each parameter's own standard deviation for modules without it."""
    devices = sorted({p.device.index or 0 for p in module.parameters(recurse=False) if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        with torch.no_grad():
            for parameter in module.parameters(recurse=False):
                std = float(parameter.std()) if parameter.numel() > 1 else 0.0
                parameter.copy_(torch.randn(parameter.shape) * (std or 1.0))


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` (same architecture, mode and buffers) whose every parameter layer is re-drawn; the
    ``i``-th layer from the top with seed ``seed + i``. ``model`` itself is untouched."""
    copied = copy.deepcopy(model)
    modules = dict(copied.named_modules())
    for step, name in enumerate(parameter_layers(copied)):
        randomise_layer(modules[name], seed + step)
    return copied
