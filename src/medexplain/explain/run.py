"""Explaining a whole dataset in batches into an explanations folder (the library side of ``medexplain explain``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from medexplain.data import collate
from medexplain.errors import MedexplainError
from medexplain.explain.base import EXPLAINERS, Explainer, create_explainer, explainer_params
from medexplain.explain.store import ExplanationWriter
from medexplain.explain.targets import Target


def build_explainers(methods: Sequence[str], layer: str | None = None) -> dict[str, Explainer]:
    """Explainers by name; ``layer`` goes to the methods that take one (the CAM family)."""
    if not methods:
        raise MedexplainError("no method given; choose from " + ", ".join(EXPLAINERS.available()))
    explainers = {}
    for name in methods:
        takes_layer = "layer" in getattr(EXPLAINERS.get(name), "__dataclass_fields__", {})
        explainers[name] = create_explainer(name, **({"layer": layer} if layer and takes_layer else {}))
    return explainers


def parse_target(text: str) -> Target:
    """``"predicted"``, ``"all"`` or a class index."""
    if text in ("predicted", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise MedexplainError(f"--target: expected 'predicted', 'all' or a class index, got {text!r}") from None


def explain_batch(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    explainers: Mapping[str, Explainer],
    target: Target,
    device: str | torch.device,
    done: Callable[[str, str], bool],
) -> Iterator[tuple[str, int, int, list[int], str, Tensor]]:
    """Explain the items ``indices`` of ``dataset`` as one batch per method, skipping ``done(item_id, method)``.

    Yields ``(item_id, index, label, targets, method, maps (K, *spatial))``, the arguments of
    :meth:`ExplanationWriter.write`; the single-process loop and the Ray workers share it, so their batches agree.
    """
    samples = [dataset[i] for i in indices]
    ids = [str(sample.meta["id"]) for sample in samples]
    for name, explainer in explainers.items():
        todo = [j for j, item_id in enumerate(ids) if not done(item_id, name)]
        if not todo:
            continue
        batch = collate([samples[j] for j in todo])
        explanation = explainer(model, batch.image.to(device), target)
        maps = explanation.maps.detach().cpu()
        for row, j in enumerate(todo):
            yield ids[j], indices[j], samples[j].label, explanation.targets[row].tolist(), name, maps[row]


def explain_dataset(
    model: nn.Module,
    dataset: Any,
    explainers: Mapping[str, Explainer],
    out: str | os.PathLike[str],
    header: Mapping[str, Any],
    *,
    target: Target = "predicted",
    batch_size: int = 16,
    map_format: str = "npy",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Write the maps of every method for every item of ``dataset`` (a ``medexplain.data.ImageDataset``) to ``out``.

    Items whose maps are already in ``out`` are skipped, so an interrupted run continues where it stopped; the
    index is rewritten atomically after each batch. Returns ``out``.
    """
    if batch_size < 1:
        raise MedexplainError(f"--batch-size must be positive, got {batch_size}")
    methods = {name: explainer_params(explainer) for name, explainer in explainers.items()}
    writer = ExplanationWriter(out, header, methods, map_format)
    writer.flush()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("explaining", total=len(dataset))
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            for record in explain_batch(model, dataset, indices, explainers, target, device, writer.has):
                writer.write(*record)
            writer.flush()
            bar.advance(task, len(indices))
    return Path(out)
