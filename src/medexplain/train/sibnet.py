"""SIBnet guidance losses on per-class Grad-CAM maps (Mahapatra, Poellinger, Reyes, Medical Image Analysis 2022).

"Interpretability-guided inductive bias for deep learning based medical image classification and segmentation"
(``../shared/METHODS.md`` section 3, seed ``002``) trains a classifier whose saliency maps ``S_c`` (Grad-CAM for
every class at the last convolutional block, upsampled to the input, differentiable with respect to the weights)
are

- class-distinct: ``L_cd`` = mean over class pairs ``i < j`` of ``|cos(flat S_i, flat S_j)|``;
- spatially coherent: ``L_sc`` = inside the salient regions of each map (Otsu threshold, erosion, hole
  filling, connected components), the sum of squared differences between each value and its neighbours in a
  9 x 9 (9 x 9 x 9) window (neighbours in another region of the same map excepted). The regions are chosen
  without gradient; the squared differences carry it.

Published total: ``CE + w_cd L_cd / L_cd(first) + w_sc L_sc / L_sc(first)``, ``w_cd = 1.2``, ``w_sc = 0.9``
(:data:`PUBLISHED`). Both terms are averaged over the samples of the batch (the paper sums; the first-iteration
scaling makes the two equal up to the batch size, and the mean keeps a smaller last batch from weighing more).

That formulation collapses: both terms are minimised by Grad-CAM maps that are zero everywhere. ``L_sc`` is
homogeneous of degree 2 in the maps' scale, so shrinking every map lowers it; ``|cos|`` has a gradient of size
``1 / |S|`` that pushes a small map through zero; and a map cut to zero by Grad-CAM's ReLU has no gradient left,
so nothing brings it back while the logits (the class bias plus the mean of the *signed* map) still rank the
classes. Measured on BUSI (``benchmarks/RESULTS.md``, SIBnet section): 75-93 % of the class maps in the training
batches empty from epoch 2 on, 83 % of the validation true-class maps; each term alone left most maps alive
(empty in training: ``L_cd`` alone 7 %, ``L_sc`` alone 30 %); a quarter of the weights still collapsed (63 %).

The default formulation (:class:`SIBnetLoss`), chosen on BUSI's validation split among the measured alternatives:

    Z_k = sum_c w_c^k A_c (signed map)      S_k = relu(Z_k) (Grad-CAM)      P_k = S_k / mean_p |Z_k|
    total = CE + 1.2 L_cd(P) / L_cd(P, first) + 0.225 L_sc(P) / L_sc(P, first) + 1.0 floor(Z_y)

- ``P``: Grad-CAM maps divided by the mean magnitude of their *signed* map, so neither term can be lowered by
  shrinking the maps, and the scale does not vanish with the rectified map (dividing by the rectified map's own
  mass made the first-iteration scale vary by a coefficient of variation of 1.05 between batches and its gradient
  250x the cross-entropy's);
- ``floor`` (:func:`evidence_floor`): the true class's signed map must not be negative on balance; it pushes a
  map back up while part of it still shows. No term here (published or not) has a gradient at a map that is
  negative everywhere: the formulation keeps maps from dying, it does not revive dead ones;
- terms on the signed maps themselves (no ReLU) kept the maps alive but left the Grad-CAM maps *less* distinct
  than plain cross-entropy's and localised worse, so the ReLU maps stay what is trained;
- ``w_sc = 0.225``: with 0.9 the scaled coherence term's gradient is 3.4x the cross-entropy's at the first
  iteration (0.85x with 0.225), and the validation AUROC was higher.

``Z`` is upsampled to the input before the ReLU (Grad-CAM the explainer computes takes the ReLU first; the two
differ only near zero crossings, and every measurement above was made this way). Maps are ``(B, K, *spatial)``,
1D, 2D or 3D through one code path.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.cam import cam_maps
from medexplain.explain.hooks import last_conv_block
from medexplain.metrics.binarise import otsu_threshold
from medexplain.ndimage import separable_filter

WINDOW = 9
W_CD = 1.2
W_SC = 0.225
PUBLISHED = {"w_cd": 1.2, "w_sc": 0.9, "cam": "gradcam", "mass": "none", "floor": 0.0}
"""The :class:`SIBnetLoss` arguments of the paper's formulation (which collapses, see the module notes)."""


