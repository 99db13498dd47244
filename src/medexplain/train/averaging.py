"""An exponential moving average (EMA) of a model's weights, for evaluation and the saved checkpoint.

Polyak & Juditsky, "Acceleration of stochastic approximation by averaging", SIAM J. Control Optim. 1992; the
warm-up of the decay follows TensorFlow's ``ExponentialMovingAverage(num_updates=...)``. After update ``t``
(``t = 1, 2, ...``) every floating-point parameter and buffer ``a`` of the averaged copy is

    a <- d_t a + (1 - d_t) w,    d_t = min(decay, t / (t + 9))

with ``w`` the live model's value; the average starts as a copy of the live model, and the warm-up (``d_1 = 0.1``,
``d_t`` reaches ``decay`` after ``9 d / (1 - d)`` updates) lets it forget the random initialisation quickly.
BatchNorm running statistics are averaged the same way (as ``torch.optim.swa_utils.AveragedModel(use_buffers=True)``
does); integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """EMA of ``model``'s parameters and buffers; ``average`` is a separate module in eval mode.

    Args:
        model: the live model (its current state is the average's starting point).
        decay: the EMA decay ``d`` in (0, 1); the horizon is about ``1 / (1 - d)`` optimisation steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.average = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """``d_t`` of the next update."""
        t = self.updates + 1
        return min(self.decay, t / (t + 9))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state (call after every optimiser step)."""
        decay = self.current_decay()
        live = model.state_dict()
        for name, value in self.average.state_dict().items():
            if value.is_floating_point():
                value.lerp_(live[name].to(value), 1 - decay)
            else:
                value.copy_(live[name])
        self.updates += 1
