"""Evaluate stored explanations on a dataset: per-sample scores of every metric, then a bootstrap summary.

The library side of ``medexplain evaluate``. Explanations are read with
:func:`medexplain.explain.store.load_explanations`; every stored map ``(K, *spatial)`` is scored once per
explained target. Model-bound metrics need the model; robustness and sanity metrics also re-run the method,
rebuilt from the parameters stored in the index.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.files import atomic_directory
from medexplain.metrics._inputs import EmptyMaskWarning
from medexplain.metrics.faithfulness import curve_area, perturbation_curve
from medexplain.metrics.registry import METRICS, metric_info
from medexplain.metrics.summary import summarise

CURVE_METRICS = {"deletion-auc": "deletion", "insertion-auc": "insertion"}
"""The metrics scored as the area under a perturbation curve, and the curve's mode."""
Curves = dict[str, dict[str, list[float]]]


class Evaluation(NamedTuple):
    """What :func:`evaluate_explanations` returns.

    ``rows``: per-sample rows (:data:`ROW_FIELDS`); ``empty``: the number of NaN scores (empty masks, maps a
    metric cannot score); ``curves``: the mean deletion / insertion curve per method,
    ``{method: {"deletion": [...], ...}}`` (``steps + 1`` model scores at evenly spaced fractions of perturbed
    features; the area under a mean curve is the mean of the scores), empty without curve metrics or model.
    """

    rows: list[dict[str, Any]]
    empty: int
    curves: Curves
"""Mean curves per method and mode: ``{method: {"deletion": [...], "insertion": [...]}}``."""
ROW_FIELDS = ("id", "index", "label", "method", "target", "metric", "score")
SUMMARY_FIELDS = ("method", "metric", "category", "higher_is_better", "n", "excluded", "mean", "ci_low", "ci_high")


@dataclass(frozen=True)
class Unit:
    """One stored map to score: the ``item``, its ``method``, and the ``k``-th explained ``target``."""

    item: Any  # medexplain.explain.store.StoredItem
    method: str
    target: int
    k: int


def needs_explainer(name: str) -> bool:
    """Whether metric ``name`` re-runs the explanation method (robustness and sanity metrics)."""
    return "explainer" in inspect.signature(METRICS.get(name)).parameters


def select_metrics(requested: str | Sequence[str], *, has_model: bool, has_mask: bool) -> list[str]:
    """Metric names from ``"all"`` or a list; explicit names whose needs are unmet are an error.

    ``"all"`` keeps the registered metrics that can run here (a model for model-bound ones, a mask for
    mask-based ones), except the classification category (not a per-map score).
    """
    if isinstance(requested, str):
        requested = [name.strip() for name in requested.split(",") if name.strip()]
    if not requested:
        raise MedexplainError("--metrics: give metric names (comma-separated) or 'all'")
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
            raise MedexplainError(f"metric {name!r} runs the model: give --model RUN_DIR")
        if info.needs_mask and not has_mask:
            raise MedexplainError(f"metric {name!r} needs ground-truth masks, and the dataset has none")
    return list(dict.fromkeys(requested))


def stored_units(stored: Any) -> list[Unit]:
    """Every stored map to score: one :class:`Unit` per item, method and explained target, in index order."""
    units = []
    for item in stored.items:
        for method in item.maps:
            for k, target in enumerate(item.targets or (-1,)):
                units.append(Unit(item, method, int(target), k))
    return units


def _call(metric: Callable[..., Tensor], context: Mapping[str, Any]) -> Tensor:
    accepted = inspect.signature(metric).parameters
    return metric(
        context["maps"], **{key: value for key, value in context.items() if key in accepted and key != "maps"}
    )


