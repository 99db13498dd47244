"""The Ray engine: :class:`RayExecutor` runs a workflow's batches on a pool of Ray actors.

Any workflow of :mod:`medexplain.workflows` (explaining, evaluating) runs on it unchanged: each actor builds the
workflow's state once (``setup()``: the model, the dataset, the explainers), takes shards of whole batches and
returns their results to the driver, which writes them as in a single-process run. Batches are those of the
single-process run, so the numbers are the same and every file is written once, by one process, atomically.
Fault tolerance has two layers: the actors are restarted by Ray (``max_restarts``) with their in-flight call
retried (``max_task_retries``), and a shard whose actor is lost for good is submitted again to a fresh actor.
Re-runs skip finished work through the workflows' own records (the explanations' progress, kept evaluation
batches).

Ray (https://docs.ray.io) is only imported here. Clusters: ``address=None`` starts a local one (or joins the one
this process already started); ``"auto"`` or ``host:port`` joins a cluster started with ``ray start --head``.
"""

from __future__ import annotations

import math
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions
import torch

from medexplain.allocator import keep_freed_memory
from medexplain.errors import MedexplainError

ACTOR_RESTARTS = 2  # Ray restarts a crashed actor this often and retries the call it was running
SHARD_ATTEMPTS = 3  # then the driver submits a shard to a fresh actor this often before giving up
CONNECT_TIMEOUT_S = 5.0
_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
         ray.exceptions.NodeDiedError)  # fmt: skip


# ----------------------------------------------------------------------------------------------------- cluster
def _probe(address: str) -> None:
    """Fail fast, in one line, when nothing listens at ``host:port`` (``ray.init`` would wait for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise MedexplainError(f"`address` {address!r}: expected host:port, ray://host:port or 'auto'",
                              parameter="address")  # fmt: skip
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise MedexplainError(
            f"`address` {address}: no Ray cluster reachable ({error}); start one with `ray start --head` "
            "or check the address",
            parameter="address",
        ) from None


@contextmanager
def cluster(address: str | None = None, workers: int | None = None) -> Iterator[None]:
    """Join (or start) a Ray cluster for the duration of the block; one started here is shut down afterwards."""
    if address:
        _probe(address)
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(
            address=address or None,
            num_cpus=workers if not address else None,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, TimeoutError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MedexplainError(f"`address` {address}: cannot join the Ray cluster ({first_line})",
                              parameter="address") from None  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()


def _gpus(device: str, gpus_per_worker: float | None) -> float:
    """GPUs per worker: as given, else one per worker when the device is CUDA (Ray sets CUDA_VISIBLE_DEVICES)."""
    return gpus_per_worker if gpus_per_worker is not None else (1.0 if device.startswith("cuda") else 0.0)


def _worker_count(workers: int | None, gpus_per_worker: float) -> int:
    if workers is not None:
        return workers
    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) / gpus_per_worker))
    return max(1, int(resources.get("CPU", 1)))


# -------------------------------------------------------------------------------------------------------- pool
@dataclass
class PoolReport:
    """What happened: shards run, shards submitted again after their actor was lost."""

    shards: int = 0
    resubmitted: int = 0


def run_shards(
    make_actor: Callable[[], Any],
    workers: int,
    shards: Sequence[Any],
    call: Callable[[Any, Any], Any],
    on_result: Callable[[int, Any], None],
    *,
    on_dispatch: Callable[[Any, int], None] | None = None,
) -> PoolReport:
    """Run ``call(actor, shard)`` (an ``ObjectRef``) for every shard on a pool of ``workers`` actors.

    ``on_result(shard_number, result)`` runs in the driver as results arrive (in completion order). A shard whose
    actor is lost after Ray's own restarts is given to a fresh actor, at most :data:`SHARD_ATTEMPTS` times; an
    error raised by the work itself is not retried (it would fail again) and is re-raised here.
    ``on_dispatch(actor, shard_number)`` is a hook for fault-injection tests.
    """
    report = PoolReport()
    actors = [make_actor() for _ in range(min(workers, len(shards)))]
    queue = deque(range(len(shards)))
    attempts = [0] * len(shards)
    in_flight: dict[Any, tuple[int, int]] = {}

    def dispatch(slot: int) -> None:
        if queue:
            number = queue.popleft()
            attempts[number] += 1
            in_flight[call(actors[slot], shards[number])] = (slot, number)
            if on_dispatch is not None:
                on_dispatch(actors[slot], number)

    try:
        for slot in range(len(actors)):
            dispatch(slot)
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            slot, number = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except _LOST as error:
                if getattr(error, "actor_init_failed", False):  # the worker's set-up failed: it would fail again
                    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                    raise MedexplainError(f"a Ray worker could not start: {lines[-1]}") from None
                if attempts[number] >= SHARD_ATTEMPTS:
                    raise MedexplainError(f"shard {number} failed {attempts[number]} times: {error}") from None
                report.resubmitted += 1
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = make_actor()
                queue.appendleft(number)
            except ray.exceptions.RayTaskError as error:
                if isinstance(error.cause, MedexplainError):
                    raise error.cause from None
                raise
            else:
                on_result(number, result)
                report.shards += 1
            dispatch(slot)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return report


class Worker:
    """A Ray actor holding one workflow state (built once by ``setup()``), running ``work`` on shards of batches."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        # One torch thread per CPU that Ray gave this actor (as the single-process engine uses its own).
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        keep_freed_memory()  # as the command line does in its own process
        self.state = setup()

    def run(self, work: Callable[[Any, Any], Any], batches: list[Any]) -> list[Any]:
        """``work(state, batch)`` of every batch of the shard, in order."""
        return [work(self.state, batch) for batch in batches]


