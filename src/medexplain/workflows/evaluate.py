"""Evaluating stored explanations: per-sample scores of every metric, mean curves, chance levels, a summary.

:func:`evaluate_run` scores an explanations folder on any :class:`~medexplain.workflows.executors.Executor` and
writes a scores folder (:mod:`medexplain.workflows.scores`); :func:`evaluate_explanations` scores maps with a
model and dataset already in memory. Every stored map ``(K, *spatial)`` is scored once per explained target, in
batches of one method; what each metric needs (a mask, the model, the explainer to re-run, its perturbation
curve) comes from its registered metadata. Curve metrics are scored from their curves, so the mean curves come
from the same forward passes as the scores. Finished batches of an interrupted :func:`evaluate_run` are kept
beside the output (``.<out>.shards/``) and skipped by the next run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from medexplain.data import collate
from medexplain.errors import MedexplainError
from medexplain.explain.budget import check_budget
from medexplain.files import read_json, write_text
from medexplain.metrics._inputs import EmptyMaskWarning
from medexplain.metrics.faithfulness import curve_area
from medexplain.metrics.registry import METRICS, get_metric, metric_info
from medexplain.metrics.robustness import auroc_under_noise
from medexplain.models import load_run, read_config, run_dataset
from medexplain.progress import progress_bar
from medexplain.workflows.executors import Executor, LocalExecutor
from medexplain.workflows.explain import build_explainers
from medexplain.workflows.explanations import INDEX, StoredExplanations, StoredItem, load_explanations
from medexplain.workflows.scores import summary_rows, write_scores

Curves = dict[str, dict[str, list[float]]]
"""Mean curves per method and mode: ``{method: {"deletion": [...], "insertion": [...]}}``."""


class Evaluation(NamedTuple):
    """Scores of stored maps.

    ``rows``: per-sample rows (:data:`~medexplain.workflows.scores.ROW_FIELDS`); ``empty``: the number of NaN
    scores of images whose mask is empty; ``undefined``: the number of other NaN scores (maps a metric cannot
    score, e.g. a map without positive relevance has none to locate); ``curves``: the mean perturbation curve per method
    and mode (``steps + 1`` model scores at evenly spaced fractions of perturbed features; the area under a mean
    curve is the mean of the scores), empty without curve metrics; ``chance``: the pointing game's chance level
    (the mean share of the image a non-empty mask covers), empty without masks.
    """

    rows: list[dict[str, Any]]
    empty: int
    undefined: int
    curves: Curves
    chance: dict[str, float]


@dataclass(frozen=True)
class Unit:
    """One stored map to score: the ``item``, its ``method``, and the ``k``-th explained ``target``."""

    item: StoredItem
    method: str
    target: int
    k: int


def stored_units(stored: StoredExplanations) -> list[Unit]:
    """Every stored map to score: one :class:`Unit` per item, method and explained target, in index order."""
    return [
        Unit(item, method, int(target), k)
        for item in stored.items
        for method in item.maps
        for k, target in enumerate(item.targets or (-1,))
    ]


def method_batches(units: Sequence[Unit], size: int) -> list[list[Unit]]:
    """Consecutive units of one method, at most ``size`` at a time (one explainer per batch)."""
    by_method: dict[str, list[Unit]] = {}
    for unit in units:
        by_method.setdefault(unit.method, []).append(unit)
    return [group[start : start + size] for group in by_method.values() for start in range(0, len(group), size)]


def select_metrics(requested: str | Sequence[str], *, has_model: bool, has_mask: bool) -> list[str]:
    """Metric names from ``"all"`` or a list (or comma-separated text); explicit names whose needs are unmet are an
    error. ``"all"`` keeps the registered metrics that can run here (a model for model-bound ones, a mask for
    mask-based ones), except the classification category (not a per-map score)."""
    if isinstance(requested, str):
        requested = [name.strip() for name in requested.split(",") if name.strip()]
    if not requested:
        raise MedexplainError("`metrics`: give metric names or 'all'", parameter="metrics")
    if list(requested) == ["all"]:
        return [
            entry.name
            for entry in METRICS
            if entry.metadata["info"].category != "classification"
            and (has_model or not entry.metadata["info"].needs_model)
            and (has_mask or not entry.metadata["info"].needs_mask)
        ]
    for name in requested:
        info = metric_info(name)
        if info.needs_model and not has_model:
            raise MedexplainError(f"metric {name!r} runs the model: give `model`", parameter="model")
        if info.needs_mask and not has_mask:
            raise MedexplainError(f"metric {name!r} needs ground-truth masks, and the dataset has none")
    return list(dict.fromkeys(requested))


@dataclass(frozen=True)
class EvaluationState:
    """What scoring a batch needs (what each worker builds)."""

    stored: StoredExplanations
    dataset: Any
    metric_names: tuple[str, ...]
    model: nn.Module | None = None
    explainers: Mapping[str, Any] = field(default_factory=dict)
    mask_name: str | None = None
    device: str | torch.device = "cpu"
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_memory: int | None = None


@dataclass(frozen=True)
class BatchScores:
    """The scores of one batch: rows, NaN counts (empty masks, other), per-mode sums of the curves, mask share per
    item id."""

    rows: list[dict[str, Any]]
    empty: int
    undefined: int
    curve_sums: dict[str, list[float]]
    mask_shares: dict[str, float]


def score_batch(state: EvaluationState, batch: Sequence[Unit]) -> BatchScores:
    """Score the units of ``batch`` (one method) with every metric of ``state``."""
    context = _context(state, batch)
    method = batch[0].method
    rows: list[dict[str, Any]] = []
    empty = undefined = 0
    empty_mask = ~context["mask"].flatten(1).any(1).cpu() if "mask" in context else None
    curve_sums: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)  # counted instead: the caller reports them once
        for name in state.metric_names:
            info = metric_info(name)
            if info.needs_explainer:
                if method not in state.explainers:
                    raise MedexplainError(f"metric {name!r}: method {method!r} cannot be re-run here")
                context["explainer"] = state.explainers[method]
            inputs = {key: context[key] for key in info.inputs}
            budget = {"max_memory": state.max_memory} if "max_memory" in info.defaults else {}
            params = {**budget, **state.metric_params.get(name, {})}
            if info.curve is not None:
                curve = info.curve.function(inputs["model"], inputs["x"], context["maps"], inputs["target"],
                                            mode=info.curve.mode, **{**info.defaults, **params}).detach()  # fmt: skip
                scores = curve_area(curve).double().cpu()  # the metric's own score, bit for bit
                curve_sums[info.curve.mode] = curve.double().sum(0).cpu().tolist()
            else:
                scores = get_metric(name)(context["maps"], **inputs, **params).detach().double().cpu()
            nan = torch.isnan(scores)
            if info.needs_mask and empty_mask is not None:
                empty += int((nan & empty_mask).sum())
                nan &= ~empty_mask
            undefined += int(nan.sum())
            rows.extend(
                {"id": u.item.id, "index": u.item.index, "label": u.item.label, "method": u.method,
                 "target": u.target, "metric": name, "score": float(s)}
                for u, s in zip(batch, scores.tolist(), strict=True)
            )  # fmt: skip
    shares = {u.item.id: float(m.mean()) for u, m in zip(batch, context.get("mask", ()), strict=False) if m.any()}
    return BatchScores(rows, empty, undefined, curve_sums, shares)


def _context(state: EvaluationState, batch: Sequence[Unit]) -> dict[str, Any]:
    images, masks, maps = [], [], []
    dataset = state.dataset
    for unit in batch:
        item = unit.item
        if not 0 <= item.index < len(dataset):
            raise MedexplainError(f"item {item.id!r}: index {item.index} is outside the dataset ({len(dataset)} items)")
        sample = dataset[item.index]
        if str(sample.meta.get("id")) != item.id:
            raise MedexplainError(
                f"item {item.id!r}: dataset item {item.index} has id {sample.meta.get('id')!r} "
                "(evaluate on the dataset and split that were explained)"
            )
        maps.append(state.stored.load(item, unit.method)[unit.k])
        images.append(sample.image)
        if state.mask_name is not None:
            masks.append(sample.masks[state.mask_name][0])
    context: dict[str, Any] = {"maps": _stack(maps, "maps").to(state.device)}
    if masks:
        context["mask"] = _stack(masks, "masks").to(state.device)
    if state.model is not None:
        context["model"] = state.model
        context["x"] = _stack(images, "images").to(state.device)
        context["target"] = torch.tensor([u.target for u in batch], device=state.device)
        if bool((context["target"] < 0).any()):
            raise MedexplainError("model-bound metrics need class-index targets; these maps explain a callable")
    return context


def _stack(tensors: list[Tensor], what: str) -> Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise MedexplainError(f"{what} of different shapes in one batch: {sorted(shapes)[:2]} (give `size` to resize "
                              "the data)", parameter="size")  # fmt: skip
    return torch.stack(tensors)


def _gather(
    stored: StoredExplanations, batches: Sequence[Sequence[Unit]], results: Sequence[BatchScores]
) -> Evaluation:
    """One :class:`Evaluation` from the batches' results, in batch order (so any executor gives the same)."""
    rows = [row for result in results for row in result.rows]
    sums: dict[str, dict[str, list[float]]] = {}
    counts: dict[str, int] = {}
    shares: dict[str, float] = {}
    for batch, result in zip(batches, results, strict=True):
        method = batch[0].method
        counts[method] = counts.get(method, 0) + len(batch)
        for mode, curve in result.curve_sums.items():
            total = sums.setdefault(method, {}).get(mode)
            sums[method][mode] = curve if total is None else [a + b for a, b in zip(total, curve, strict=True)]
        shares.update(result.mask_shares)
    curves = {m: {mode: [v / counts[m] for v in total] for mode, total in c.items()} for m, c in sums.items()}
    scored = [shares[item.id] for item in stored.items if item.id in shares]
    chance = {"pointing-game": sum(scored) / len(scored)} if scored else {}
    empty, undefined = (sum(getattr(result, key) for result in results) for key in ("empty", "undefined"))
    return Evaluation(rows, empty, undefined, curves, chance)