def evaluate_explanations(
    stored: Any,
    dataset: Any,
    metric_names: Sequence[str],
    *,
    model: nn.Module | None = None,
    explainers: Mapping[str, Callable[..., Any]] | None = None,
    mask_name: str | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Evaluation:
    """Score every stored map with every metric.

    The curve metrics (:data:`CURVE_METRICS`) are scored from their perturbation curves (at the metrics'
    defaults), so the mean curves come from the same forward passes as the scores.

    Args:
        stored: :class:`medexplain.explain.store.StoredExplanations`.
        dataset: the :class:`medexplain.data.ImageDataset` the maps were computed on (same split, same
            preprocessing); items are matched by dataset index and checked by id.
        metric_names: registered metric names.
        model: needed by model-bound metrics; run in eval mode, not modified.
        explainers: method name -> explainer, for robustness and sanity metrics.
        mask_name: which of the dataset's masks to use (default: the first).

    Returns:
        :class:`Evaluation`: the rows, the count of NaN scores and the mean curves.
    """
    if batch_size < 1:
        raise MedexplainError(f"--batch-size must be positive, got {batch_size}")
    masks = list(getattr(dataset, "mask_names", []))
    if mask_name is not None and mask_name not in masks:
        raise MedexplainError(f"mask {mask_name!r} is not in the dataset; its masks: {', '.join(masks) or 'none'}")
    mask_name = mask_name or (masks[0] if masks else None)
    units = stored_units(stored)
    rows: list[dict[str, Any]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    empty = 0
    sums: dict[str, dict[str, Tensor]] = {}
    counts: dict[str, int] = {}
    with Progress(*columns, disable=not progress, transient=False) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)  # counted instead: the caller reports them once
        task = bar.add_task("evaluating", total=len(units))
        for batch in method_batches(units, batch_size):
            context = _context(stored, dataset, batch, mask_name, model, device)
            method = batch[0].method
            counts[method] = counts.get(method, 0) + len(batch)
            for name in metric_names:
                if needs_explainer(name):
                    explainer = (explainers or {}).get(method)
                    if explainer is None:
                        raise MedexplainError(f"metric {name!r}: method {method!r} cannot be re-run here")
                    context["explainer"] = explainer
                if name in CURVE_METRICS and model is not None:
                    curve = metric_curve(name, context).detach()
                    scores = curve_area(curve).double().cpu()  # the metric's own score, bit for bit
                    per_method, mode = sums.setdefault(method, {}), CURVE_METRICS[name]
                    total = curve.double().sum(0).cpu()
                    per_method[mode] = per_method[mode] + total if mode in per_method else total
                else:
                    scores = _call(METRICS.get(name), context).detach().double().cpu()
                empty += int(torch.isnan(scores).sum())
                rows.extend(
                    {
                        "id": u.item.id,
                        "index": u.item.index,
                        "label": u.item.label,
                        "method": u.method,
                        "target": u.target,
                        "metric": name,
                        "score": float(s),
                    }
                    for u, s in zip(batch, scores.tolist(), strict=True)
                )
            bar.advance(task, len(batch))
    means = {m: {mode: (total / counts[m]).tolist() for mode, total in c.items()} for m, c in sums.items()}
    return Evaluation(rows, empty, means)


def metric_curve(name: str, context: Mapping[str, Any]) -> Tensor:
    """The perturbation curve ``(B, steps + 1)`` behind curve metric ``name``, at the metric's defaults.

    ``curve_area`` of it is exactly the metric's score (the metric computes the same curve); ``context`` holds
    ``model``, ``x``, ``maps`` and ``target``.
    """
    accepted = inspect.signature(perturbation_curve).parameters
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(METRICS.get(name)).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and key in accepted and key not in ("model", "x", "target")
    }
    return perturbation_curve(
        context["model"], context["x"], context["maps"], context["target"], mode=CURVE_METRICS[name], **defaults
    )


def method_batches(units: list[Unit], size: int) -> Iterator[list[Unit]]:
    """Consecutive units of one method, at most ``size`` at a time (one explainer per batch)."""
    by_method: dict[str, list[Unit]] = {}
    for unit in units:
        by_method.setdefault(unit.method, []).append(unit)
    for group in by_method.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


def _context(
    stored: Any,
    dataset: Any,
    batch: list[Unit],
    mask_name: str | None,
    model: nn.Module | None,
    device: str | torch.device,
) -> dict[str, Any]:
    images, masks, maps = [], [], []
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
        stack = stored.load(item, unit.method)
        maps.append(stack[unit.k])
        images.append(sample.image)
        if mask_name is not None:
            masks.append(sample.masks[mask_name][0])
    context: dict[str, Any] = {"maps": _stack(maps, "maps").to(device)}
    if masks:
        context["mask"] = _stack(masks, "masks").to(device)
    if model is not None:
        context["model"] = model
        context["x"] = _stack(images, "images").to(device)
        context["target"] = torch.tensor([u.target for u in batch], device=device)
        if bool((context["target"] < 0).any()):
            raise MedexplainError("model-bound metrics need class-index targets; these maps explain a callable")
    return context


def _stack(tensors: list[Tensor], what: str) -> Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise MedexplainError(f"{what} of different shapes in one batch: {sorted(shapes)[:2]} (resize the data)")
    return torch.stack(tensors)


def summary_rows(rows: list[dict[str, Any]], *, resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """The bootstrap summary of per-sample ``rows`` per method and metric, with each metric's metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN counts are reported in the "excluded" column
        summary = summarise(rows, resamples=resamples, seed=seed)
    for row in summary:
        info = metric_info(str(row["metric"]))
        row["category"], row["higher_is_better"] = info.category, info.higher_is_better
    return [{key: row[key] for key in SUMMARY_FIELDS} for row in summary]


def _csv(rows: list[dict[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_results(
    out: str | os.PathLike[str],
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    extra: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``per_sample.csv``, ``summary.csv`` and ``summary.json`` (plus ``extra`` tables) atomically.

    The whole folder appears at once or not at all. NaN means are written as empty CSV fields and JSON null.
    """
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in summary]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "per_sample.csv").write_text(_csv(rows, ROW_FIELDS), encoding="utf-8")
        (tmp / "summary.csv").write_text(_csv(clean, SUMMARY_FIELDS), encoding="utf-8")
        document = {"summary": clean, **(extra or {})}
        (tmp / "summary.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(out)
