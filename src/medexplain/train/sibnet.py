"""SIBnet guidance losses on per-class Grad-CAM maps (Mahapatra, Poellinger, Reyes, Medical Image Analysis 2022).

"Interpretability-guided inductive bias for deep learning based medical image classification and segmentation"
trains a classifier whose saliency maps ``S_c`` (Grad-CAM for every class at the last convolutional block,
upsampled to the input, differentiable with respect to the weights) are

- class-distinct: ``L_cd`` = mean over class pairs ``i < j`` of ``|cos(flat S_i, flat S_j)|``;
- spatially coherent: ``L_sc`` = inside the salient regions of each map (Otsu threshold, erosion, hole
  filling, connected components), the sum of squared differences between each value and its neighbours in a
  9 x 9 (9 x 9 x 9) window (neighbours in another region of the same map excepted). The regions are chosen
  without gradient; the squared differences carry it.

The total is ``CE + w_cd * L_cd / L_cd(first) + w_sc * L_sc / L_sc(first)`` with ``w_cd = 1.2``, ``w_sc = 0.9``;
:class:`SIBnetLoss` holds the first values. Maps are ``(B, K, *spatial)``, 1D, 2D or 3D through one code path.
Both terms are averaged over the samples of the batch (the paper sums; the first-iteration scaling makes the
two equal up to the batch size, and the mean keeps a smaller last batch from weighing more).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.cam import cam_maps
from medexplain.explain.hooks import last_conv_block
from medexplain.metrics.binarise import otsu_threshold

WINDOW = 9
W_CD = 1.2
W_SC = 0.9


def _check_maps(maps: Tensor, what: str, min_classes: int = 1) -> None:
    if maps.ndim < 3:
        raise MedexplainError(f"{what}: maps must be (B, K, *spatial), got shape {tuple(maps.shape)}")
    if maps.shape[1] < min_classes:
        raise MedexplainError(f"{what}: needs maps of at least {min_classes} classes, got {maps.shape[1]}")


def class_saliency(model: nn.Module, x: Tensor, layer: str | None = None) -> tuple[Tensor, Tensor]:
    """Grad-CAM of every class at ``layer`` (default the last convolutional block), in the autograd graph.

    Args:
        model: classifier ``(B, C_in, *spatial) -> (B, K)``.
        x: ``(B, C_in, *spatial)``.

    Returns:
        ``(maps (B, K, *spatial), logits (B, K))`` from one forward pass; both differentiable wrt the weights.
    """
    if layer is None:
        try:
            layer = last_conv_block(model)
        except MedexplainError:
            raise MedexplainError(
                f"SIBnet loss: {type(model).__name__} has no convolutional layer whose Grad-CAM it could train"
            ) from None
    explanation = cam_maps(model, x, "all", layer, create_graph=True)
    return explanation.maps, explanation.logits


def class_distinctiveness(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """``L_cd``: mean over samples and class pairs ``i < j`` of ``|cos(flat S_i, flat S_j)|``; a scalar.

    Identical maps give 1, maps with disjoint support give 0. A map that is zero everywhere has cosine 0
    with every other map (its norm is clamped at ``eps``).

    Args:
        maps: ``(B, K, *spatial)`` with ``K >= 2``.
    """
    _check_maps(maps, "class-distinctiveness loss", min_classes=2)
    flat = maps.flatten(2)
    unit = flat / flat.norm(dim=2, keepdim=True).clamp(min=eps)
    cosines = unit @ unit.transpose(1, 2)
    i, j = torch.triu_indices(maps.shape[1], maps.shape[1], offset=1, device=maps.device)
    return cosines[:, i, j].abs().mean()


@torch.no_grad()
def salient_regions(maps: Tensor) -> tuple[Tensor, Tensor]:
    """The salient regions of every map: Otsu threshold, one erosion, connected components (not differentiable).

    Foreground is ``S > otsu(S)`` per map; one binary erosion with the face-connected cross (``2d + 1``
    positions) removes isolated positions and thin bridges (the image border erodes nothing); holes are filled,
    so a value dropping below the threshold inside a region (noise) stays part of it; the result is split into
    connected components (full connectivity).

    Args:
        maps: ``(B, K, *spatial)``.

    Returns:
        ``(regions (R, *spatial) bool, owner (R,) long)``: one mask per component, and the index into the
        flattened ``B * K`` maps it belongs to.
    """
    flat = maps.detach().flatten(0, 1)
    spatial_dims = flat.ndim - 1
    cross = ndimage.generate_binary_structure(spatial_dims, 1)
    full = ndimage.generate_binary_structure(spatial_dims, spatial_dims)
    foreground = (flat > otsu_threshold(flat).view(-1, *[1] * spatial_dims)).cpu().numpy()
    regions, owner = [], []
    for index, mask in enumerate(foreground):
        eroded = ndimage.binary_erosion(mask, structure=cross, border_value=1)
        labels, count = ndimage.label(ndimage.binary_fill_holes(eroded), structure=full)
        regions.extend(labels == component for component in range(1, count + 1))
        owner.extend([index] * count)
    if not regions:
        return torch.zeros(0, *flat.shape[1:], dtype=torch.bool, device=maps.device), torch.zeros(
            0, dtype=torch.long, device=maps.device
        )
    return torch.from_numpy(np.stack(regions)).to(maps.device), torch.tensor(owner, device=maps.device)


def _window_sum(x: Tensor, window: int) -> Tensor:
    """Sum of ``x`` (N, 1, *spatial) over the ``window^d`` box centred on each position (zero outside), separably."""
    spatial_dims = x.ndim - 2
    conv = getattr(F, f"conv{spatial_dims}d")
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = window
        padding = [0] * spatial_dims
        padding[axis] = window // 2
        x = conv(x, x.new_ones(shape), padding=tuple(padding))
    return x


def spatial_coherence(maps: Tensor, window: int = WINDOW) -> Tensor:
    """``L_sc``: squared differences to neighbours inside salient regions, summed over classes, mean over samples.

    For each connected salient region ``R`` of a map ``S`` (:func:`salient_regions`), the sum over positions
    ``p`` in ``R`` and their neighbours ``q`` in the ``window^d`` box centred on ``p`` (inside the image) of
    ``(S_p - S_q)^2``, where a neighbour counts unless it lies in *another* salient region of the same map:
    each region must be smooth inside and towards the background around it, while two separate regions are
    not compared with each other. With ``m`` the region's indicator and ``a`` that of its admissible
    neighbours, this is ``sum_p m_p (S_p^2 box(a)_p - 2 S_p box(aS)_p + box(aS^2)_p)`` with box sums.

    Args:
        maps: ``(B, K, *spatial)``.
        window: odd side of the neighbourhood (9 as published).

    Returns:
        A scalar, differentiable with respect to ``maps`` (the regions are held fixed).
    """
    _check_maps(maps, "spatial-coherence loss")
    if window < 1 or window % 2 == 0:
        raise MedexplainError(f"spatial-coherence window must be odd and positive, got {window}")
    regions, owner = salient_regions(maps)
    if len(owner) == 0:
        return maps.sum() * 0
    flat = maps.flatten(0, 1)
    union = flat.new_zeros(flat.shape).index_add_(0, owner, regions.to(flat.dtype)) > 0
    values = flat[owner].unsqueeze(1)
    inside = regions.unsqueeze(1).to(maps.dtype)
    admissible = (regions | ~union[owner]).unsqueeze(1).to(maps.dtype)
    weighted = admissible * values
    count, total, squares = (_window_sum(t, window) for t in (admissible, weighted, weighted * values))
    per_position = inside * (values.pow(2) * count - 2 * values * total + squares)
    return per_position.sum() / maps.shape[0]


class ClassDistinctivenessLoss(nn.Module):
    """:func:`class_distinctiveness` as a module: ``(B, K, *spatial)`` maps -> scalar."""

    def forward(self, maps: Tensor) -> Tensor:
        return class_distinctiveness(maps)


class SpatialCoherenceLoss(nn.Module):
    """:func:`spatial_coherence` as a module: ``(B, K, *spatial)`` maps -> scalar."""

    def __init__(self, window: int = WINDOW) -> None:
        super().__init__()
        self.window = window

    def forward(self, maps: Tensor) -> Tensor:
        return spatial_coherence(maps, self.window)


class SIBnetLoss(nn.Module):
    """The SIBnet guidance term ``w_cd * L_cd / L_cd(first) + w_sc * L_sc / L_sc(first)`` on Grad-CAM maps.

    Each term is divided by its value at the first call where it is positive (kept in a buffer, so the scale
    follows ``.to(device)`` and ``state_dict``); until then a term is zero and stays unscaled. ``train`` does not
    checkpoint this module: a resumed run takes the scales again from its first batch.

    Known behaviour: both terms are minimised trivially by Grad-CAM maps that are zero everywhere (a negative
    class-weighted activation sum is cut by Grad-CAM's ReLU), which the logits still allow; on BUSI training drives
    most maps there within two epochs (``benchmarks/RESULTS.md``). Watch ``train_distinctiveness`` in metrics.csv.

    Args:
        w_cd: weight of class distinctiveness (1.2 as published).
        w_sc: weight of spatial coherence (0.9 as published).
        layer: the layer whose Grad-CAM is trained (default the model's last convolutional block).
        window: neighbourhood side of the coherence term.
    """

    cd_scale: Tensor | None
    sc_scale: Tensor | None

    def __init__(self, w_cd: float = W_CD, w_sc: float = W_SC, *, layer: str | None = None, window: int = WINDOW):
        super().__init__()
        self.w_cd, self.w_sc, self.layer = float(w_cd), float(w_sc), layer
        self.distinctiveness = ClassDistinctivenessLoss()
        self.coherence = SpatialCoherenceLoss(window)
        self.register_buffer("cd_scale", None)
        self.register_buffer("sc_scale", None)

    def _scaled(self, value: Tensor, name: str) -> Tensor:
        scale = getattr(self, name)
        if scale is None and float(value.detach()) > 0:
            scale = value.detach().clone()
            setattr(self, name, scale)
        return value if scale is None else value / scale

    def forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(penalty, logits (B, K), parts)`` for ``x`` ``(B, C, *spatial)``; ``parts`` holds the raw terms."""
        maps, logits = class_saliency(model, x, self.layer)
        if maps.shape[1] < 2:
            raise MedexplainError(f"SIBnet loss: the model has {maps.shape[1]} output; class distinctiveness needs 2+")
        cd, sc = self.distinctiveness(maps), self.coherence(maps)
        penalty = self.w_cd * self._scaled(cd, "cd_scale") + self.w_sc * self._scaled(sc, "sc_scale")
        return penalty, logits, {"distinctiveness": cd, "coherence": sc}
