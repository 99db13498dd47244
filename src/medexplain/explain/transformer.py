"""What the explainers need to know about a vision transformer: where its attention is and where its tokens lie.

Attention taps. Every attention module of a model (``nn.MultiheadAttention``, MONAI's ``SABlock`` and its
subclasses) is found by type. During a forward pass inside a :class:`~medexplain.explain.hooks.Hooks` block,
:func:`tap_attention` records each module's attention probabilities ``A = softmax(q k^T / sqrt(d))``
``(B, H, N_q, N_k)``, the very tensor that multiplies the values (so gradients with respect to it are the
gradients of the attention), and can change how relevance crosses the two products of attention:

- ``"gradient"``: nothing changed (attention rollout, gradient-weighted attention);
- ``"uniform"``: AttnLRP's uniform rule (Achtibat et al., ICML 2024, Prop. 3.3) on ``q k^T`` and on ``A v``:
  each factor of a product receives half of the product's relevance, i.e. half of the gradient. The ``A v``
  halving is applied to the gradient of the product (both factors receive half), the ``q k^T`` halving once
  more on the path into the softmax; the softmax itself is differentiated, which is AttnLRP's softmax rule
  (Prop. 3.1, ``R_i = x_i (R_i - s_i sum_j R_j)``, which absorbs the bias of the softmax's linearisation);
- ``"conservative"``: CP-LRP (Ali et al., "XAI for Transformers: Better Explanations through Conservative
  Propagation", ICML 2022): the attention probabilities are held constant, so all relevance flows through
  the values and none is absorbed.

MONAI's ``SABlock`` is tapped without recomputation, at its two submodules that see these tensors: the dropout
``drop_weights`` receives ``A`` right before ``A v``, and ``out_rearrange`` receives ``A v``. PyTorch's
``nn.MultiheadAttention`` computes attention in one fused function, so its hook recomputes the attention
explicitly from the module's parameters (same values, as a graph that can be tapped) and replaces the output;
the input projections then propagate with their gradient (LRP-0), the output projection is called as a module
(so an LRP rule on it applies), and dropout inside the attention is left out.

Token geometry. A vision transformer's tokens are ``prefix`` tokens (class, distillation or register tokens)
followed by one token per patch of a grid, in row-major order. The grid comes from the patch embedding, the
first convolution whose stride equals its kernel size (:func:`token_grid`), so a map over patch tokens can be
reshaped to ``(B, K, *grid)`` and placed on the input, 2D and 3D alike.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.hooks import Hooks
from medexplain.explain.resample import patches_to_input

ATTENTION_RULES = ("gradient", "uniform", "conservative")
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; the gradient times ``factor`` backward."""

    @staticmethod
    def forward(ctx, t: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


def _monai_self_attention() -> type[nn.Module] | None:
    """MONAI's ``SABlock`` class if MONAI's attention module is loaded (no model can hold one otherwise)."""
    module = sys.modules.get("monai.networks.blocks.selfattention")
    return getattr(module, "SABlock", None)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every attention module of ``model`` that the taps support, in registration order."""
    monai_block = _monai_self_attention()
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention) or (monai_block is not None and isinstance(module, monai_block))
    ]


def tap_attention(hooks: Hooks, model: nn.Module, rule: str = "gradient") -> list[Tensor]:
    """Register the taps of every attention module of ``model`` on ``hooks``; see the module docstring.

    Returns:
        A list that each forward pass fills with the attention probabilities ``(B, H, N_q, N_k)`` of every
        attention call, in call order (clear it between passes).
    """
    if rule not in ATTENTION_RULES:
        raise MedexplainError(f"unknown attention rule {rule!r}; choose one of {', '.join(ATTENTION_RULES)}")
    modules = attention_modules(model)
    if not modules:
        raise MedexplainError(
            f"{type(model).__name__} has no attention module (nn.MultiheadAttention or MONAI SABlock) to explain"
        )
    recorded: list[Tensor] = []
    for name, module in modules:
        if isinstance(module, nn.MultiheadAttention):
            hooks.forward(module, _MultiheadTap(name, rule, recorded), with_kwargs=True)
        else:
            _tap_monai(hooks, name, module, rule, recorded)
    return recorded


def _attention_probabilities(a: Tensor, rule: str) -> Tensor:
    """``A`` as it enters ``A v`` under ``rule`` (the ``q k^T`` part of the uniform rule sits here)."""
    if rule == "conservative":
        return a.detach()
    if rule == "uniform":
        return _ScaleGradient.apply(a, 0.5)
    return a


def _tap_monai(hooks: Hooks, name: str, block: nn.Module, rule: str, recorded: list[Tensor]) -> None:
    if getattr(block, "use_flash_attention", False):
        raise MedexplainError(
            f"attention block {name!r} uses flash attention, which never forms the attention matrix; "
            "build it with use_flash_attention=False to explain it"
        )

    def weights(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        probabilities = _attention_probabilities(output, rule)
        recorded.append(probabilities)
        return probabilities

    hooks.forward(block.drop_weights, weights)
    if rule == "uniform":
        hooks.forward(block.out_rearrange, lambda _m, _a, output: _ScaleGradient.apply(output, 0.5))


@dataclass(frozen=True)
class _MultiheadTap:
    """Forward hook recomputing ``nn.MultiheadAttention`` explicitly (see the module docstring)."""

    name: str
    rule: str
    recorded: list[Tensor]

    def __call__(self, module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: object) -> tuple:
        bound = _MHA_SIGNATURE.bind(module, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        if module.bias_k is not None or module.add_zero_attn:
            raise MedexplainError(f"attention {self.name!r}: bias_k/bias_v and add_zero_attn are not supported")
        query, key, value = a["query"], a["key"], a["value"]
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if not module.batch_first or unbatched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if module._qkv_same_embed_dim:
            w_q, w_k, w_v = module.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
        b_q, b_k, b_v = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
        heads = module.num_heads
        q, k, v = (
            F.linear(t, w, b).unflatten(-1, (heads, -1)).transpose(1, 2)
            for t, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores + _additive_mask(a, scores, self.name)
        probabilities = _attention_probabilities(scores.softmax(dim=-1), self.rule)
        self.recorded.append(probabilities)
        product = probabilities @ v
        if self.rule == "uniform":
            product = _ScaleGradient.apply(product, 0.5)
        out = module.out_proj(product.transpose(1, 2).flatten(2))
        if unbatched:
            out = out.squeeze(0)
        elif not module.batch_first:
            out = out.transpose(0, 1)
        if not a["need_weights"]:
            return out, None
        weights = probabilities.mean(dim=1) if a["average_attn_weights"] else probabilities
        return out, weights.squeeze(0) if unbatched else weights


def _additive_mask(arguments: dict, scores: Tensor, name: str) -> Tensor:
    """``attn_mask``, ``key_padding_mask`` and ``is_causal`` of ``nn.MultiheadAttention`` as one additive mask
    broadcastable to ``scores (B, H, N_q, N_k)`` (``-inf`` where attention is not allowed)."""
    b, h, n_q, n_k = scores.shape
    attn_mask, padding = arguments["attn_mask"], arguments["key_padding_mask"]
    if attn_mask is None and arguments["is_causal"]:
        attn_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).triu(1)
    total = scores.new_zeros(())
    if attn_mask is not None:
        if attn_mask.ndim not in (2, 3):
            raise MedexplainError(f"attention {name!r}: attn_mask of shape {tuple(attn_mask.shape)} is not supported")
        additive = _additive(attn_mask, scores)
        total = total + (additive.view(b, h, n_q, n_k) if attn_mask.ndim == 3 else additive)
    if padding is not None:
        total = total + _additive(padding, scores).reshape(b, 1, 1, n_k)
    return total


def _additive(mask: Tensor, scores: Tensor) -> Tensor:
    """A boolean mask (True: not allowed) as ``0 / -inf``; a float mask as it is."""
    if mask.dtype == torch.bool:
        return scores.new_zeros(mask.shape).masked_fill(mask, -math.inf)
    return mask.to(scores.dtype)


def needs_graph(model: nn.Module) -> bool:
    """Whether a tapped forward pass of ``model`` must record a graph even when no gradient is wanted: models with
    ``nn.MultiheadAttention``, whose fused fast paths (in it and in ``nn.TransformerEncoderLayer``) skip the
    module call when no gradient is recorded."""
    return any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


@dataclass(frozen=True)
class TokenGrid:
    """How tokens map to the input: ``prefix`` leading tokens, then one per patch of ``grid`` in row-major
    order; patch ``i`` covers input ``[stride * i, stride * i + patch)`` per axis."""

    grid: tuple[int, ...]
    patch: tuple[int, ...]
    stride: tuple[int, ...]
    prefix: int

    def patch_tokens(self, values: Tensor) -> Tensor:
        """``(..., N)`` values per token -> ``(..., *grid)`` over the patch tokens (prefix tokens dropped)."""
        return values[..., self.prefix :].unflatten(-1, self.grid)

    def to_input(self, maps: Tensor, spatial: tuple[int, ...] | torch.Size) -> Tensor:
        """``(B, K, *grid)`` maps placed at their patches' centres and interpolated to ``(B, K, *spatial)``."""
        return patches_to_input(maps, spatial, self.patch, self.stride)


def token_grid(model: nn.Module, spatial: tuple[int, ...] | torch.Size, num_tokens: int) -> TokenGrid:
    """The token layout of ``model`` for inputs of size ``spatial`` whose token sequences have ``num_tokens``.

    The patch embedding is the first convolution (registration order) with as many spatial dimensions as the
    input, no padding and stride equal to its kernel; the remaining ``num_tokens - prod(grid)`` tokens lead.
    """
    dims = len(spatial)
    for module in model.modules():
        if _is_patch_embedding(module, dims):
            grid = tuple((s - k) // st + 1 for s, k, st in zip(spatial, module.kernel_size, module.stride, strict=True))
            prefix = num_tokens - math.prod(grid)
            if prefix < 0:
                raise MedexplainError(
                    f"{num_tokens} tokens cannot hold the {'x'.join(map(str, grid))} patch grid of the patch embedding"
                )
            return TokenGrid(grid, tuple(module.kernel_size), tuple(module.stride), prefix)
    raise MedexplainError(
        f"{type(model).__name__} has no {dims}D patch embedding (a convolution with stride = kernel size) to place "
        "its tokens on the input"
    )


def _is_patch_embedding(module: nn.Module, dims: int) -> bool:
    if not isinstance(module, _CONV_TYPES[dims - 1]):
        return False
    unpadded = module.padding == "valid" or (not isinstance(module.padding, str) and not any(module.padding))
    return unpadded and tuple(module.stride) == tuple(module.kernel_size)


def tokens_batch_first(model: nn.Module) -> bool:
    """Whether the model's token tensors are ``(B, N, D)``; ``(N, B, D)`` when all its ``nn.MultiheadAttention``
    modules have ``batch_first=False`` (PyTorch's default)."""
    mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    return not mha or any(m.batch_first for m in mha)


@contextmanager
def tapped(model: nn.Module, rule: str = "gradient") -> Iterator[list[Tensor]]:
    """``with tapped(model) as attentions: model(x)``: the taps of :func:`tap_attention` in their own block."""
    with Hooks() as hooks:
        yield tap_attention(hooks, model, rule)
