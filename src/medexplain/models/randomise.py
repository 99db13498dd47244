"""Models with their weights re-drawn: the reference of the model randomisation check (Adebayo et al., NeurIPS
2018). An explanation that does not change when the weights it should depend on are destroyed explains the image,
not the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


def parameter_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the modules that own parameters, from the output side to the input side (top down).

    With an input ``x`` ``(B, C, *spatial)``: the modules that a forward pass of ``x`` calls, in reverse order of
    their first call (a module built but never called, e.g. a transformer block's unused cross-attention norm,
    changes nothing when re-drawn and is left out); the pass runs without gradients and changes no buffer.
    Without: every such module, in reverse registration order.
    """
    owners = {module: name for name, module in model.named_modules()
              if any(True for _ in module.parameters(recurse=False))}  # fmt: skip
    if x is None:
        return list(owners.values())[::-1]
    called: dict[str, None] = {}
    handles = [module.register_forward_pre_hook(lambda _m, _a, name=name: called.setdefault(name))
               for module, name in owners.items()]  # fmt: skip
    training = any(module.training for module in model.modules())  # only then does a forward change buffers
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()] if training else []
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
    return list(called)[::-1]


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
