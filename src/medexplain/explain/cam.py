"""Class activation maps: Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM; one weighting function per variant.

Every variant computes ``relu(sum_c w_c * A_c)`` from a layer's activations ``A (B, C, *s)`` and the gradients
``G`` of the explained score with respect to them; only the weights ``w`` differ. The map is upsampled to the
input resolution with (bi/tri)linear interpolation after the ReLU, never min-max normalised. Token layers of
vision transformers are reshaped to their patch grid first (class token dropped), 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.hooks import INPUT_SUFFIX, capture_output, last_conv_block
from medexplain.explain.resample import to_input_resolution
from medexplain.explain.targets import Target, resolve_target
from medexplain.explain.transformer import (
    TokenGrid,
    attention_modules,
    needs_graph,
    token_grid,
    tokens_batch_first,
)

Weighting = Callable[[Tensor, Tensor], Tensor]
"""``(activations (B, C, *s), gradients (B, C, *s)) -> weights`` broadcastable to the activations."""


def _spatial_dims(t: Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.ndim))


def gradcam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): spatial mean of the gradients per channel."""
    return gradients.mean(dim=_spatial_dims(gradients), keepdim=True)


def gradcam_plus_plus_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), with the exponential-score closed form of its eq. 19:
    ``alpha = G^2 / (2 G^2 + sum_s(A) G^3)``, ``w = sum_s alpha relu(G)``; ``alpha = 0`` where the
    denominator vanishes. No additive epsilon: gradients of order 1e-3 make ``G^2`` as small as one."""
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    sum_activations = activations.sum(dim=_spatial_dims(activations), keepdim=True)
    denominator = 2 * g2 + sum_activations * g3
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where((gradients != 0) & (denominator != 0), g2 / safe, torch.zeros_like(g2))
    return (alpha * gradients.clamp(min=0)).sum(dim=_spatial_dims(gradients), keepdim=True)


def hirescam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): the gradients themselves, element-wise (no spatial averaging)."""
    return gradients


