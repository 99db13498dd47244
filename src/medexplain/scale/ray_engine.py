"""The Ray engine of ``medexplain explain`` and ``medexplain evaluate`` (``--engine ray``).

The work is cut into shards of whole batches (the same batches as the single-process run, so the numbers are the
same); a pool of Ray actors, each holding the model once, takes one shard at a time; the driver receives the
results and writes them with the single-process writers, so the output layout is the same and every file is
written once, by one process, atomically. Fault tolerance has two layers: the actors are restarted by Ray
(``max_restarts``) with their in-flight call retried (``max_task_retries``), and a shard whose actor is lost for
good is submitted again to a fresh actor. A re-run skips finished work: explanation items already in the index,
and evaluation shards kept in ``.<out>.shards/`` beside the output until the output is complete.

Ray (https://docs.ray.io) is only imported here. Clusters: ``address=None`` starts a local one (or joins the one
this process already started); ``"auto"`` or ``host:port`` joins a cluster started with ``ray start --head``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medexplain.errors import MedexplainError
from medexplain.files import write_text
from medexplain.metrics.evaluate import Evaluation

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
        raise MedexplainError(f"--address {address!r}: expected host:port, ray://host:port or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise MedexplainError(
            f"--address {address}: no Ray cluster reachable ({error}); start one with `ray start --head` "
            "or check the address"
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
        raise MedexplainError(f"--address {address}: cannot join the Ray cluster ({first_line})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _gpus(device: str, gpus_per_worker: float | None) -> float:
    """GPUs per worker: as given, else one per worker when the device is CUDA (Ray sets CUDA_VISIBLE_DEVICES)."""
    return gpus_per_worker if gpus_per_worker is not None else (1.0 if device.startswith("cuda") else 0.0)


def _worker_count(workers: int | None, gpus_per_worker: float) -> int:
    if workers is not None:
        if workers < 1:
            raise MedexplainError(f"--workers must be at least 1, got {workers}")
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


def _actor_class(cls: type, device: str, gpus_per_worker: float | None) -> Any:
    gpus = _gpus(device, gpus_per_worker)
    return ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)(cls)


def _progress(show: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    return Progress(*columns, disable=not show, transient=False)


# ----------------------------------------------------------------------------------------------------- explain
def _threads() -> None:
    """One torch thread per CPU that Ray gave this actor (as the single-process engine uses its own)."""
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))


Inputs = Callable[[], tuple[Any, Any]]  # picklable; returns (model or None, dataset) as the caller loads them


class ExplainWorker:
    """A Ray actor holding the model, dataset and explainers, explaining shards of dataset indices."""

    def __init__(self, inputs: Inputs, methods: list[str], layer: str | None, device: str) -> None:
        from medexplain.explain.run import build_explainers

        _threads()
        self.device = device
        self.model, self.dataset = inputs()
        self.explainers = build_explainers(methods, layer)

    def explain(self, batches: list[list[int]], done: dict[str, list[str]], target: Any) -> list[tuple]:
        """``(item_id, index, label, targets, method, maps)`` of every batch, skipping ``done[item_id]`` methods."""
        from medexplain.explain.run import explain_batch

        def is_done(item_id: str, method: str) -> bool:
            return method in done.get(item_id, ())

        records = []
        for indices in batches:
            batch = explain_batch(self.model, self.dataset, indices, self.explainers, target, self.device, is_done)
            records.extend((*record[:5], record[5].numpy()) for record in batch)
        return records


def explain_with_ray(
    inputs: Inputs,
    size: int,
    methods: Sequence[str],
    out: str | os.PathLike[str],
    header: Mapping[str, Any],
    *,
    layer: str | None = None,
    target: Any = "predicted",
    batch_size: int = 16,
    map_format: str = "npy",
    device: str = "cpu",
    shard_batches: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    progress: bool = True,
    on_dispatch: Callable[[Any, int], None] | None = None,
) -> PoolReport:
    """``explain_dataset`` on a Ray cluster: same ``out`` folder, byte for byte.

    ``inputs()`` (run once by each worker) returns the model and the dataset of ``size`` items. The index range
    is cut into shards of ``shard_batches`` whole batches (batch starts at multiples of ``batch_size``, as in the
    single-process run); the driver writes every returned map and rewrites the index after each shard.
    """
    from medexplain.explain.base import explainer_params
    from medexplain.explain.run import build_explainers
    from medexplain.explain.store import ExplanationWriter

    if batch_size < 1:
        raise MedexplainError(f"--batch-size must be positive, got {batch_size}")
    explainers = build_explainers(list(methods), layer)
    with cluster(address, workers):
        writer = ExplanationWriter(out, header, {n: explainer_params(e) for n, e in explainers.items()}, map_format)
        writer.flush()
        done = {item_id: [m for m in explainers if writer.has(item_id, m)] for item_id in writer.items}
        complete = {writer.items[i]["index"] for i, finished in done.items() if len(finished) == len(explainers)}
        batches = [list(range(s, min(s + batch_size, size))) for s in range(0, size, batch_size)]
        batches = [b for b in batches if not complete.issuperset(b)]
        count = _worker_count(workers, _gpus(device, gpus_per_worker))
        shards = _chunks(batches, shard_batches or _shard_batches(len(batches), count))
        worker = _actor_class(ExplainWorker, device, gpus_per_worker)
        arguments = (inputs, list(methods), layer, device)
        with _progress(progress) as bar:
            task = bar.add_task("explaining", total=size, completed=size - sum(map(len, batches)))

            def on_result(number: int, records: list[tuple]) -> None:
                for record in records:
                    writer.write(*record)
                writer.flush()
                bar.advance(task, sum(map(len, shards[number])))

            return run_shards(
                lambda: worker.remote(*arguments), count, shards,
                lambda actor, shard: actor.explain.remote(shard, _done_in(shard, done, writer), target),
                on_result, on_dispatch=on_dispatch,
            )  # fmt: skip


def _done_in(shard: list[list[int]], done: Mapping[str, list[str]], writer: Any) -> dict[str, list[str]]:
    """The finished methods of the items of ``shard`` (sent along so a resumed shard skips them)."""
    indices = {i for batch in shard for i in batch}
    return {item_id: methods for item_id, methods in done.items() if writer.items[item_id]["index"] in indices}


def _shard_batches(batches: int, workers: int) -> int:
    """Batches per shard: about four shards per worker, so a slow or restarted worker does not hold up the end."""
    return max(1, math.ceil(batches / (4 * workers)))


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


# ---------------------------------------------------------------------------------------------------- evaluate
class EvaluateWorker:
    """A Ray actor holding the stored explanations, dataset and model, scoring shards of stored maps."""

    def __init__(
        self, explanations: str, inputs: Inputs, device: str, metric_names: list[str], mask_name: str | None,
        batch_size: int, make_explainers: Callable[[dict, list[str]], dict],
    ) -> None:  # fmt: skip
        from medexplain.explain.store import load_explanations

        _threads()
        self.stored = load_explanations(explanations)
        self.model, self.dataset = inputs()
        self.explainers = make_explainers(dict(self.stored.methods), metric_names)
        self.settings = {"metric_names": metric_names, "mask_name": mask_name, "batch_size": batch_size,
                         "device": device}  # fmt: skip

    def evaluate(self, shard: tuple[str, list[int]]) -> dict[str, Any]:
        """Per-sample rows, NaN count and summed deletion/insertion curves of one method's maps of some items."""
        from medexplain.metrics.evaluate import evaluate_explanations

        method, positions = shard
        chosen = [self.stored.items[p] for p in positions]
        items = tuple(replace(item, maps={method: item.maps[method]}) for item in chosen)
        part = replace(self.stored, items=items)
        rows, empty, means = evaluate_explanations(part, self.dataset, model=self.model, explainers=self.explainers,
                                                   progress=False, **self.settings)  # fmt: skip
        units = sum(len(item.targets or (-1,)) for item in items)
        curves = {mode: [value * units for value in curve] for mode, curve in means.get(method, {}).items()}
        return {"rows": rows, "empty": empty, "curves": curves, "units": units}