def _check_maps(maps: Tensor, what: str, min_classes: int = 1) -> None:
    if maps.ndim < 3:
        raise MedexplainError(f"{what}: maps must be (B, K, *spatial), got shape {tuple(maps.shape)}")
    if maps.shape[1] < min_classes:
        raise MedexplainError(f"{what}: needs maps of at least {min_classes} classes, got {maps.shape[1]}")


def class_saliency(
    model: nn.Module, x: Tensor, layer: str | None = None, *, rectify: bool = True
) -> tuple[Tensor, Tensor]:
    """Grad-CAM of every class at ``layer`` (default the last convolutional block), in the autograd graph.

    Args:
        model: classifier ``(B, C_in, *spatial) -> (B, K)``.
        x: ``(B, C_in, *spatial)``.
        rectify: Grad-CAM's ReLU; ``False`` gives the signed maps ``sum_c w_c A_c`` (upsampled).

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
    explanation = cam_maps(model, x, "all", layer, create_graph=True, rectify=rectify)
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
    """Sum of ``x`` (N, 1, *spatial) over the ``window^d`` box centred on each position (zero outside), separably
    (:func:`medexplain.ndimage.separable_filter`: banded matrix products)."""
    half = window // 2
    return separable_filter(F.pad(x, [half, half] * (x.ndim - 2)), x.new_ones(window))


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


CAMS = ("signed", "gradcam")
MASSES = ("none", "map", "signed")
DEAD_MAPS = 0.5  # share of empty class maps in an epoch's training batches above which training warns


class DeadMapsWarning(UserWarning):
    """Most Grad-CAM maps of a SIBnet-trained model have become empty (zero everywhere)."""


def warn_if_maps_died(epoch: int, empty_share: float) -> None:
    """Warn when more than :data:`DEAD_MAPS` of the class maps of an epoch's training batches were empty."""
    if empty_share > DEAD_MAPS:
        warnings.warn(
            f"epoch {epoch}: {empty_share:.0%} of the Grad-CAM class maps were empty (zero everywhere) in training; "
            "the SIBnet terms are minimised by dead maps, so its explanations say nothing (see train_empty_maps "
            "in metrics.csv)",
            DeadMapsWarning,
            stacklevel=2,
        )


def map_health(maps: Tensor) -> dict[str, Tensor]:
    """How alive Grad-CAM maps are: ``empty_maps``, the share of ``(B, K, *spatial)`` maps whose ReLU part is zero
    everywhere, and ``map_energy``, the mean of the squared ReLU part (what Grad-CAM shows); detached scalars."""
    shown = maps.detach().clamp(min=0).flatten(2)
    return {"empty_maps": (shown.amax(2) <= 0).double().mean(), "map_energy": shown.pow(2).mean().double()}


def evidence_floor(maps: Tensor, target: Tensor) -> Tensor:
    """Mean over samples of ``relu(-sum_p Z_p / sum_p |Z_p|)`` for the signed map ``Z`` of the true class.

    ``sum Z / sum |Z|`` is -1 for a map that is negative everywhere (an empty Grad-CAM) and +1 for a positive one;
    the floor costs nothing once the true class's map holds net positive evidence. Scale-free and in [0, 1]. Its
    gradient raises a map that is negative on balance while part of it is positive; at a map negative everywhere
    the ratio is constant (-1) and the gradient zero.

    Args:
        maps: signed maps ``(B, K, *spatial)``.
        target: ``(B,)`` class indices.
    """
    chosen = maps[torch.arange(len(maps), device=maps.device), target].flatten(1)
    balance = chosen.sum(1) / chosen.abs().sum(1).clamp(min=torch.finfo(maps.dtype).tiny)
    return (-balance).clamp(min=0).mean()


