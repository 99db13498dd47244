"""Affine layers as LRP sees them: ``y = W x + b`` for Conv1d/2d/3d and Linear, optionally with a following
eval-mode BatchNorm folded in (canonisation, Montavon et al. 2019 sec. 10.3.1 / Kohlbrenner et al. 2020).

The folding is computed from the user's modules; the model is never copied or changed. The folded weight itself
is never stored (``W_folded^T g`` is ``W^T (scale g)``), only the BatchNorm's per-channel scale, the folded bias
and the derived weights a rule needs (``W+``, ``W + gamma W+``, ...), each one copy of the weights. They are
cached per module across calls, as long as the module lives, and recomputed as soon as any tensor they come
from is replaced, moved or changed in place (PyTorch's version counter: optimiser steps, ``load_state_dict``,
``.to()``, in-place updates under ``no_grad``). Edits through ``.data`` bypass that counter: after them, change
the parameter in place once (``p.add_(0)``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.explain.polyphase import conv_transpose_polyphase, polyphase_applies

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_TYPES: tuple[type[nn.Module], ...] = (*CONV_TYPES, nn.Linear)
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class _Stamp:
    """What identifies the values of some tensors: the objects (weakly), version counters and storage."""

    refs: tuple[weakref.ref | None, ...]
    signature: tuple[object, ...]

    @staticmethod
    def of(tensors: tuple[Tensor | None, ...], *extra: object) -> _Stamp:
        refs = tuple(None if t is None else weakref.ref(t) for t in tensors)
        return _Stamp(refs, _signature(tensors, extra))

    def matches(self, tensors: tuple[Tensor | None, ...], *extra: object) -> bool:
        same_objects = all((t is None) if r is None else (r() is t) for r, t in zip(self.refs, tensors, strict=True))
        return same_objects and self.signature == _signature(tensors, extra)


def _signature(tensors: tuple[Tensor | None, ...], extra: tuple[object, ...]) -> tuple[object, ...]:
    return (*(None if t is None else (t._version, t.data_ptr(), t.dtype, t.device) for t in tensors), *extra)


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[int | None, tuple[_Stamp, Tensor | None, Tensor | None, dict]]] = (
    weakref.WeakKeyDictionary()
)
"""Per affine module, per folded BatchNorm (``id``, or None): ``(stamp, scale, bias, derived weights)``."""


def join(parts: list[Tensor], dim: int, groups: int) -> Tensor:
    """Concatenate ``parts`` along ``dim`` group by group (``[a_1, b_1, a_2, b_2, ...]`` for groups 1, 2, ...),
    so that a grouped convolution sees each group's parts side by side."""
    dim %= parts[0].ndim
    return torch.cat([p.unflatten(dim, (groups, -1)) for p in parts], dim=dim + 1).flatten(dim, dim + 1)


def split(t: Tensor, n: int, dim: int, groups: int) -> list[Tensor]:
    """The ``n`` parts that :func:`join` put together."""
    dim %= t.ndim
    return [p.flatten(dim, dim + 1) for p in t.unflatten(dim, (groups, n, -1)).unbind(dim + 1)]