@dataclass
class ScaledEvaluation:
    """The gathered result: what ``evaluate_explanations`` returns in one process, rows in its order, and the
    pool's report."""

    evaluation: Evaluation
    report: PoolReport


def evaluate_with_ray(
    explanations: str | os.PathLike[str],
    inputs: Inputs,
    out: str | os.PathLike[str],
    metric_names: Sequence[str],
    fingerprint: Mapping[str, Any],
    *,
    make_explainers: Callable[[dict, list[str]], dict],
    mask_name: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    overwrite: bool = False,
    shard_batches: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    progress: bool = True,
    on_dispatch: Callable[[Any, int], None] | None = None,
) -> ScaledEvaluation:
    """``evaluate_explanations`` (scores and mean curves, one pass) on a Ray cluster, gathered by the driver.

    ``inputs()`` (run once by each worker) returns the model (or ``None``) and the dataset that was explained;
    ``fingerprint`` (e.g. model, data, split) identifies them in the names of the kept shards.

    Shards are runs of whole batches of one method, cut at item boundaries, so every map is scored in the same
    batch as in the single-process run and the rows come back identical and in the same order. Each finished
    shard is kept in ``.<out>.shards/`` beside ``out`` (a re-run skips it) until the caller has written ``out``
    and calls :func:`forget_shards`. The mean curves equal the single-process ones up to float rounding (they
    are summed per shard).
    """
    from medexplain.explain.store import INDEX, load_explanations
    from medexplain.metrics.evaluate import method_batches, stored_units

    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MedexplainError(f"{out}: directory exists and is not empty (use --overwrite to replace it)")
    if batch_size < 1:
        raise MedexplainError(f"--batch-size must be positive, got {batch_size}")
    stored = load_explanations(explanations)
    fingerprint = {
        **fingerprint, "index": hashlib.sha256((Path(explanations) / INDEX).read_bytes()).hexdigest(),
        "metrics": list(metric_names), "mask": mask_name, "batch_size": batch_size,
    }  # fmt: skip
    batches = list(method_batches(stored_units(stored), batch_size))
    position = {item.id: p for p, item in enumerate(stored.items)}
    with cluster(address, workers):
        count = _worker_count(workers, _gpus(device, gpus_per_worker))
        per_shard = shard_batches or _shard_batches(len(batches), count)
        shards: list[tuple[str, list[int]]] = []
        in_shard = 0
        for batch in batches:
            method = batch[0].method
            if not shards or shards[-1][0] != method or (batch[0].k == 0 and in_shard >= per_shard):
                shards.append((method, []))
                in_shard = 0
            positions = shards[-1][1]
            for unit in batch:  # an item whose targets span two batches is listed once
                if positions[-1:] != [position[unit.item.id]]:
                    positions.append(position[unit.item.id])
            in_shard += 1
        cache = shard_folder(out)
        paths = [cache / f"{_digest({**fingerprint, 'shard': shard})}.json" for shard in shards]
        results: dict[int, dict[str, Any]] = {n: _read_json(p) for n, p in enumerate(paths) if p.is_file()}
        todo = [n for n in range(len(shards)) if n not in results]
        worker = _actor_class(EvaluateWorker, device, gpus_per_worker)
        arguments = (str(explanations), inputs, device, list(metric_names), mask_name, batch_size, make_explainers)
        with _progress(progress) as bar:
            task = bar.add_task("evaluating", total=len(shards), completed=len(shards) - len(todo))

            def on_result(number: int, result: dict[str, Any]) -> None:
                write_text(paths[todo[number]], json.dumps(result))
                results[todo[number]] = result
                bar.advance(task)

            report = run_shards(
                lambda: worker.remote(*arguments), count, [shards[n] for n in todo],
                lambda actor, shard: actor.evaluate.remote(shard), on_result, on_dispatch=on_dispatch,
            ) if todo else PoolReport()  # fmt: skip
    rows = [row for n in range(len(shards)) for row in results[n]["rows"]]
    sums: dict[str, dict[str, list[float]]] = {}
    units: dict[str, int] = {}
    for n, (method, _) in enumerate(shards):
        units[method] = units.get(method, 0) + results[n]["units"]
        for mode, curve in results[n]["curves"].items():
            total = sums.setdefault(method, {}).get(mode)
            sums[method][mode] = curve if total is None else [a + b for a, b in zip(total, curve, strict=True)]
    curves = {m: {mode: [v / units[m] for v in curve] for mode, curve in c.items()} for m, c in sums.items()}
    empty = sum(results[n]["empty"] for n in range(len(shards)))
    return ScaledEvaluation(Evaluation(rows, empty, curves), report)


def shard_folder(out: str | os.PathLike[str]) -> Path:
    """Where the finished evaluation shards of ``out`` are kept until ``out`` is written."""
    out = Path(out)
    return out.parent / f".{out.name}.shards"


def forget_shards(out: str | os.PathLike[str]) -> None:
    """Remove the kept shards once ``out`` is complete."""
    shutil.rmtree(shard_folder(out), ignore_errors=True)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
