"""Memory budgets: how many inputs one model call may take.

Methods that send many perturbed copies or path points of their input through the model (integrated gradients,
SmoothGrad, occlusion, the faithfulness, robustness and sanity metrics) cut them into chunks whose size comes
from one budget in bytes, ``max_memory``: the activations that one model call may keep for its backward pass.
An input's share is measured, not guessed: autograd's saved tensors of one forward pass on one input
(parameters excluded, the input included), so the rule holds for any architecture, 2D or 3D. The resident
peak of a forward + backward is about 1-1.7x its saved activations (gradients in flight and workspaces; see
``benchmarks/memory.py``), and a forward pass alone needs less, so a budget bounds every method's peak to a
fixed multiple of one forward + backward of the batch it was given.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from dataclasses import field
from typing import Any

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError

MINIMUM_DEFAULT_BUDGET = 64 * 2**20
"""The default budget never goes below 64 MiB, so small inputs still reach the model in large batches."""

_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def activation_bytes(model: nn.Module, item: Tensor) -> int:
    """Bytes of activations that a forward + backward of ``model`` keeps for one input ``item`` ``(1, C, *spatial)``.

    The storages autograd saves during one forward pass (each counted once, the model's parameters and
    buffers not at all), plus the input. Measured once per model, input shape, dtype, device and mode, and
    remembered while the model lives. The measuring pass runs under a forked random state and restores the
    buffers, so it changes nothing (dropout draws, BatchNorm statistics in training mode).
    """
    key = (tuple(item.shape[1:]), item.dtype, item.device, model.training)
    measured = _MEASURED.setdefault(model, {})
    if key not in measured:
        own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        saved: dict[int, int] = {}

        def pack(tensor: Tensor) -> Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in own:
                saved[storage.data_ptr()] = storage.nbytes()
            # detached: a saved output kept with its grad_fn forms a reference cycle with that node, and the
            # pass's activations would stay allocated until the garbage collector runs (one more forward's worth)
            return tensor.detach()

        probe = item[:1].detach().clone().requires_grad_(True)
        buffers = [(buffer, buffer.clone()) for buffer in model.buffers()] if model.training else []
        devices = [item.device.index or 0] if item.device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=devices),
            torch.enable_grad(),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        ):
            model(probe)
        with torch.no_grad():
            for buffer, copy in buffers:
                buffer.copy_(copy)
        saved.pop(probe.untyped_storage().data_ptr(), None)
        measured[key] = sum(saved.values()) + probe.nbytes
    return measured[key]


def budget_field() -> Any:
    """The ``max_memory`` field of an explainer dataclass (default ``None``). It is not among the parameters that
    reproduce the maps (:func:`~medexplain.explain.base.explainer_params` leaves it out): results do not depend
    on the chunking, so maps written under one budget continue under another."""
    return field(default=None, metadata={"reproduces_maps": False})


def check_budget(max_memory: int | None) -> None:
    """``max_memory`` must be ``None`` or a positive number of bytes."""
    if max_memory is not None and (isinstance(max_memory, bool) or not max_memory > 0):
        raise MedexplainError(f"`max_memory` must be a positive number of bytes, got {max_memory!r}",
                              parameter="max_memory")  # fmt: skip


def inputs_per_call(model: nn.Module, x: Tensor, max_memory: int | None = None) -> int:
    """How many inputs shaped like one of ``x`` (B, C, *spatial) one call of ``model`` may take within
    ``max_memory`` bytes of activations (:func:`activation_bytes`); at least one.

    ``max_memory=None`` allows what one forward + backward of the whole batch ``x`` needs, and at least
    :data:`MINIMUM_DEFAULT_BUDGET`: a method then needs no more than a fixed multiple of the memory its input
    batch needs anyway.
    """
    check_budget(max_memory)
    per_input = activation_bytes(model, x[:1])
    budget = max(MINIMUM_DEFAULT_BUDGET, per_input * len(x)) if max_memory is None else max_memory
    return max(1, int(budget // per_input))


def copy_chunks(copies: int, batch: int, per_call: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """``(copy, sample)`` index tensors of ``copies`` perturbed copies of each of ``batch`` samples, ``per_call``
    pairs at a time, copy-major (all samples of copy 0, then of copy 1, ...)."""
    for pairs in torch.arange(copies * batch, device=device).split(per_call):
        yield pairs // batch, pairs % batch


def add_in_order(total: Tensor, values: Tensor, copy: Tensor, sample: Tensor) -> None:
    """``total[sample] += values`` (``values`` ``(N, ...)`` from one chunk of :func:`copy_chunks`), one copy at a
    time in increasing order: every sample's sum is taken in the same order, whatever the chunking."""
    bounds = [0, *(torch.nonzero(copy[1:] != copy[:-1]).flatten() + 1).tolist(), len(copy)]
    for start, stop in itertools.pairwise(bounds):
        first = int(sample[start])  # a copy's samples are consecutive
        total[first : first + stop - start] += values[start:stop]
