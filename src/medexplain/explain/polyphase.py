"""The input gradient of a strided convolution with few input channels, as one stride-1 convolution.

On CPU, PyTorch's ``W^T g`` for a convolution like a ResNet stem (7x7, stride 2, 1-3 input channels) takes
about ten times as long as the convolution itself, and 2-3x as long as the form below. Split by output phase
(the position modulo the stride), the transposed convolution is ``prod(stride)`` stride-1 correlations of
``g`` with sub-kernels of ``W``; stacked as output channels they are one ordinary convolution, whose outputs
are interleaved back (the polyphase decomposition, e.g. Vaidyanathan, "Multirate Systems and Filter Banks",
1993, ch. 4). The LRP rules use it for their transposed convolutions, the gradient methods for a first
layer of that kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.explain.hooks import Hooks

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
MAX_PHASE_CHANNELS = 32
"""Up to ``prod(stride) * input channels`` output channels the stride-1 convolution is faster (measured)."""


def polyphase_applies(
    grad: Tensor, weight: Tensor, stride: Sequence[int], dilation: Sequence[int], groups: int
) -> bool:
    """Whether :func:`conv_transpose_polyphase` is the faster way here (CPU, strided, few input channels)."""
    return (
        grad.device.type == "cpu"
        and groups == 1
        and max(stride) > 1
        and all(d == 1 for d in dilation)
        and math.prod(stride) * weight.shape[1] <= MAX_PHASE_CHANNELS
    )


def conv_transpose_polyphase(
    grad: Tensor, input_size: Sequence[int], weight: Tensor, stride: Sequence[int], padding: Sequence[int]
) -> Tensor:
    """``W^T grad`` for ``y = conv(x, W, stride, padding)`` (no dilation, one group).

    Args:
        grad: ``(B, C_out, *out_spatial)``.
        input_size: the spatial size of ``x``.
        weight: ``(C_out, C_in, *kernel)``.

    Returns:
        ``(B, C_in, *input_size)``, equal to ``torch.ops.aten.convolution_backward``'s input gradient.

    An input position ``i`` with ``i + padding = q * stride + r`` receives ``sum_j g[q - j] W[r + stride j]``:
    for each phase ``r`` a correlation of ``g`` with the reversed sub-kernel ``W[r::stride]``.
    """
    dims = weight.ndim - 2
    c_out, c_in, *kernel = weight.shape
    taps = [-(-k // s) for k, s in zip(kernel, stride, strict=True)]  # sub-kernel length per axis
    phases_out = [-(-(n + p) // s) for n, p, s in zip(input_size, padding, stride, strict=True)]
    # sub-kernels: W zero-padded to taps * stride, axis a split into (tap, phase), taps reversed
    padded = F.pad(weight, _pad_spec([(0, t * s - k) for t, s, k in zip(taps, stride, kernel, strict=True)]))
    split = padded.reshape(c_out, c_in, *[n for t, s in zip(taps, stride, strict=True) for n in (t, s)])
    split = split.flip([2 + 2 * a for a in range(dims)])
    phase_axes = [3 + 2 * a for a in range(dims)]
    tap_axes = [2 + 2 * a for a in range(dims)]
    kernels = split.permute(*phase_axes, 1, 0, *tap_axes).reshape(-1, c_out, *taps)
    sizes = grad.shape[2:]
    spec = [(t - 1, q - o) for t, q, o in zip(taps, phases_out, sizes, strict=True)]
    out = _CONV[dims](F.pad(grad, _pad_spec(spec)), kernels)  # (B, phases * C_in, *phases_out)
    out = out.reshape(grad.shape[0], *stride, c_in, *phases_out)
    interleave = [0, dims + 1, *[axis for a in range(dims) for axis in (dims + 2 + a, 1 + a)]]
    full_size = [q * s for q, s in zip(phases_out, stride, strict=True)]
    full = out.permute(interleave).reshape(grad.shape[0], c_in, *full_size)
    return full[(slice(None), slice(None), *[slice(p, p + n) for p, n in zip(padding, input_size, strict=True)])]


def _pad_spec(per_axis: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument (last axis first) from ``(before, after)`` per axis, first axis first."""
    return [n for before_after in reversed(per_axis) for n in before_after]


class _PolyphaseInputGradient(torch.autograd.Function):
    """The output of ``module`` (a convolution reading the model input) with its input gradient by polyphase."""

    @staticmethod
    def forward(ctx, inputs: Tensor, holder: list[Tensor], module: nn.Module) -> Tensor:  # type: ignore[override]
        ctx.module, ctx.input_size = module, inputs.shape[2:]
        return holder[0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        module = ctx.module
        weight = module.weight.detach()
        return conv_transpose_polyphase(grad, ctx.input_size, weight, module.stride, module.padding), None, None


def polyphase_input_gradient(hooks: Hooks, model: nn.Module, inputs: Tensor) -> None:
    """Inside ``hooks``, make every convolution that reads ``inputs`` directly and where
    :func:`polyphase_applies` give ``inputs`` its gradient by :func:`conv_transpose_polyphase`.

    Only the gradient with respect to ``inputs`` stays correct through such a layer (not its weights'), and
    only to first order: for input gradients without ``create_graph``.
    """

    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        if args[0] is not inputs or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        if not polyphase_applies(inputs, module.weight, module.stride, module.dilation, module.groups):
            return None
        return _PolyphaseInputGradient.apply(inputs, [output.detach()], module)

    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            hooks.forward(module, hook)