@dataclass(frozen=True)
class Affine:
    """The affine map ``y = scale * (W x) + bias`` of ``module`` (a convolution or ``nn.Linear``, weight ``W``),
    ``scale`` per output channel from a folded BatchNorm (None without one); ``weight`` is ``scale * W``.

    ``forward(x, w, b)`` applies the module's map with other parameters (e.g. ``W+``); ``transpose(g, x, w)``
    applies ``w^T`` to a gradient ``g`` shaped like the output, giving a tensor shaped like ``x`` (without ``w``,
    the layer's own ``weight``, applied as ``W^T (scale g)`` with ``g`` scaled in place, so the folded weight is
    never stored). Weights stacked
    with :meth:`block` map inputs and outputs stacked with :meth:`join_channels` (several affine maps in one
    convolution).
    """

    module: nn.Module
    unscaled: Tensor
    scale: Tensor | None
    bias: Tensor | None
    _derived: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def of(module: nn.Module, batchnorm: nn.Module | None = None) -> Affine:
        """``module`` (followed by the eval-mode ``batchnorm``, folded in), with its cached derived weights."""
        sources: tuple[Tensor | None, ...] = (module.weight, module.bias)
        eps = None
        if batchnorm is not None:
            sources += (batchnorm.weight, batchnorm.bias, batchnorm.running_mean, batchnorm.running_var)
            eps = float(batchnorm.eps)
        entries = _CACHE.setdefault(module, {})
        key = None if batchnorm is None else id(batchnorm)
        cached = entries.get(key)
        if cached is None or not cached[0].matches(sources, eps):
            with torch.no_grad():
                scale, bias = None, None if module.bias is None else module.bias.detach()
                if batchnorm is not None:
                    scale, bias = _fold(bias, batchnorm)
            cached = (_Stamp.of(sources, eps), scale, bias, {})
            entries[key] = cached
        return Affine(module, module.weight.detach(), cached[1], cached[2], cached[3])

    @property
    def weight(self) -> Tensor:
        """``scale * W``, a new tensor on each access (derived weights can be made from it in place, with no
        temporary copy); what a rule needs repeatedly it derives once, with :meth:`derived`."""
        if self.scale is None:
            return self.unscaled.clone()
        return self.unscaled * self.scale.view(-1, *[1] * (self.unscaled.ndim - 1))

    def output_channels(self, start: int, length: int) -> Affine:
        """The map to output channels ``start .. start + length - 1`` only (one group; derived weights not cached)."""
        part = [None if t is None else t.narrow(0, start, length) for t in (self.unscaled, self.scale, self.bias)]
        return Affine(self.module, *part)

    def channel_dim(self, t: Tensor) -> int:
        """The channel axis of ``t``, an input or output of this layer."""
        return t.ndim - 1 if isinstance(self.module, nn.Linear) else 1

    def derived(self, key: str, make: Callable[[], Tensor]) -> Tensor:
        """``make()``, computed once while the weights stay the same (also across calls)."""
        if key not in self._derived:
            with torch.no_grad():
                self._derived[key] = make()
        return self._derived[key]

    @property
    def weight_pos(self) -> Tensor:
        return self.derived("+", lambda: self.weight.clamp_(min=0))

    @property
    def weight_neg(self) -> Tensor:
        return self.derived("-", lambda: self.weight.clamp_(max=0))

    @property
    def groups(self) -> int:
        return getattr(self.module, "groups", 1)

    def join_channels(self, parts: list[Tensor]) -> Tensor:
        """Inputs (or outputs) of this layer side by side in one tensor, each group's channels together."""
        return join(parts, self.channel_dim(parts[0]), self.groups)

    def split_channels(self, t: Tensor, n: int) -> list[Tensor]:
        """The ``n`` tensors that :meth:`join_channels` put together."""
        return split(t, n, self.channel_dim(t), self.groups)

    def block(self, rows: list[list[Tensor]]) -> Tensor:
        """One weight for the block matrix ``rows[i][j]`` (output part i, input part j), all shaped like ``W``."""
        return join([torch.cat(row, dim=1) for row in rows], 0, self.groups)

    def sum_over_groups(self, t: Tensor) -> Tensor:
        """``t`` (shaped like the output) summed over the output channels of each group: one channel per group."""
        dim = self.channel_dim(t)
        return t.unflatten(dim, (self.groups, -1)).sum(dim + 1)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight, bias)
        return self.module._conv_forward(x, weight, bias)

    def transpose(self, grad: Tensor, x: Tensor, weight: Tensor | None = None) -> Tensor:
        module = self.module
        if weight is None:  # W_folded^T grad = W^T (scale grad): grad, a temporary of the rule, scaled in place
            weight = self.unscaled
            if self.scale is not None:
                grad = grad.mul_(self.scale.view(-1, *[1] * (grad.ndim - 1 - self.channel_dim(grad))))
        if isinstance(module, nn.Linear):
            return grad @ weight
        if module.padding_mode == "zeros" and not isinstance(module.padding, str):
            if polyphase_applies(grad, weight, module.stride, module.dilation, module.groups):
                return conv_transpose_polyphase(grad, x.shape[2:], weight, module.stride, module.padding)
            n = x.ndim - 2
            return torch.ops.aten.convolution_backward(
                grad, x, weight, None, module.stride, module.padding, module.dilation, False, [0] * n,
                module.groups, [True, False, False],
            )[0]
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.forward(leaf, weight), leaf, grad)[0]

    def fold(self, batchnorm: nn.Module) -> Affine:
        """This layer followed by the eval-mode ``batchnorm``, as one affine map."""
        return Affine.of(self.module, batchnorm)


def _fold(bias: Tensor | None, batchnorm: nn.Module) -> tuple[Tensor, Tensor]:
    """The per-channel scale and the bias of the layer followed by the eval-mode ``batchnorm``."""
    scale = torch.rsqrt(batchnorm.running_var + batchnorm.eps)
    if batchnorm.weight is not None:
        scale = scale * batchnorm.weight
    shift = -batchnorm.running_mean * scale
    if batchnorm.bias is not None:
        shift = shift + batchnorm.bias
    return scale, shift if bias is None else bias * scale + shift


def foldable(affine: Affine, batchnorm: nn.Module) -> bool:
    """Whether ``batchnorm`` uses running statistics (eval mode) and matches the layer's output channels."""
    return (
        not batchnorm.training
        and batchnorm.running_mean is not None
        and batchnorm.running_var is not None
        and batchnorm.num_features == affine.unscaled.shape[0]
    )
