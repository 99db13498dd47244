"""Occlusion (Zeiler & Fergus, ECCV 2014): the drop of the score when a window of the input is replaced."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.budget import budget_field, copy_chunks, inputs_per_call
from medexplain.explain.explanation import Explanation
from medexplain.explain.incremental import cone_evaluation
from medexplain.explain.targets import Target, resolve_target


def _per_axis(value: int | tuple[int, ...], ndim: int, what: str) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) else tuple(value)
    if len(values) != ndim or min(values) < 1:
        raise MedexplainError(f"occlusion {what} must be a positive int or {ndim} positive ints, got {value!r}")
    return values


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis: every ``stride`` from 0, plus one flush with the end so all is covered."""
    last = max(size - window, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


@register_explainer("occlusion", category="perturbation")
@dataclass(frozen=True)
class Occlusion:
    """Occlusion sensitivity: ``score(x) - score(x with the window set to fill)``, all channels at once.

    Each position gets the mean drop over the windows that cover it (for ``stride == window`` that is its
    window's drop, e.g. ``sum_window w * (x - fill)`` for a linear model). ``window`` and ``stride`` are an int
    or one int per spatial axis. The ``windows x B`` occluded copies go through the model in chunks sized by the
    memory budget ``max_memory`` (bytes of activations per model call,
    :func:`medexplain.explain.budget.inputs_per_call`; ``None``: as much as one forward + backward of the batch,
    at least 64 MiB), all K targets from the same forward pass, each position's drops summed in window order
    whatever the chunking. Convolutions and max poolings are recomputed only on the cone of each window and
    reuse the clean pass's outputs elsewhere (:mod:`medexplain.explain.incremental`; eval mode). Maps
    ``(B, K, *spatial)``, signed.
    """

    window: int | tuple[int, ...] = 8
    stride: int | tuple[int, ...] = 4
    fill: float = 0.0
    max_memory: int | None = budget_field()
    name: str = field(default="occlusion", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        x = x.detach()
        b, _, *spatial = x.shape
        window = _per_axis(self.window, len(spatial), "window")
        stride = _per_axis(self.stride, len(spatial), "stride")
        window = tuple(min(w, s) for w, s in zip(window, spatial, strict=True))
        regions = [
            _window(origin, window)
            for origin in itertools.product(
                *(window_starts(s, w, st) for s, w, st in zip(spatial, window, stride, strict=True))
            )
        ]
        per_call = inputs_per_call(model, x, self.max_memory)
        per_call = per_call // b * b or per_call  # whole windows per call: copies compare with the batch in place
        with torch.no_grad(), cone_evaluation(model, x, per_call) as (logits, evaluate):
            resolved = resolve_target(logits, target)
            clean = resolved.scores(logits)
            total = x.new_zeros((b, clean.shape[1], *spatial))
            for index, sample in copy_chunks(len(regions), b, per_call, x.device):
                occluded = x[sample]
                for i, w in enumerate(index.tolist()):
                    occluded[(i, slice(None), *regions[w])] = self.fill
                drops = clean[sample] - resolved.select(sample).scores(evaluate(occluded, sample))
                for i, (w, s) in enumerate(zip(index.tolist(), sample.tolist(), strict=True)):
                    total[(s, slice(None), *regions[w])] += drops[i].view(-1, *[1] * len(spatial))
        count = x.new_zeros(spatial)
        for region in regions:
            count[region] += 1
        return Explanation(total / count, resolved.indices.cpu(), self.name, explainer_params(self), logits)


def _window(origin: tuple[int, ...], window: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(o, o + w) for o, w in zip(origin, window, strict=True))
