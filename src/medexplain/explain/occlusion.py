"""Occlusion (Zeiler & Fergus, ECCV 2014): the drop of the score when a window of the input is replaced."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
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
    or one int per spatial axis. Perturbed copies are evaluated ``batch_size`` at a time (all K targets from
    the same forward pass), so memory stays bounded. Maps ``(B, K, *spatial)``, signed.
    """

    window: int | tuple[int, ...] = 8
    stride: int | tuple[int, ...] = 4
    fill: float = 0.0
    batch_size: int = 64
    name: str = field(default="occlusion", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        x = x.detach()
        b, c, *spatial = x.shape
        window = _per_axis(self.window, len(spatial), "window")
        stride = _per_axis(self.stride, len(spatial), "stride")
        window = tuple(min(w, s) for w, s in zip(window, spatial, strict=True))
        origins = list(
            itertools.product(*(window_starts(s, w, st) for s, w, st in zip(spatial, window, stride, strict=True)))
        )
        with torch.no_grad():
            logits = model(x)
            resolved = resolve_target(logits, target)
            clean = resolved.scores(logits)
            k = clean.shape[1]
            total = x.new_zeros((b, k, *spatial))
            count = x.new_zeros(spatial)
            per_chunk = max(1, self.batch_size // b)
            for start in range(0, len(origins), per_chunk):
                chunk = origins[start : start + per_chunk]
                occluded = x.unsqueeze(0).repeat(len(chunk), *[1] * x.ndim)
                for i, origin in enumerate(chunk):
                    occluded[(i, slice(None), slice(None), *_window(origin, window))] = self.fill
                scores = resolved.repeat(len(chunk)).scores(model(occluded.reshape(-1, c, *spatial)))
                drops = clean.unsqueeze(0) - scores.reshape(len(chunk), b, k)
                for i, origin in enumerate(chunk):
                    region = (slice(None), slice(None), *_window(origin, window))
                    total[region] += drops[i].view(b, k, *[1] * len(spatial))
                    count[_window(origin, window)] += 1
        return Explanation(total / count, resolved.indices.cpu(), self.name, explainer_params(self), logits)


def _window(origin: tuple[int, ...], window: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(o, o + w) for o, w in zip(origin, window, strict=True))