class RayExecutor:
    """A :class:`~medexplain.workflows.executors.Executor` over Ray actors.

    Args:
        address: the cluster to join (``host:port``, ``ray://host:port`` or ``"auto"``); ``None`` starts a local
            one for each run. An unreachable address is refused here, before anything is written.
        workers: actors (default: one per CPU of the cluster, or per GPU with a CUDA ``device``).
        device: where the workers compute (``"cpu"``, ``"cuda"``); with CUDA each actor gets a GPU.
        gpus_per_worker: GPUs each actor reserves (default: 1 with CUDA, else 0).
        shard_batches: batches per shard (default: about four shards per worker, so a slow or restarted worker
            does not hold up the end).
        on_dispatch: ``on_dispatch(actor, shard_number)`` after each dispatch (a hook for fault injection).

    ``report`` holds the :class:`PoolReport` of the last :meth:`map`.
    """

    def __init__(
        self, *, address: str | None = None, workers: int | None = None, device: str = "cpu",
        gpus_per_worker: float | None = None, shard_batches: int | None = None,
        on_dispatch: Callable[[Any, int], None] | None = None,
    ) -> None:  # fmt: skip
        if address:
            _probe(address)
        if workers is not None and workers < 1:
            raise MedexplainError(f"`workers` must be at least 1, got {workers}", parameter="workers")
        self.address, self.workers, self.device = address, workers, device
        self.gpus = _gpus(device, gpus_per_worker)
        self.shard_batches = shard_batches
        self.on_dispatch = on_dispatch
        self.report = PoolReport()

    def map(
        self,
        setup: Callable[[], Any],
        work: Callable[[Any, Any], Any],
        batches: Sequence[Any],
        on_result: Callable[[int, Any], None],
    ) -> None:
        """Run ``work(state, batch)`` for every batch on the actors; results reach ``on_result`` in the driver."""
        self.report = PoolReport()
        if not batches:
            return
        with cluster(self.address, self.workers):
            count = _worker_count(self.workers, self.gpus)
            size = self.shard_batches or max(1, math.ceil(len(batches) / (4 * count)))
            numbers = [list(range(start, min(start + size, len(batches)))) for start in range(0, len(batches), size)]
            actor = ray.remote(num_cpus=1, num_gpus=self.gpus, max_restarts=ACTOR_RESTARTS,
                               max_task_retries=ACTOR_RESTARTS)(Worker)  # fmt: skip

            def on_shard(shard: int, results: list[Any]) -> None:
                for number, result in zip(numbers[shard], results, strict=True):
                    on_result(number, result)

            self.report = run_shards(
                lambda: actor.remote(setup), count, [[batches[n] for n in shard] for shard in numbers],
                lambda worker, shard: worker.run.remote(work, shard), on_shard, on_dispatch=self.on_dispatch,
            )  # fmt: skip