def _score(
    setup: Callable[[], EvaluationState], stored: StoredExplanations, batch_size: int, executor: Executor,
    progress: bool, cache: Path | None = None, fingerprint: Mapping[str, Any] | None = None,
) -> Evaluation:  # fmt: skip
    if batch_size < 1:
        raise MedexplainError(f"`batch_size` must be positive, got {batch_size}", parameter="batch_size")
    batches = method_batches(stored_units(stored), batch_size)
    keys = [_digest({**(fingerprint or {}), "batch": _batch_key(batch)}) for batch in batches]
    paths = [cache / f"{key}.json" for key in keys] if cache is not None else []
    results: dict[int, BatchScores] = {n: BatchScores(**read_json(p)) for n, p in enumerate(paths) if p.is_file()}
    todo = [n for n in range(len(batches)) if n not in results]
    with progress_bar(progress) as bar:
        task = bar.add_task("evaluating", total=len(batches), completed=len(batches) - len(todo))

        def on_result(number: int, result: BatchScores) -> None:
            if cache is not None:
                write_text(paths[todo[number]], json.dumps(asdict(result)))
            results[todo[number]] = result
            bar.advance(task)

        executor.map(setup, score_batch, [batches[n] for n in todo], on_result)
    return _gather(stored, batches, [results[n] for n in range(len(batches))])


