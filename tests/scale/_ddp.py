"""Helpers of the distributed-training test: a BatchNorm-free model and one torchrun-like rank."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from medexplain.models.registry import MODELS, register_model

TINY = "tiny-ddp-test-net"


def register_tiny() -> None:
    """A conv - ReLU - global-average - linear classifier without BatchNorm (2D and 3D by ``spatial_dims``)."""
    if TINY in MODELS.available():
        return

    @register_model(TINY)
    def tiny(*, in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
        conv = getattr(nn, f"Conv{spatial_dims}d")
        pool = getattr(nn, f"AdaptiveAvgPool{spatial_dims}d")
        return nn.Sequential(conv(in_channels, 6, 3), nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(6, num_classes))


def rank_main(rank: int, world: int, port: int, data: Path, out: Path, settings: dict[str, Any]) -> None:
    """What ``torchrun`` would start: the environment of rank ``rank`` of ``world``, then the library's ``train``."""
    from medexplain.train import TrainConfig, train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    register_tiny()
    try:
        train(TrainConfig(TINY, **settings), data, out, device="cpu", progress=False)
    finally:
        dist.destroy_process_group()
