"""Training objectives of the simulator (Liu et al., IPMI 2021) and the frozen-classifier context.

All losses return a scalar mean over the batch; fields are ``(B, D, *spatial)`` in voxel units.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from medexplain.models.modes import evaluation_mode
from medexplain.simulate.transform import warp


def disease_logit(outputs: Tensor, disease_class: int = 1) -> Tensor:
    """The classifier's evidence for the disease, ``(B, K) -> (B,)``.

    One output: that logit. ``K >= 2`` outputs: the log-odds of ``disease_class`` against the others,
    ``z_k - logsumexp(z_{j != k})`` (``z_1 - z_0`` for two classes), so ``> 0`` means predicted diseased.
    """
    if outputs.shape[1] == 1:
        return outputs[:, 0]
    others = torch.cat([outputs[:, :disease_class], outputs[:, disease_class + 1 :]], dim=1)
    return outputs[:, disease_class] - torch.logsumexp(others, dim=1)


def hinge_loss(original: Tensor, simulated: Tensor, direction: Tensor, margin: float) -> Tensor:
    """``mean ReLU((F(x) - F(x')) * d + b)``: the simulated logit must move by at least ``margin`` along ``d``."""
    return torch.relu((original - simulated) * direction + margin).mean()


def cycle_loss(image: Tensor, forward: Tensor, backward: Tensor) -> Tensor:
    """Mean squared difference between ``image`` and the image warped by ``forward`` and then by ``backward``."""
    return (warp(warp(image, forward), backward) - image).pow(2).mean()


def smoothness_loss(field: Tensor) -> Tensor:
    """L1 norm of the spatial gradients: sum over axes of the mean ``|u(p + e_k) - u(p)|``."""
    return sum(field.diff(dim=axis).abs().mean() for axis in range(2, field.dim()))


def displacement_loss(field: Tensor) -> Tensor:
    """Mean length ``|u(p)|`` of the displacements (voxels): a minimal-change penalty.

    An L1 penalty over voxels on the Euclidean length of each displacement (a group lasso), so deforming a few
    voxels a lot costs the same as deforming many a little: a simulator that must move the logit while paying it
    deforms only where the classifier is sensitive.
    """
    return field.norm(dim=1).mean()


def magnitude_loss(field: Tensor, bound: float) -> Tensor:
    """Mean ``ReLU(|u(p)| - bound)``: penalises displacements longer than ``bound`` voxels."""
    return torch.relu(field.norm(dim=1) - bound).mean()


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Use ``model`` as a fixed function: parameters stop requiring gradients and it runs in eval mode.

    Gradients still flow *through* the model to its input. The ``requires_grad`` flag of every parameter and
    the training mode of every submodule are restored on exit, also after an exception.
    """
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        with evaluation_mode(model):
            yield model
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
