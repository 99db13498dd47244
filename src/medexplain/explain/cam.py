"""Class activation maps: Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM; one weighting function per variant.

Every variant computes ``relu(sum_c w_c * A_c)`` from a layer's activations ``A (B, C, *s)`` and the gradients
``G`` of the explained score with respect to them; only the weights ``w`` differ. The map is upsampled to the
input resolution with (bi/tri)linear interpolation after the ReLU, never min-max normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.explanation import Explanation
from medexplain.explain.hooks import capture_output, find_module, last_conv_block
from medexplain.explain.resample import to_input_resolution
from medexplain.explain.targets import Target, resolve_target

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
        layer: dotted module name whose output ``(B, C, *s)`` is used; default the last convolutional block.
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
    name = layer if layer is not None else last_conv_block(model)
    module = find_module(model, name)
    with torch.enable_grad(), capture_output(model, module) as captured:
        inputs = x if create_graph else x.detach()
        logits = model(inputs)
        resolved = resolve_target(logits, target)
        activations = captured.output
        if not isinstance(activations, Tensor) or activations.ndim != x.ndim:
            shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
            raise MedexplainError(
                f"layer {name!r} outputs {shape}; CAM methods need a (B, C, *spatial) feature map like the input"
            )
        scores = resolved.scores(logits)
        maps = []
        for k in range(scores.shape[1]):
            retain = create_graph or k < scores.shape[1] - 1
            (grads,) = torch.autograd.grad(
                scores[:, k].sum(), activations, retain_graph=retain, create_graph=create_graph
            )
            acts = activations if create_graph else activations.detach()
            signed = (weigh(acts, grads) * acts).sum(dim=1)
            maps.append(signed.clamp(min=0) if rectify else signed)
    maps_low = torch.stack(maps, dim=1)
    upsampled = to_input_resolution(maps_low, x.shape[2:])
    method = weighting if isinstance(weighting, str) else getattr(weighting, "__name__", "cam")
    return Explanation(
        upsampled,
        resolved.indices.cpu(),
        method,
        {"layer": name},
        logits if create_graph else logits.detach(),
    )


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
    """Grad-CAM (Selvaraju et al. 2017) at ``layer`` (default the last convolutional block), upsampled."""

    name: str = field(default="gradcam", init=False)


@register_explainer("gradcam++", category="cam")
@dataclass(frozen=True)
class GradCAMPlusPlus(_Cam):
    """Grad-CAM++ (Chattopadhyay et al. 2018) at ``layer`` (default the last convolutional block), upsampled."""

    name: str = field(default="gradcam++", init=False)


@register_explainer("hirescam", category="cam")
@dataclass(frozen=True)
class HiResCAM(_Cam):
    """HiResCAM (Draelos & Carin 2020) at ``layer`` (default the last convolutional block), upsampled."""

    name: str = field(default="hirescam", init=False)


@register_explainer("layercam", category="cam")
@dataclass(frozen=True)
class LayerCAM(_Cam):
    """LayerCAM (Jiang et al. 2021) at ``layer`` (default the last convolutional block), upsampled."""

    name: str = field(default="layercam", init=False)