def _batch_key(batch: Sequence[Unit]) -> list[Any]:
    return [batch[0].method, [(unit.item.id, unit.k) for unit in batch]]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def evaluate_explanations(
    stored: StoredExplanations,
    dataset: Any,
    metric_names: Sequence[str],
    *,
    model: nn.Module | None = None,
    explainers: Mapping[str, Any] | None = None,
    mask_name: str | None = None,
    batch_size: int = 16,
    max_memory: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Evaluation:
    """Score every stored map with every metric, in this process.

    Args:
        stored: the explanations (:func:`~medexplain.workflows.explanations.load_explanations`).
        dataset: the :class:`medexplain.data.ImageDataset` the maps were computed on (same split, same
            preprocessing); items are matched by dataset index and checked by id.
        metric_names: registered metric names.
        model: needed by model-bound metrics; used as given (eval mode), not modified.
        explainers: method name -> explainer, for metrics that re-run the explainer.
        mask_name: which of the dataset's masks to use (default: the first).
        max_memory: bytes of activations per model call of the model-bound metrics
            (:mod:`medexplain.explain.budget`; default: one forward + backward of the batch, at least 64 MiB).
    """
    mask_name = _mask_name(dataset, mask_name)
    select_metrics(list(metric_names), has_model=model is not None, has_mask=mask_name is not None)
    state = EvaluationState(stored, dataset, tuple(metric_names), model, dict(explainers or {}), mask_name, device,
                            max_memory=max_memory)  # fmt: skip
    return _score(lambda: state, stored, batch_size, LocalExecutor(), progress)


def _mask_name(dataset: Any, requested: str | None) -> str | None:
    masks = list(getattr(dataset, "mask_names", []))
    if requested is not None and requested not in masks:
        raise MedexplainError(f"`mask` {requested!r} is not in the dataset; its masks: {', '.join(masks) or 'none'}",
                              parameter="mask")  # fmt: skip
    return requested or (masks[0] if masks else None)


LEGACY_PARAMETERS = ("batch_size",)
"""Stored by earlier versions of integrated gradients, SmoothGrad and occlusion (inputs per model call, now the
memory budget); it never changed the maps."""


def rebuild_explainers(methods: Mapping[str, Mapping[str, Any]], max_memory: int | None = None) -> dict[str, Any]:
    """The explainers of an explanations folder, rebuilt from the parameters stored in its index, with the memory
    budget ``max_memory`` where they take one."""
    kept = {name: {k: v for k, v in (params or {}).items() if k not in ("name", *LEGACY_PARAMETERS)}
            for name, params in methods.items()}  # fmt: skip
    return build_explainers(list(methods), params=kept, max_memory=max_memory)


def run_evaluation_state(
    explanations: str | os.PathLike[str], model: str | os.PathLike[str] | None, data: str | os.PathLike[str],
    split: str | None, metric_names: tuple[str, ...], mask_name: str | None, device: str, size: int | None = None,
    metric_params: Mapping[str, Mapping[str, Any]] | None = None, explainers: Mapping[str, Any] | None = None,
    max_memory: int | None = None,
) -> EvaluationState:  # fmt: skip
    """The state of :func:`score_batch` for an explanations folder (what each worker builds); ``explainers``
    (default: rebuilt from the folder's index) re-run the methods for the metrics that need it."""
    stored = load_explanations(explanations)
    network, dataset = _inputs(stored, model, data, split, device, size)
    if explainers is None and any(metric_info(n).needs_explainer for n in metric_names):
        explainers = rebuild_explainers(stored.methods, max_memory)
    return EvaluationState(stored, dataset, metric_names, network, dict(explainers or {}), mask_name, device,
                           dict(metric_params or {}), max_memory)  # fmt: skip


def _inputs(
    stored: StoredExplanations, model: str | os.PathLike[str] | None, data: str | os.PathLike[str],
    split: str | None, device: str, size: int | None, *, load_model: bool = True,
) -> tuple[nn.Module | None, Any]:  # fmt: skip
    """The model (``None`` without ``model`` or ``load_model``) and the dataset as the explained model saw it."""
    if model is not None and load_model:
        network, _config, dataset = load_run(model, data, split, device=device, size=size)
        return network, dataset
    config = read_config(model) if model is not None else _explained_config(stored.header.get("model"))
    # model-free metrics still see the explained model's inputs
    return None, run_dataset(config or {}, data, split, size=size, run_dir=model)


def _explained_config(run_dir: str | None) -> dict | None:
    """The config of the run the maps were computed with, when its folder is still readable here."""
    if not run_dir:
        return None
    try:
        return read_config(run_dir)
    except MedexplainError:
        return None


@dataclass(frozen=True)
class EvaluationRun:
    """What :func:`evaluate_run` wrote: the folder, the scores, the metrics and the methods."""

    out: Path
    evaluation: Evaluation
    metrics: tuple[str, ...]
    methods: tuple[str, ...]


def evaluate_run(
    explanations: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    metrics: str | Sequence[str] = "all",
    split: str | None = None,
    mask: str | None = None,
    size: int | None = None,
    metric_params: Mapping[str, Mapping[str, Any]] | None = None,
    explainers: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    max_memory: int | None = None,
    noise_auroc: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
    executor: Executor | None = None,
    progress: bool = True,
) -> EvaluationRun:
    """Score the explanations folder ``explanations`` on ``data`` and write the scores folder ``out``.

    Args:
        model: the run folder of the explained model; needed by model-bound metrics (default: model-free only).
        metrics: registered names, or ``"all"`` that can run here.
        split: the dataset split (default: the one that was explained).
        mask: the dataset's mask to localise against (default: its first).
        size: resize the images to it (default: as they were explained).
        metric_params: parameters per metric (``{"max-sensitivity": {"samples": 5}}``), recorded in the output.
        explainers: the methods to re-run for robustness and sanity metrics (default: rebuilt from the index;
            give them for methods whose parameters the index cannot hold, e.g. a prior map).
        max_memory: bytes of activations per model call of the model-bound metrics and the explainers they re-run
            (:mod:`medexplain.explain.budget`; default: one forward + backward of the batch, at least 64 MiB; it
            does not change the scores).
        noise_auroc: also write the classifier's AUROC under Gaussian noise (SIBnet's robustness table).
        resamples, seed: the bootstrap of the 95 % intervals.
        overwrite: replace an existing ``out``.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MedexplainError(f"{out}: directory exists and is not empty (set `overwrite` to replace it)",
                              parameter="overwrite")  # fmt: skip
    stored = load_explanations(explanations)
    split = split if split is not None else stored.header.get("split")
    size = size if size is not None else stored.header.get("size")
    network, dataset = _inputs(stored, model, data, split, device, size, load_model=noise_auroc)
    names = tuple(select_metrics(metrics, has_model=model is not None, has_mask=bool(dataset.mask_names)))
    mask_name = _mask_name(dataset, mask)
    fingerprint = {"index": hashlib.sha256((Path(explanations) / INDEX).read_bytes()).hexdigest(), "metrics": names,
                   "model": str(model), "data": str(data), "split": split, "mask": mask_name, "device": device,
                   "size": size, "metric_params": metric_params}  # fmt: skip
    check_budget(max_memory)
    setup = partial(run_evaluation_state, explanations, model, data, split, names, mask_name, device, size,
                    metric_params, explainers, max_memory)  # fmt: skip
    cache = out.parent / f".{out.name}.shards"
    try:
        evaluation = _score(setup, stored, batch_size, executor or LocalExecutor(), progress, cache, fingerprint)
        parameters = {name: {**metric_info(name).defaults, **(metric_params or {}).get(name, {})} for name in names}
        extra: dict[str, Any] = {"chance": evaluation.chance, "metric_params": parameters}
        if any(metric_info(name).curve is not None for name in names):
            extra["curves"] = evaluation.curves
        if noise_auroc and network is not None:
            extra["noise_auroc"] = _noise_auroc(network, dataset, batch_size, device)
        write_scores(out, evaluation.rows, summary_rows(evaluation.rows, resamples=resamples, seed=seed), extra,
                     overwrite=overwrite)  # fmt: skip
    except Exception:
        shutil.rmtree(cache, ignore_errors=True)  # a failed run leaves nothing; a killed one keeps its batches
        raise
    shutil.rmtree(cache, ignore_errors=True)
    return EvaluationRun(out, evaluation, names, tuple(stored.methods))


def _noise_auroc(network: nn.Module, dataset: Any, batch_size: int, device: str) -> list[dict[str, float | None]]:
    """SIBnet's robustness table on the whole split (held in memory at once)."""
    batch = collate([dataset[i] for i in range(len(dataset))])
    rows = auroc_under_noise(network, batch.image.to(device), batch.label, max_batch=batch_size)
    return [{key: (None if math.isnan(value) else value) for key, value in row.items()} for row in rows]
