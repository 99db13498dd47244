"""Independent references for the transformer explainers: the registry's MONAI ViT written out as one functional
forward pass, with either plain torch operations or lxt's explicit AttnLRP operations (lxt, Achtibat et al.,
ICML 2024, installed without dependencies as a test reference only, like Zennit).

lxt's explicit functions carry relevance itself backward (not a modified gradient): the "gradient" that
``torch.autograd.grad`` returns at the input is the input relevance when the output's "gradient" is its relevance.
"""

from __future__ import annotations

from dataclasses import dataclass

import lxt.explicit.functional as lf
import lxt.explicit.rules as lr
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Operations:
    """The operations of the forward pass; ``attentions`` collects the attention probabilities ``(B, H, N, N)``."""

    conv: object
    linear: object
    matmul: object
    scale: object
    softmax: object
    layer_norm: object
    add: object
    gelu: object
    attentions: list[Tensor]


def plain_operations() -> Operations:
    return Operations(
        conv=lambda module, x: module(x),
        linear=lambda x, layer: F.linear(x, layer.weight, layer.bias),
        matmul=torch.matmul,
        scale=lambda x, factor: x * factor,
        softmax=lambda x: x.softmax(dim=-1),
        layer_norm=lambda x, norm: norm(x),
        add=torch.add,
        gelu=F.gelu,
        attentions=[],
    )


def lxt_operations(epsilon: float) -> Operations:
    """AttnLRP as lxt implements it, with the stabiliser ``epsilon`` everywhere (also in LayerNorm)."""
    return Operations(
        conv=lambda module, x: lr.epsilon_lrp(module, epsilon, x),
        linear=lambda x, layer: lf.linear_epsilon(x, layer.weight, layer.bias, epsilon),
        matmul=lambda a, b: lf.matmul(a, b, epsilon=epsilon),
        scale=lambda x, factor: lf.mul2(x, factor),
        softmax=lambda x: lf.softmax(x, -1),
        layer_norm=lambda x, norm: lf.layer_norm_grad_fn.apply(x, norm.weight, norm.bias, norm.eps, epsilon),
        add=lambda a, b: lf.add2(a, b, epsilon=epsilon),
        gelu=lambda x: lr.identity(F.gelu, x),
        attentions=[],
    )


def vit_forward(model: nn.Module, x: Tensor, ops: Operations) -> Tensor:
    """The logits of the registry's ``vit`` (a ``ViTClassifier``), step by step."""
    vit = model.vit
    tokens = ops.conv(vit.patch_embedding.patch_embeddings, x).flatten(2).transpose(1, 2)
    tokens = ops.add(tokens, vit.patch_embedding.position_embeddings)
    tokens = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    for block in vit.blocks:
        attn = block.attn
        qkv = ops.linear(ops.layer_norm(tokens, block.norm1), attn.qkv)
        q, k, v = qkv.unflatten(-1, (3, attn.num_heads, -1)).permute(2, 0, 3, 1, 4)
        probabilities = ops.softmax(ops.scale(ops.matmul(q, k.transpose(-1, -2)), attn.scale))
        ops.attentions.append(probabilities)
        mixed = ops.matmul(probabilities, v).transpose(1, 2).flatten(2)
        tokens = ops.add(tokens, ops.linear(mixed, attn.out_proj))
        hidden = ops.gelu(ops.linear(ops.layer_norm(tokens, block.norm2), block.mlp.linear1))
        tokens = ops.add(tokens, ops.linear(hidden, block.mlp.linear2))
    return ops.linear(ops.layer_norm(tokens, vit.norm)[:, 0], vit.classification_head)


def lxt_relevance(model: nn.Module, x: Tensor, target: Tensor, epsilon: float) -> tuple[Tensor, list[Tensor]]:
    """lxt's AttnLRP relevance with output relevance ``logit * onehot(target)``: at the input ``(B, C, *spatial)``
    and at each block's attention probabilities ``(B, H, N, N)``."""
    inputs = x.detach().requires_grad_(True)
    ops = lxt_operations(epsilon)
    logits = vit_forward(model, inputs, ops)
    relevance = logits.detach() * F.one_hot(target, logits.shape[1])
    at_input, *at_attention = torch.autograd.grad(logits, [inputs, *ops.attentions], relevance)
    return at_input, at_attention
