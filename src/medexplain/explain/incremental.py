"""Evaluate a model on copies of an input that differ from it in a small region, recomputing only what changed.

An occluded copy differs from its clean input inside one window. A convolution or max pooling is local: its
output differs from the clean output only in the *cone* of the changed region (the outputs whose receptive
field reaches it), so the clean output can be reused everywhere else. :class:`ConeEvaluation` records the input
and output of every convolution and max pooling of the model on the clean batch; on a batch of perturbed copies
it finds, at each such layer, the bounding box of the positions where the layer's input differs from the clean
sample's (whatever happened before: windows, their cones through earlier layers, also functional operations
between modules), computes the layer on the crop that covers its cone only, and pastes that into the clean
output. Layers whose cone covers most of their output run as usual. Results equal the full forward pass up to
float rounding (the crop is the same arithmetic on the same values).

Deep layers see the change everywhere (a ResNet's cone covers its stride-32 maps), so the saving is in the
first, high-resolution layers, where most of a CNN's time goes on a CPU (the stem, the max pooling and the
first stages).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.explain.hooks import Hooks

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
FULL_SHARE = 0.5
"""A layer whose cone covers more than this share of its output runs on the whole input."""
FULL_RUNS = 2
"""After running on the whole input for this many calls in a row, a layer stops looking for changes (always safe:
only the saving is lost); deep layers, whose cone always covers the whole map, then cost nothing extra."""


def _eligible(module: nn.Module) -> bool:
    """Plain convolutions with zero padding and max poolings without ceil mode or indices, and no hooks of others."""
    if module._forward_hooks or module._forward_pre_hooks:
        return False
    if type(module) in _CONV:
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if type(module) in _POOL:
        return not module.ceil_mode and not module.return_indices
    return False


def _geometry(module: nn.Module, dims: int) -> tuple[tuple[int, ...], ...]:
    """``(kernel, stride, padding, dilation)`` per spatial axis."""

    def per_axis(value: int | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(value) if isinstance(value, tuple | list) else (value,) * dims

    stride = module.stride if module.stride is not None else module.kernel_size
    return tuple(per_axis(v) for v in (module.kernel_size, stride, module.padding, module.dilation))


@dataclass
class _Record:
    inputs: Tensor  # clean input of this layer call (B, C, *spatial)
    output: Tensor  # its clean output (B, C', *spatial')
    full_runs: int = 0  # consecutive calls that ran on the whole input


class ConeEvaluation:
    """``evaluate(copies, samples)``: the model output on ``copies`` (N, C, *spatial), perturbed copies of
    ``clean[samples]``, computing convolutions and max poolings only on the cones of the changes.

    Built by :func:`cone_evaluation`, which also returns the clean output. Copies ordered copy-major over the
    whole batch (``samples`` = 0..B-1, 0..B-1, ...) are compared with the clean batch by broadcasting; any other
    order by gathering. The model runs in eval mode only (batch statistics would tie the copies to each other);
    in training mode every layer runs as usual. A layer whose cone covers more than ``full_share`` of its output
    runs on the whole input.

    ``positions[layer]`` counts, over every evaluation, the output positions (copies x spatial) the layer computed
    and those a full pass would have computed: what the cones saved.
    """

    def __init__(self, model: nn.Module, hooks: Hooks, clean: Tensor, full_share: float = FULL_SHARE) -> None:
        self.model, self.dims, self.batch, self.full_share = model, clean.ndim - 2, len(clean), full_share
        self.positions: dict[nn.Module, list[int]] = {}
        self.records: dict[tuple[int, int], _Record] = {}
        self.calls: dict[int, int] = {}
        self.samples, self.aligned, self.recording = None, False, True
        self.plan: tuple | None = None
        if not model.training:
            for module in model.modules():
                if _eligible(module):
                    hooks.forward_pre(module, self._before)
                    hooks.forward(module, self._after)

    def record(self, clean: Tensor, per_call: int) -> Tensor:
        """The model's output on ``clean``, ``per_call`` inputs at a time, recording every eligible layer."""
        self.parts: dict[tuple[int, int], tuple[list[Tensor], list[Tensor]]] = {}
        outputs = []
        for part in clean.split(per_call):
            self.calls = {}
            outputs.append(self.model(part))
        chunks = len(outputs)
        self.records = {key: _Record(torch.cat(inputs), torch.cat(outputs_)) for key, (inputs, outputs_) in
                        self.parts.items() if len(inputs) == chunks}  # fmt: skip
        del self.parts
        self.recording = False
        return torch.cat(outputs)

    def __call__(self, copies: Tensor, samples: Tensor) -> Tensor:
        self.samples, self.calls = samples, {}
        n = len(samples)
        self.aligned = n % self.batch == 0 and torch.equal(samples, torch.arange(n, device=samples.device) % self.batch)
        return self.model(copies)

    def _before(self, module: nn.Module, args: tuple) -> tuple | None:
        key = (id(module), self.calls.get(id(module), 0))
        self.calls[id(module)] = key[1] + 1
        self.plan = None
        record = self.records.get(key)
        if self.recording or record is None or len(args) != 1 or not isinstance(args[0], Tensor):
            return None
        if record.full_runs >= FULL_RUNS:
            return None
        self.plan = self._plan(module, args[0], record)
        record.full_runs = 0 if self.plan is not None else record.full_runs + 1
        if self.plan is None:
            return None
        kernel, _, padding, dilation = _geometry(module, self.dims)
        smallest = [max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip(kernel, padding, dilation, strict=True)]
        return (args[0].new_zeros((1, args[0].shape[1], *smallest)),)  # the layer itself does (almost) nothing

    def _after(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        key = (id(module), self.calls[id(module)] - 1)
        if self.recording:
            if len(args) == 1 and isinstance(args[0], Tensor) and isinstance(output, Tensor):
                parts = self.parts.setdefault(key, ([], []))
                parts[0].append(args[0].clone())  # clones: later in-place operations would change them
                parts[1].append(output.clone())
            return None
        if self.plan is None:
            self._count(module, output, None)
            return None
        plan, self.plan = self.plan, None
        output = self._compute(module, *plan, self.records[key])
        self._count(module, output, plan[2])
        return output

    def _count(self, module: nn.Module, output: Tensor, lengths: list[int] | None) -> None:
        full = len(output) * math.prod(output.shape[2:])
        counts = self.positions.setdefault(module, [0, 0])
        counts[0] += full if lengths is None else len(output) * math.prod(lengths)
        counts[1] += full

    def _per_copy(self, clean: Tensor) -> Tensor:
        """``clean[samples]`` (N, ...) from a clean batch (B, ...)."""
        if self.aligned:
            return clean.repeat(len(self.samples) // self.batch, *[1] * (clean.ndim - 1))
        return clean[self.samples]

    def _changed(self, inputs: Tensor, clean: Tensor) -> Tensor:
        """``(N, *spatial)`` bool: where a copy's channels differ from its clean sample's."""
        if self.aligned:
            grouped = inputs.view(-1, *clean.shape)
            return (grouped != clean).any(2).view(len(inputs), *inputs.shape[2:])
        return (inputs != clean[self.samples]).any(1)

    def _plan(self, module: nn.Module, inputs: Tensor, record: _Record) -> tuple | None:
        """The output box ``(starts (N, dims) list, lengths)`` per copy that covers the cone of its changes, or
        None when the layer should run on the whole input."""
        if inputs.shape[1:] != record.inputs.shape[1:]:
            return None
        changed = self._changed(inputs, record.inputs)
        kernel, stride, padding, dilation = _geometry(module, self.dims)
        out_sizes = record.output.shape[2:]
        starts, lengths = [], []
        for axis in range(self.dims):
            others = [1 + a for a in range(self.dims) if a != axis]
            along = changed.any(dim=others) if others else changed  # (N, size)
            size = along.shape[1]
            first = along.int().argmax(1)
            last = size - 1 - along.flip(1).int().argmax(1)
            reach = dilation[axis] * (kernel[axis] - 1)
            # outputs o with o * stride - padding <= last and o * stride - padding + reach >= first
            low = torch.div(first + padding[axis] - reach + stride[axis] - 1, stride[axis], rounding_mode="floor")
            high = torch.div(last + padding[axis], stride[axis], rounding_mode="floor") + 1
            unchanged = ~along.any(1)  # an unchanged copy has an empty cone
            low = low.clamp(min=0).masked_fill(unchanged, 0)
            high = high.clamp(max=out_sizes[axis]).masked_fill(unchanged, 0)
            length = int((high - low).clamp(min=1).max())
            starts.append(torch.minimum(low, torch.tensor(out_sizes[axis] - length)))
            lengths.append(length)
        if math.prod(lengths) > self.full_share * math.prod(out_sizes):
            return None
        return inputs, torch.stack(starts, 1).tolist(), lengths

    def _compute(self, module: nn.Module, inputs: Tensor, starts: list, lengths: list, record: _Record) -> Tensor:
        """The layer's output: the clean sample's, with each copy's box computed from its crop of ``inputs``."""
        kernel, stride, padding, dilation = _geometry(module, self.dims)
        is_conv = type(module) in _CONV
        groups: dict[tuple[int, ...], list[int]] = {}  # copies with the same box (one window, several samples)
        for i, box in enumerate(starts):
            groups.setdefault(tuple(box), []).append(i)
        crops = []
        for box, members in groups.items():
            # the box's receptive field, in the coordinates of the input padded by `padding`
            first = [o * s for o, s in zip(box, stride, strict=True)]
            span = [(n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(lengths, stride, dilation, kernel, strict=True)]
            bounds = zip(first, span, padding, inputs.shape[2:], strict=True)
            inside = [(max(a - p, 0), min(a + w - p, n)) for a, w, p, n in bounds]
            crop = inputs[(members, slice(None), *[slice(lo, hi) for lo, hi in inside])]
            pad = [(lo - a + p, a + w - p - hi) for (lo, hi), a, w, p in zip(inside, first, span, padding, strict=True)]
            if any(before or after for before, after in pad):
                crop = F.pad(crop, [n for axis in reversed(pad) for n in axis], value=0.0 if is_conv else -math.inf)
            crops.append(crop)
        crops = torch.cat(crops) if len(crops) > 1 else crops[0]
        if is_conv:
            conv = getattr(F, f"conv{self.dims}d")
            cone = conv(crops, module.weight, module.bias, stride, 0, dilation, module.groups)
        else:
            cone = getattr(F, f"max_pool{self.dims}d")(crops, kernel, stride, 0, dilation)
        output = self._per_copy(record.output)
        done = 0
        for box, members in groups.items():
            region = (members, slice(None), *[slice(o, o + n) for o, n in zip(box, lengths, strict=True)])
            output[region] = cone[done : done + len(members)]
            done += len(members)
        return output


@contextmanager
def cone_evaluation(
    model: nn.Module, clean: Tensor, per_call: int | None = None, full_share: float = FULL_SHARE
) -> Iterator[tuple[Tensor, ConeEvaluation]]:
    """``(model(clean), evaluate)``: the clean output (``per_call`` inputs per model call), recorded layer by layer,
    and a :class:`ConeEvaluation` for perturbed copies of ``clean`` (B, C, *spatial). Hooks live only inside the
    block; run under no_grad."""
    with Hooks() as hooks:
        evaluate = ConeEvaluation(model, hooks, clean, full_share)
        yield evaluate.record(clean, per_call or len(clean)), evaluate