class SIBnetLoss(nn.Module):
    """The SIBnet guidance ``w_cd L_cd / L_cd(first) + w_sc L_sc / L_sc(first) + floor * evidence_floor``.

    Defaults: the non-collapsing formulation of the module notes; ``SIBnetLoss(**PUBLISHED)`` is the paper's.
    ``L_cd`` and ``L_sc`` are divided by their value at the first call where they are positive (kept in a buffer,
    so the scale follows ``.to(device)`` and ``state_dict``); until then a term is zero and stays unscaled. ``train``
    does not checkpoint this module: a resumed run takes the scales again from its first batch. The floor lies in
    [0, 1] and is not rescaled.

    Args:
        w_cd: weight of class distinctiveness (1.2 as published).
        w_sc: weight of spatial coherence (0.225; 0.9 as published).
        cam: the maps both terms see: ``"gradcam"`` (the ReLU maps, as published) or ``"signed"`` (before it).
        mass: divide every map before both terms by the mean absolute value of ``"map"``: itself, or
            ``"signed"``: its signed map (the same for ``cam="signed"``; for rectified maps a scale that does not
            vanish with them; the default); ``"none"``: raw maps, as published.
        floor: weight of :func:`evidence_floor` on the true class's signed map (1.0; 0: off, as published).
        layer: the layer whose Grad-CAM is trained (default the model's last convolutional block).
        window: neighbourhood side of the coherence term.
    """

    cd_scale: Tensor | None
    sc_scale: Tensor | None

    def __init__(
        self,
        w_cd: float = W_CD,
        w_sc: float = W_SC,
        *,
        cam: str = "gradcam",
        mass: str = "signed",
        floor: float = 1.0,
        layer: str | None = None,
        window: int = WINDOW,
    ):
        super().__init__()
        if cam not in CAMS:
            raise MedexplainError(f"unknown SIBnet `cam` {cam!r}; available: {', '.join(CAMS)}")
        self.w_cd, self.w_sc, self.layer = float(w_cd), float(w_sc), layer
        if mass not in MASSES:
            raise MedexplainError(f"unknown SIBnet `mass` {mass!r}; available: {', '.join(MASSES)}")
        self.cam, self.mass, self.floor = cam, mass, float(floor)
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

    def forward(
        self, model: nn.Module, x: Tensor, target: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(penalty, logits (B, K), parts)`` for ``x`` ``(B, C, *spatial)``; ``parts`` holds the raw terms and
        :func:`map_health`. ``target`` ``(B,)`` is needed by the floor."""
        signed, logits = class_saliency(model, x, self.layer, rectify=False)
        if signed.shape[1] < 2:
            raise MedexplainError(
                f"SIBnet loss: the model has {signed.shape[1]} output; class distinctiveness needs 2+"
            )
        maps = signed if self.cam == "signed" else signed.clamp(min=0)
        if self.mass != "none":
            scale = (maps if self.mass == "map" else signed).abs().flatten(2).mean(2)
            maps = maps / scale.clamp(min=torch.finfo(maps.dtype).tiny).view(*scale.shape, *[1] * (maps.ndim - 2))
        cd, sc = self.distinctiveness(maps), self.coherence(maps)
        penalty = self.w_cd * self._scaled(cd, "cd_scale") + self.w_sc * self._scaled(sc, "sc_scale")
        parts = {"distinctiveness": cd, "coherence": sc}
        if self.floor > 0:
            if target is None:
                raise MedexplainError("SIBnet loss: the evidence floor needs the true classes")
            parts["floor"] = evidence_floor(signed, target)
            penalty = penalty + self.floor * parts["floor"]
        return penalty, logits, {**parts, **map_health(signed)}
