"""Explanations read from a transformer's attention: attention rollout and gradient-weighted attention relevance.

Both chain per-layer token-mixing matrices ``M_l (B, N, N)`` from the first block to the last and read the row of
the token the classifier reads (the class token, the first of the prefix tokens; the mean over all tokens for a
model without prefix tokens) at the patch tokens' columns; the patch values are placed on the input grid
(:class:`~medexplain.explain.transformer.TokenGrid`), 2D and 3D alike. Only self-attention modules that all see
the same tokens are supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.lrp.composites import attnlrp
from medexplain.explain.lrp.engine import attention_relevance
from medexplain.explain.targets import Target, resolve_target
from medexplain.explain.transformer import TokenGrid, needs_graph, tapped, token_grid


def _check_self_attention(attentions: list[Tensor]) -> None:
    if not attentions:
        raise MedexplainError("the forward pass ran no attention module; nothing to explain")
    shapes = {tuple(a.shape[-2:]) for a in attentions}
    if len(shapes) != 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
        raise MedexplainError(
            f"attention explainers need self-attention over one token sequence, got attention shapes {sorted(shapes)}"
        )


def _readout(model: nn.Module, x: Tensor, like: Tensor) -> tuple[TokenGrid, Tensor]:
    """The token layout, and the row vector ``(B, N)`` that reads the classifier's token out of ``like (B, ..., N,
    N)``: one-hot at the class token, or uniform (the mean over tokens) without prefix tokens."""
    grid = token_grid(model, x.shape[2:], like.shape[-1])
    row = like.new_zeros(like.shape[0], like.shape[-1])
    if grid.prefix:
        row[:, 0] = 1.0
    else:
        row.fill_(1.0 / like.shape[-1])
    return grid, row


def _to_input(grid: TokenGrid, rows: Tensor, x: Tensor) -> Tensor:
    """Rows ``(B, K, N)`` of the chained matrices, at the patch tokens, on the input grid ``(B, K, *spatial)``."""
    return grid.to_input(grid.patch_tokens(rows), x.shape[2:])


@register_explainer("attention-rollout", category="attention", needs="attention")
@dataclass(frozen=True)
class AttentionRollout:
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

    Each layer's attention, averaged over heads, is mixed with the residual connection, ``M_l = (A_l + I) / 2``,
    and the layers are chained, ``M_L ... M_1``. The map does not depend on the class: every explained target
    gets the same map ``(B, K, *spatial)``, non-negative. One forward pass.
    """

    name: str = field(default="attention-rollout", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        inputs = x.detach().requires_grad_(needs_graph(model))
        with tapped(model) as attentions, torch.enable_grad() if inputs.requires_grad else torch.no_grad():
            logits = model(inputs)
            resolved = resolve_target(logits, target)
            _check_self_attention(attentions)
            # the classifier's row of M_L ... M_1, M_l = (mean_h A_l + I) / 2, from the last layer down: O(L N^2)
            grid, row = _readout(model, x, attentions[0])
            for a in reversed(attentions):
                row = 0.5 * ((row[:, None, None] @ a.detach()).mean(dim=1)[:, 0] + row)
        k = resolved.indices.shape[1]
        maps = _to_input(grid, row.unsqueeze(1).expand(-1, k, -1), x)
        return Explanation(maps, resolved.indices.cpu(), self.name, explainer_params(self), logits.detach())


@register_explainer("attention-gradient", category="attention", needs="attention")
@dataclass(frozen=True)
class AttentionGradient:
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, CVPR 2021; generic form ICCV 2021).

    Per layer and target, ``Abar_l = mean_h (dS/dA_l * R_l)^+``, the gradient of the explained score with respect
    to the attention probabilities weighted by their relevance ``R_l``, positive part, averaged over heads, is
    accumulated as ``R <- R + Abar_l R`` from ``R = I``, i.e. ``(I + Abar_L) ... (I + Abar_1)`` (CVPR 2021 eqs.
    13-14, ICCV 2021 eqs. 5-6). ``relevance="lrp"``: ``R_l`` is the LRP relevance of ``A_l`` as in the CVPR paper,
    here under AttnLRP (:func:`~medexplain.explain.lrp.engine.attention_relevance`; the paper used its own
    rules, stabiliser ``epsilon``), which costs a second forward pass and one more backward pass per target;
    ``"attention"``: ``R_l = A_l``, the ICCV paper's generic form. As in both papers' equations the rows of
    ``I + Abar_l`` are not re-normalised (the CVPR authors' code does so). Maps ``(B, K, *spatial)``, non-negative.
    """

    relevance: str = "lrp"
    epsilon: float = 1e-6
    name: str = field(default="attention-gradient", init=False)

    def __post_init__(self) -> None:
        if self.relevance not in ("lrp", "attention"):
            raise MedexplainError(f"attention-gradient relevance must be 'lrp' or 'attention', got {self.relevance!r}")

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        inputs = x.detach().requires_grad_(True)
        with tapped(model) as attentions, torch.enable_grad():
            logits = model(inputs)
            resolved = resolve_target(logits, target)
            _check_self_attention(attentions)
            scores = resolved.scores(logits)
            gradients = [
                torch.autograd.grad(scores[:, k].sum(), attentions, retain_graph=k < scores.shape[1] - 1)
                for k in range(scores.shape[1])
            ]
        if self.relevance == "lrp":
            relevances = attention_relevance(model, x, resolved, attnlrp(self.epsilon))
        else:
            relevances = [[a.detach() for a in attentions]] * len(gradients)
        # the classifier's row of (I + Abar_L) ... (I + Abar_1), from the last layer down
        grid, start = _readout(model, x, attentions[0])
        rows = []
        for grads, weights in zip(gradients, relevances, strict=True):
            row = start
            for g, r in zip(reversed(grads), reversed(weights), strict=True):
                row = row + (row[:, None] @ (g * r).clamp(min=0).mean(dim=1))[:, 0]
            rows.append(row)
        maps = _to_input(grid, torch.stack(rows, dim=1), x)
        return Explanation(maps, resolved.indices.cpu(), self.name, explainer_params(self), logits.detach())

