"""The result type of every explainer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from medexplain.errors import MedexplainError


@dataclass(frozen=True)
class Explanation:
    """Raw attribution maps for a batch, at input resolution, never normalised or coloured.

    Attributes:
        maps: ``(B, K, *spatial)`` one map per sample and explained target; ``spatial`` is ``(H, W)`` in 2D
            and ``(D, H, W)`` in 3D. Channels of the input are already reduced by the method (e.g. summed
            for gradient methods); signed methods keep their sign.
        targets: ``(B, K)`` long, the class index explained by each map, or ``-1`` where the target was a
            callable on the model output rather than a class.
        method: registry name of the explainer, e.g. ``"gradcam"``.
        params: the explainer's hyperparameters, so the map can be reproduced.
        logits: ``(B, C)`` model output on the explained input, when the method computed it.
        extras: method-specific tensors, e.g. ``"completeness_delta"`` ``(B, K)`` for integrated gradients.
    """

    maps: Tensor
    targets: Tensor
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    logits: Tensor | None = None
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.maps.ndim < 3:
            raise MedexplainError(
                f"{self.method}: maps must be (B, K, *spatial), got shape {tuple(self.maps.shape)}"
            )
        if tuple(self.targets.shape) != tuple(self.maps.shape[:2]):
            raise MedexplainError(
                f"{self.method}: targets shape {tuple(self.targets.shape)} does not match maps "
                f"(B, K) = {tuple(self.maps.shape[:2])}"
            )
        if self.logits is not None and self.logits.shape[0] != self.maps.shape[0]:
            raise MedexplainError(
                f"{self.method}: logits batch {self.logits.shape[0]} != maps batch {self.maps.shape[0]}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.maps.shape[0])

    @property
    def num_targets(self) -> int:
        return int(self.maps.shape[1])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.maps.shape[2:])

    @property
    def spatial_dims(self) -> int:
        return self.maps.ndim - 2

    def detach(self) -> Explanation:
        """A copy whose tensors are detached from any autograd graph."""
        return self._map_tensors(lambda t: t.detach())

    def to(self, device: torch.device | str) -> Explanation:
        return self._map_tensors(lambda t: t.to(device))

    def _map_tensors(self, fn: Any) -> Explanation:
        return replace(
            self,
            maps=fn(self.maps),
            targets=fn(self.targets),
            logits=None if self.logits is None else fn(self.logits),
            extras={name: fn(value) for name, value in self.extras.items()},
        )