def layercam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): the positive gradients, element-wise."""
    return gradients.clamp(min=0)


WEIGHTINGS: dict[str, Weighting] = {
    "gradcam": gradcam_weights,
    "gradcam++": gradcam_plus_plus_weights,
    "hirescam": hirescam_weights,
    "layercam": layercam_weights,
}


def cam_maps(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    layer: str | None = None,
    create_graph: bool = False,
    weighting: str | Weighting = "gradcam",
    rectify: bool = True,
) -> Explanation:
    """Class activation maps ``(B, K, *spatial)`` at input resolution, differentiable when ``create_graph``.

    Args:
        model: classifier returning ``(B, C)`` logits.
        x: ``(B, C_in, *spatial)`` input.
        target: what to explain (see :data:`~medexplain.explain.targets.Target`).
        layer: dotted module name whose output ``(B, C, *s)`` is used (its first input with the suffix ``":input"``),
            or whose ``(B, N, C)`` token output is reshaped
            to ``(B, C, *grid)`` (prefix tokens dropped, grid from the patch embedding, see
            :func:`~medexplain.explain.transformer.token_grid`); default :func:`default_layer`.
        create_graph: keep the autograd graph so the maps (and the returned logits) can enter a training loss,
            e.g. SIBnet's guidance loss; model parameters then receive gradients through the maps.
        weighting: a name in :data:`WEIGHTINGS` or a weighting function.
        rectify: apply the ReLU of the published methods; ``False`` keeps the signed map ``sum_c w_c A_c``
            (negative where the layer's features speak against the class), e.g. for SIBnet's losses.

    Returns:
        An :class:`Explanation` whose ``logits`` come from the same forward pass (in the graph if
        ``create_graph``).
    """
    weigh = WEIGHTINGS[weighting] if isinstance(weighting, str) else weighting
    name = layer if layer is not None else default_layer(model)
    with torch.enable_grad(), capture_output(model, name) as captured:
        inputs = x if create_graph else x.detach().requires_grad_(needs_graph(model))
        logits = model(inputs)
        resolved = resolve_target(logits, target)
        activations = captured.output
        tokens = isinstance(activations, Tensor) and activations.ndim == 3 and x.ndim > 3
        if not isinstance(activations, Tensor) or (activations.ndim != x.ndim and not tokens):
            shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
            raise MedexplainError(
                f"layer {name!r} outputs {shape}; CAM methods need a (B, C, *spatial) feature map like the input "
                "or (B, N, C) tokens"
            )
        grid = _token_layout(model, x, activations) if tokens else None
        as_map = grid.as_map if grid is not None else (lambda t: t)
        scores = resolved.scores(logits)
        maps = []
        for k in range(scores.shape[1]):
            retain = create_graph or k < scores.shape[1] - 1
            (grads,) = torch.autograd.grad(
                scores[:, k].sum(), activations, retain_graph=retain, create_graph=create_graph
            )
            acts = as_map(activations if create_graph else activations.detach())
            signed = (weigh(acts, as_map(grads)) * acts).sum(dim=1)
            maps.append(signed.clamp(min=0) if rectify else signed)
    maps_low = torch.stack(maps, dim=1)
    upsampled = grid.to_input(maps_low, x.shape[2:]) if grid is not None else to_input_resolution(maps_low, x.shape[2:])
    method = weighting if isinstance(weighting, str) else getattr(weighting, "__name__", "cam")
    return Explanation(
        upsampled,
        resolved.indices.cpu(),
        method,
        {"layer": name},
        logits if create_graph else logits.detach(),
    )


def default_layer(model: nn.Module) -> str:
    """The layer CAM methods use unless told: for a transformer (a model with attention modules) the input of its
    last attention module (``"<name>:input"``; in a pre-norm block its ``norm1`` output), as pytorch-grad-cam's ViT
    example uses the last block's ``norm1``: the patch tokens of the last block's output do not reach a class-token
    head, so their gradients are zero. Otherwise the last convolutional block (:func:`last_conv_block`)."""
    attention = attention_modules(model)
    if attention:
        return attention[-1][0] + INPUT_SUFFIX
    return last_conv_block(model)


@dataclass(frozen=True)
class _TokenLayout:
    """A token layer's layout: ``(B, N, C)`` tokens, or ``(N, B, C)`` for sequence-first models, on ``grid``."""

    grid: TokenGrid
    batch_first: bool

    def as_map(self, t: Tensor) -> Tensor:
        """Tokens -> ``(B, C, *grid)`` feature maps over the patch tokens (prefix tokens dropped)."""
        channels_last = t if self.batch_first else t.transpose(0, 1)
        return self.grid.patch_tokens(channels_last.transpose(1, 2))

    def to_input(self, maps: Tensor, spatial: torch.Size) -> Tensor:
        return self.grid.to_input(maps, spatial)


def _token_layout(model: nn.Module, x: Tensor, tokens: Tensor) -> _TokenLayout:
    batch_first = tokens_batch_first(model)
    return _TokenLayout(token_grid(model, x.shape[2:], tokens.shape[1 if batch_first else 0]), batch_first)


@dataclass(frozen=True)
class _Cam:
    layer: str | None = None
    name: str = field(default="gradcam", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        explanation = cam_maps(model, x, target, self.layer, weighting=self.name)
        params = {**explainer_params(self), "layer": explanation.params["layer"]}
        return Explanation(explanation.maps.detach(), explanation.targets, self.name, params, explanation.logits)


@register_explainer("gradcam", category="cam")
@dataclass(frozen=True)
class GradCAM(_Cam):
    """Grad-CAM (Selvaraju et al. 2017) at ``layer`` (default :func:`default_layer`), upsampled."""

    name: str = field(default="gradcam", init=False)


@register_explainer("gradcam++", category="cam")
@dataclass(frozen=True)
class GradCAMPlusPlus(_Cam):
    """Grad-CAM++ (Chattopadhyay et al. 2018) at ``layer`` (default :func:`default_layer`), upsampled."""

    name: str = field(default="gradcam++", init=False)


@register_explainer("hirescam", category="cam")
@dataclass(frozen=True)
class HiResCAM(_Cam):
    """HiResCAM (Draelos & Carin 2020) at ``layer`` (default :func:`default_layer`), upsampled."""

    name: str = field(default="hirescam", init=False)


@register_explainer("layercam", category="cam")
@dataclass(frozen=True)
class LayerCAM(_Cam):
    """LayerCAM (Jiang et al. 2021) at ``layer`` (default :func:`default_layer`), upsampled."""

    name: str = field(default="layercam", init=False)
