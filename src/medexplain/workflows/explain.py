"""Explaining a dataset into an explanations folder (:mod:`medexplain.workflows.explanations`).

:func:`explain_run` explains a run folder's model on a dataset as the model sees it (its recorded preprocessing),
on any :class:`~medexplain.workflows.executors.Executor`; :func:`explain_dataset` does the same for a model and a
dataset already in memory. Both cut the dataset into batches of consecutive items, skip the maps a folder already
holds (so an interrupted run continues where it stopped) and write every map once, in this process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from medexplain.data import collate
from medexplain.errors import MedexplainError
from medexplain.explain.base import EXPLAINERS, Explainer, create_explainer, explainer_params
from medexplain.explain.targets import Target
from medexplain.models import load_run, randomised_copy, read_config, run_dataset
from medexplain.models.cards import method_params_for
from medexplain.progress import progress_bar
from medexplain.workflows.executors import Executor, LocalExecutor
from medexplain.workflows.explanations import StoredExplanations, explanation_output, load_explanations

MapRecord = tuple[str, int, int, list[int], str, np.ndarray]
"""``(item_id, index, label, targets, method, maps (K, *spatial))``: the arguments of ``ExplanationWriter.write``."""


def build_explainers(
    methods: Sequence[str],
    *,
    layer: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    max_memory: int | None = None,
) -> dict[str, Explainer]:
    """Explainers by registered name; ``layer`` goes to the methods that take one (the CAM family), ``max_memory``
    (bytes of activations per model call, :mod:`medexplain.explain.budget`) to those that batch perturbations or
    path points, ``params`` gives further hyperparameters per method (``{"integrated-gradients": {"steps": 24}}``)."""
    if not methods:
        raise MedexplainError("`methods`: none given; choose from " + ", ".join(EXPLAINERS.available()),
                              parameter="methods")  # fmt: skip
    params = dict(params or {})
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise MedexplainError(f"parameters given for {unknown[0]!r}, which is not among the methods {list(methods)}")
    explainers = {}
    for name in methods:
        fields = {f.name for f in dataclasses.fields(EXPLAINERS.get(name))}
        shared = {"layer": layer, "max_memory": max_memory}
        explainers[name] = create_explainer(
            name, **{key: value for key, value in shared.items() if value is not None and key in fields},
            **params.get(name, {}),
        )
    return explainers


@dataclass(frozen=True)
class ExplainState:
    """What explaining a batch needs: the model (eval mode), the dataset, the explainers, the target, the device."""

    model: nn.Module
    dataset: Any
    explainers: Mapping[str, Explainer]
    target: Target
    device: str | torch.device


@dataclass(frozen=True)
class ExplainBatch:
    """Consecutive dataset ``indices`` explained together, and per index the methods whose maps already exist."""

    indices: tuple[int, ...]
    skip: Mapping[int, tuple[str, ...]] = field(default_factory=dict)


def explain_batch(state: ExplainState, batch: ExplainBatch) -> list[MapRecord]:
    """The maps of every method for the items of ``batch`` (one model batch per method), as :data:`MapRecord`.

    A method is run on the whole batch when any of its maps is missing, and only the missing ones are returned,
    so a continued run computes each map in the same batch as an uninterrupted one (bit for bit the same maps).
    """
    samples = [state.dataset[i] for i in batch.indices]
    records: list[MapRecord] = []
    shapes = {tuple(sample.image.shape) for sample in samples}
    if len(shapes) > 1:
        raise MedexplainError(f"images of different sizes in one batch {sorted(shapes)[:2]}: give `size` to resize "
                              "them", parameter="size")  # fmt: skip
    images = collate(samples).image.to(state.device)
    for name, explainer in state.explainers.items():
        todo = [j for j, index in enumerate(batch.indices) if name not in batch.skip.get(index, ())]
        if not todo:
            continue
        # the whole batch, as an uninterrupted run computes it (a smaller batch would round differently)
        explanation = explainer(state.model, images, state.target)
        maps = explanation.maps.detach().cpu()
        for j in todo:
            sample = samples[j]
            targets = explanation.targets[j].tolist()
            records.append((str(sample.meta["id"]), batch.indices[j], sample.label, targets, name, maps[j].numpy()))
    return records


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
) -> StoredExplanations:
    """Write the maps of every explainer for every item of ``dataset`` (a ``medexplain.data.ImageDataset``, or a
    ``Subset`` of one) to ``out``; ``header`` (``{"model", "data", "split"}``) identifies what was explained.

    ``model`` is used as given (put it in eval mode first). Returns the folder's content.
    """
    state = ExplainState(model, dataset, dict(explainers), target, device)
    methods = {name: explainer_params(explainer) for name, explainer in explainers.items()}
    return _explain(lambda: state, len(dataset), methods, out, header, LocalExecutor(), batch_size, map_format,
                    progress)  # fmt: skip


def run_state(
    model: str | os.PathLike[str], data: str | os.PathLike[str], split: str | None, explainers: Mapping[str, Explainer],
    target: Target, device: str, max_items: int | None, size: int | None = None, randomised: int | None = None,
) -> ExplainState:  # fmt: skip
    """The state of :func:`explain_batch` for a run folder's model on ``data`` (what each worker builds);
    ``randomised``: a seed, to explain a copy of the model with every parameter re-drawn instead."""
    network, _config, dataset = load_run(model, data, split, device=device, size=size)
    if randomised is not None:
        network = randomised_copy(network, randomised)
    return ExplainState(network, _first(dataset, max_items), explainers, target, device)


def _first(dataset: Any, count: int | None) -> Any:
    return dataset if count is None or count >= len(dataset) else Subset(dataset, range(count))


def explain_run(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    methods: Sequence[str],
    out: str | os.PathLike[str],
    *,
    split: str | None = "test",
    target: Target = "predicted",
    layer: str | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    max_items: int | None = None,
    size: int | None = None,
    randomised: int | None = None,
    batch_size: int = 16,
    max_memory: int | None = None,
    map_format: str = "npy",
    device: str = "cpu",
    executor: Executor | None = None,
    progress: bool = True,
    explainers: Mapping[str, Explainer] | None = None,
) -> StoredExplanations:
    """Explain the model of the run folder ``model`` on ``split`` of ``data`` (``None``: every item) into ``out``.

    The data is read with the run's recorded preprocessing (``size`` resizes to it instead of the recorded size).
    ``methods`` are registered explainer names, ``layer`` the CAM layer, ``method_params`` further hyperparameters
    per method, over those of a model card (or ``explainers``, built already: e.g. with a tensor parameter),
    ``max_items`` explains only the first items, ``randomised`` (a seed) explains a copy of the model whose every
    parameter is re-drawn (the model randomisation baseline, Adebayo et al., NeurIPS 2018), ``max_memory`` bounds
    the activations per model call of the methods that batch perturbations (bytes; default: one forward + backward
    of the batch, at least 64 MiB; it does not change the maps). A folder written before for the same model, data
    and split is continued; methods it holds with other parameters are refused. Returns the folder's content.
    """
    if max_items is not None and max_items < 1:
        raise MedexplainError(f"`max_items` must be positive, got {max_items}", parameter="max_items")
    config = read_config(model)
    params = method_params_for(config, methods, method_params)
    explainers = (dict(explainers) if explainers
                  else build_explainers(methods, layer=layer, params=params, max_memory=max_memory))  # fmt: skip
    items = len(_first(run_dataset(config, data, split, size=size, run_dir=model), max_items))
    name = str(model) if randomised is None else f"{model} (randomised, seed {randomised})"
    header = {"model": name, "data": str(data), "split": split, "size": size}
    setup = partial(run_state, model, data, split, explainers, target, device, max_items, size, randomised)
    params = {name: explainer_params(explainer) for name, explainer in explainers.items()}
    return _explain(setup, items, params, out, header, executor or LocalExecutor(), batch_size, map_format, progress)


def _explain(
    setup: Callable[[], ExplainState], size: int, methods: Mapping[str, Mapping[str, Any]],
    out: str | os.PathLike[str], header: Mapping[str, Any], executor: Executor, batch_size: int, map_format: str,
    progress: bool,
) -> StoredExplanations:  # fmt: skip
    if batch_size < 1:
        raise MedexplainError(f"`batch_size` must be positive, got {batch_size}", parameter="batch_size")
    if size == 0:
        raise MedexplainError(f"{header.get('data')}: the data to explain has no items")
    with explanation_output(out, header, methods, map_format) as writer:
        done: dict[int, tuple[str, ...]] = {}
        for item_id, item in writer.items.items():
            done[item["index"]] = tuple(m for m in methods if writer.has(item_id, m))
        batches = []
        for start in range(0, size, batch_size):
            indices = tuple(range(start, min(start + batch_size, size)))
            if any(len(done.get(i, ())) < len(methods) for i in indices):
                batches.append(ExplainBatch(indices, {i: done[i] for i in indices if done.get(i)}))
        with progress_bar(progress) as bar:
            task = bar.add_task("explaining", total=size, completed=size - sum(len(b.indices) for b in batches))

            def on_result(number: int, records: list[MapRecord]) -> None:
                for record in records:
                    writer.write(*record)
                writer.checkpoint()
                bar.advance(task, len(batches[number].indices))

            executor.map(setup, explain_batch, batches, on_result)
        writer.commit(size)
    return load_explanations(out)
