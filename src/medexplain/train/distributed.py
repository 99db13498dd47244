"""Data-parallel training with ``torchrun``: ``medexplain train`` unchanged, N processes, one model.

``torchrun --nproc_per_node N -m medexplain train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; :func:`context` then joins the process group (gloo on CPU, NCCL on CUDA, one GPU per local
rank) and the training loop runs as DistributedDataParallel (Li et al., "PyTorch Distributed: Experiences on
Accelerating Data Parallel Training", VLDB 2020). Without those variables it is the single-process no-op.

The sampler is a distributed *batch* sampler: every rank draws the same seeded permutation (all ranks are seeded
identically), and each global batch of ``batch_size`` samples is split into contiguous per-rank parts. So every
optimisation step sees the same samples as the single-process run, and the loss is re-weighted by each part's
share so that DDP's gradient average equals the gradient of the global batch mean. Augmentation draws from the
shared generator for the whole global batch on every rank (so the generators stay in step), then each rank keeps
its part. ``torch.utils.data.DistributedSampler`` is not used: it shuffles each rank with its own stream and
pads, which breaks this equivalence.

BatchNorm: on CUDA the model's BatchNorm layers become ``SyncBatchNorm`` (statistics over the global batch, as
in one process); on CPU SyncBatchNorm is not available in PyTorch, so statistics are per rank (per part of the
batch) and the running statistics kept are rank 0's (DDP broadcasts buffers). Models without BatchNorm train
to the same weights as one process, up to float rounding of the gradient reduction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from medexplain.errors import MedexplainError


@dataclass(frozen=True)
class Context:
    """This process's place in the job: ``rank`` of ``world`` processes (``world == 1``: single process)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder and shows progress (rank 0)."""
        return self.rank == 0

    def prepare(self, net: nn.Module) -> nn.Module:
        """``net`` with SyncBatchNorm when data-parallel on CUDA (see the module docstring); else unchanged."""
        on_cuda = next(net.parameters()).is_cuda
        return nn.SyncBatchNorm.convert_sync_batchnorm(net) if self.world > 1 and on_cuda else net

    def wrap(self, net: nn.Module) -> Callable[..., Any]:
        """``step(objective, x, target)`` = ``objective(net, x, target)``, through DDP when data-parallel."""
        if self.world == 1:
            return lambda objective, x, target: objective(net, x, target)
        device_ids = [net_device.index] if (net_device := next(net.parameters()).device).type == "cuda" else None
        return DistributedDataParallel(_Step(net), device_ids=device_ids, find_unused_parameters=True)

    def part(self, size: int) -> tuple[slice, float]:
        """This rank's contiguous slice of a global batch of ``size`` samples and its share of the batch."""
        if size < self.world:
            raise MedexplainError(f"`batch_size`: a batch of {size} cannot be split over {self.world} processes",
                                  parameter="batch_size")  # fmt: skip
        bounds = [size * r // self.world for r in range(self.world + 1)]
        start, stop = bounds[self.rank], bounds[self.rank + 1]
        return slice(start, stop), (stop - start) / size

    def sum(self, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` summed over all ranks (float64 all-reduce; identity in a single process)."""
        if self.world == 1 or not values:
            return dict(values)
        names = sorted(values)
        tensor = torch.tensor([values[name] for name in names], dtype=torch.float64, device=_reduce_device())
        dist.all_reduce(tensor)
        return dict(zip(names, tensor.tolist(), strict=True))

    def barrier(self) -> None:
        """Wait for every rank (e.g. before reading a file rank 0 wrote)."""
        if self.world > 1:
            dist.barrier()


class _Step(nn.Module):
    """One loss evaluation as a module, so DDP sees every model call the objective makes (``evidence_map`` too)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, objective: Callable[..., Any], x: Tensor, target: Tensor) -> Any:
        return objective(self.net, x, target)


def is_main_process() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` job, or not part of one (what prints the summary)."""
    return int(os.environ.get("RANK", "0")) == 0


def context(device: torch.device) -> tuple[Context, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1; returns the context and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world), device


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
