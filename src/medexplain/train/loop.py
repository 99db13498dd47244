"""``train(config, data, out)``: fit any registered model on any dataset ``load_dataset`` reads; resumable and
deterministic.

A run folder holds ``config.json`` (model, arguments, data, class/label names, preprocessing, training
settings, metrics), ``model.safetensors`` (weights of the best validation epoch), ``metrics.csv`` (one row per
epoch) and ``resume.safetensors`` (the state after the last completed epoch). Every file is replaced
atomically, so Ctrl-C or a kill leaves a consistent folder that ``resume=True`` continues from. The cosine
learning rate is a function of the epoch number, so the schedule needs no state of its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.evidence import evidence_on_input
from medexplain.explain.targets import resolve_target
from medexplain.files import LOCK_FILE, csv_text, exclusive_folder, write_text
from medexplain.metrics.classification import classification_summary, multilabel_summary
from medexplain.metrics.complexity import gini
from medexplain.models.bagnet import FlipAveraged
from medexplain.models.checkpoint import load_weights, save_weights
from medexplain.models.modes import evaluation_mode
from medexplain.models.registry import create_model
from medexplain.models.run import CONFIG_FILE, RUN_FORMAT, WEIGHTS_FILE, initialise_from
from medexplain.progress import progress_bar
from medexplain.train import distributed
from medexplain.train.augment import Augment
from medexplain.train.averaging import WeightAverage
from medexplain.train.config import TrainConfig
from medexplain.train.data import (
    SmallValidationWarning,
    Split,
    check_labels,
    dataset_info,
    read_split,
    small_validation,
    standardisation,
    standardise,
)
from medexplain.train.losses import Objective, balanced_class_weights, local_part
from medexplain.train.sibnet import warn_if_maps_died
from medexplain.train.state import RESUME_FILE, load_resume, read_resume_info, save_resume

METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "predictions.csv"


def train(
    config: TrainConfig,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config.model`` on ``data`` and write the run folder ``out``; returns its ``config.json`` content.

    Args:
        config: what to train and how (:class:`~medexplain.train.config.TrainConfig`).
        resume: continue ``out`` from its last completed epoch (same settings required).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after each epoch's files are written.

    Another process training into ``out`` at the same time is refused. A fresh run that fails leaves no folder
    behind; an interrupted one (Ctrl-C, a kill) leaves a folder that ``resume=True`` continues (``resume=True``
    on an empty folder starts the run). Until the run has finished, ``config.json`` says ``"status": "training"``
    and :func:`medexplain.models.load` refuses the folder.
    """
    out = Path(out)
    settings = config.settings(str(Path(data).resolve()))
    resume = _check_out(out, resume, settings)
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ctx, run_device = distributed.context(run_device)  # torchrun: one rank of a data-parallel job
    created = not out.exists()
    with exclusive_folder(out) if ctx.is_main else contextlib.nullcontext():
        try:
            return _train(config, settings, data, out, resume, ctx, run_device, progress, on_epoch_end)
        except Exception:
            if created and ctx.is_main:
                shutil.rmtree(out, ignore_errors=True)
            raise


def _train(
    config: TrainConfig, settings: dict[str, Any], data: str | os.PathLike[str], out: Path, resume: bool,
    ctx: distributed.Context, run_device: torch.device, progress: bool,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
) -> dict[str, Any]:  # fmt: skip
    info = dataset_info(data)
    with progress_bar(progress and ctx.is_main) as bar, _deterministic(), torch.random.fork_rng(devices=[]):
        splits = {"train": read_split(data, "train", size=config.size, task=config.task, progress=bar)}
        splits["val"] = read_split(data, "val", size=config.size, task=config.task, progress=bar)
        try:
            splits["test"] = read_split(data, "test", size=config.size, task=config.task, progress=bar)
        except MedexplainError as error:  # a data set without a test split is fine, a broken one is not
            if "split 'test'" not in str(error):
                raise
        intensity = standardisation(splits["train"].images)
        splits = {name: standardise(split, intensity) for name, split in splits.items()}
        num_classes = _num_classes(config, info)
        check_labels(splits, num_classes, data, config.task)
        train_split = splits["train"]
        if len(train_split) < 2:
            raise MedexplainError(f"{data}: the training split has {len(train_split)} image; training needs at least "
                                  "two (batch statistics, e.g. BatchNorm's, need more than one sample)")  # fmt: skip
        args = {
            **config.model_args,
            "in_channels": int(train_split.images.shape[1]),
            "num_classes": num_classes,
            "spatial_dims": train_split.images.ndim - 2,
        }
        torch.manual_seed(config.seed)
        model = create_model(config.model, **args)
        initialised = initialise_from(model, config.model, config.init_from) if config.init_from else None
        net = ctx.prepare(model.to(run_device))
        per_step = min(config.batch_size, len(train_split)) // ctx.world
        if per_step < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            raise MedexplainError(f"`batch_size` {config.batch_size} gives steps of {per_step} image per process; "
                                  f"{config.model} has BatchNorm layers, which need at least two",
                                  parameter="batch_size")  # fmt: skip
        objective = Objective.parse(
            config.loss,
            sparsity_lambda=config.sparsity_lambda,
            class_weights=_class_weights(config, train_split, num_classes),
            sparsity_on=config.sparsity_on,
            label_smoothing=config.label_smoothing,
            ordinal_sigma=config.ordinal_sigma,
            sibnet=config.sibnet,
        )
        if objective.sparsity_lambda > 0 and not hasattr(net, "evidence_map"):
            raise MedexplainError(f"model {config.model!r} has no evidence map: the sparsity loss needs a BagNet")
        if config.tta_flip_axes:
            FlipAveraged(net, config.tta_flip_axes)  # refuses models without evidence maps and bad axes first
        averager = WeightAverage(net, config.ema_decay) if config.ema_decay else None
        opt = _optimizer(net, config)
        generator = torch.Generator().manual_seed(config.seed)
        document = {
            "format": RUN_FORMAT,
            "model": config.model,
            "model_args": args,
            "data": info["data"],
            "class_names": info["class_names"] if config.task == "ce" else [],
            "label_names": info["label_names"] if config.task == "bce" else [],
            "task": config.task,
            "preprocessing": {
                "size": config.size, "intensity": {**intensity, "method": "training-set standardisation"}
            },
            "training": settings,
            "metrics": {},
            "status": "training",
        }
        if initialised is not None:
            document["initialised_from"] = {"run": settings["init_from"], "reinitialised": initialised}
        names = document["class_names"] or document["label_names"] or [str(k) for k in range(num_classes)]
        too_small = small_validation(splits["val"], names, config.task, data) if config.epochs > 1 else None
        if too_small:
            warnings.warn(too_small, SmallValidationWarning, stacklevel=3)
            document["warnings"] = [too_small]
        state = {"epoch": 0, "best": None, "best_epoch": None, "since_best": 0, "history": [], "done": False}
        if resume:
            averaged = averager.average if averager is not None else None
            generators, state = load_resume(out / RESUME_FILE, model=net, optimizer=opt, averaged=averaged)
            if averager is not None:
                averager.updates = state["ema_updates"]
            generator.set_state(generators["shuffle"])
            torch.set_rng_state(generators["torch"])
            document["metrics"] = state.get("metrics", {})
        if ctx.is_main and not state["done"]:  # from the start, the folder says that its run is training
            write_text(out / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
        if not state["done"]:
            fitting = Fitting(config, net, opt, objective, splits, document, state, generator, out, run_device, bar,
                              ctx, averager)  # fmt: skip
            _fit(fitting, on_epoch_end)
        ctx.barrier()  # rank 0 has written the weights
        load_weights(net, out / WEIGHTS_FILE)
        evaluated = {
            name: _evaluate(net, split, objective, run_device, config.tta_flip_axes)
            for name, split in splits.items()
            if name != "train"
        }
        document["metrics"] = {"best_epoch": state["best_epoch"], **{name: m for name, (m, _) in evaluated.items()}}
        document["status"] = "complete"
        if ctx.is_main:
            held_out = "test" if "test" in evaluated else "val"
            write_text(out / PREDICTIONS_FILE, _predictions_csv(splits[held_out], evaluated[held_out][1], held_out))
            write_text(out / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
    return document


@dataclass
class Fitting:
    """Everything an epoch loop works with: the run's settings and its model, optimiser, data and state."""

    config: TrainConfig
    net: nn.Module
    opt: torch.optim.Optimizer
    objective: Objective
    splits: dict[str, Split]
    document: dict[str, Any]  # config.json, rewritten after every epoch
    state: dict[str, Any]  # the resumable state: epoch, best, history, ...
    generator: torch.Generator
    out: Path
    device: torch.device
    bar: Progress
    ctx: distributed.Context
    averager: WeightAverage | None = None


def _fit(run: Fitting, on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> None:
    config, net, opt, state, bar, ctx = run.config, run.net, run.opt, run.state, run.bar, run.ctx
    averager = run.averager
    evaluated = averager.average if averager is not None else net  # the weights validated and saved
    step = ctx.wrap(net)
    train_split = run.splits["train"]
    epochs, batch_size = config.epochs, config.batch_size
    augmentation = Augment() if config.augment else None
    batches = max(1, len(train_split) // batch_size) if len(train_split) > batch_size else 1
    epoch_task = bar.add_task("epochs", total=epochs, completed=state["epoch"])
    for epoch in range(state["epoch"], epochs):
        started = time.perf_counter()
        lr = 0.5 * config.lr * (1 + math.cos(math.pi * epoch / epochs))
        for group in opt.param_groups:
            group["lr"] = lr
        warmup = run.document["training"]["sparsity_warmup"]
        warming = epoch + 1 < warmup
        scale = min(1.0, epoch / warmup) if warmup else 1.0
        epoch_objective = replace(run.objective, sparsity_lambda=run.objective.sparsity_lambda * scale)
        net.train()
        order = torch.randperm(len(train_split), generator=run.generator)
        totals: dict[str, float] = {}
        batch_task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=batches)
        for index in range(batches):
            chosen = order[index * batch_size : (index + 1) * batch_size]
            x = train_split.images[chosen].to(run.device)
            if augmentation is not None:
                x = augmentation(x, run.generator)
            part, share = ctx.part(len(chosen))  # this rank's part of the global batch
            loss, _, parts = step(epoch_objective, x[part], train_split.targets[chosen][part].to(run.device))
            opt.zero_grad(set_to_none=True)
            (loss * share * ctx.world).backward()  # DDP averages over ranks: the gradient of the global mean
            opt.step()
            if averager is not None:
                averager.update(net)
            for name, value in {"loss": loss, **parts}.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * share / batches
            bar.advance(batch_task)
        bar.remove_task(batch_task)
        totals = ctx.sum(totals)
        val, _ = _evaluate(evaluated, run.splits["val"], run.objective, run.device, config.tta_flip_axes)
        row = {"epoch": epoch + 1, "lr": lr, "sparsity_lambda": epoch_objective.sparsity_lambda}
        row.update({f"train_{k}": v for k, v in totals.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row["seconds"] = time.perf_counter() - started
        if "empty_maps" in totals and ctx.is_main:
            warn_if_maps_died(epoch + 1, totals["empty_maps"])
        score = -val["loss"] if config.monitor == "loss" else val[config.monitor]
        best = state["best"]
        improved = best is None or (not math.isnan(score) and (math.isnan(best) or score > best))
        if warming or improved:  # during the sparsity warm-up the latest epoch stands in for the best
            state.update(best=None if warming else score, best_epoch=epoch + 1, since_best=0)
            if ctx.is_main:
                save_weights(evaluated, run.out / WEIGHTS_FILE)
        else:
            state["since_best"] += 1
        state["epoch"] = epoch + 1
        state["history"].append(row)
        patience = config.patience
        state["done"] = state["epoch"] == epochs or (patience is not None and state["since_best"] >= patience)
        run.document["metrics"] = {"best_epoch": state["best_epoch"], "val": _best_val(state)}
        state["metrics"] = run.document["metrics"]
        state["training"] = run.document["training"]
        if averager is not None:
            state["ema_updates"] = averager.updates
        if ctx.is_main:  # the checkpoint first: a kill after it finds the epoch done, before it the epoch redone
            save_resume(
                run.out / RESUME_FILE,
                model=net,
                optimizer=opt,
                generators={"shuffle": run.generator.get_state(), "torch": torch.get_rng_state()},
                info=state,
                averaged=averager.average if averager is not None else None,
            )
            write_text(run.out / METRICS_FILE, _csv(state["history"]))
            write_text(run.out / CONFIG_FILE, json.dumps(run.document, indent=2) + "\n")
        bar.update(epoch_task, completed=epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
        if state["done"]:
            break
    bar.remove_task(epoch_task)


@torch.no_grad()
def _evaluate(
    net: nn.Module,
    split: Split,
    objective: Objective,
    device: torch.device,
    tta_flip_axes: Sequence[int] | None = None,
) -> tuple[dict[str, float], Tensor]:
    """Loss, classification metrics and (for evidence models) the mean Gini of the predicted class's |evidence| on
    the input grid (``gini``: what ``medexplain evaluate`` scores for the ``evidence`` explainer) and of the local
    evidence without the class bias over all classes and positions of the coarse grid (``gini_local``: what the
    sparsity penalty acts on) on ``split``, and the predicted probabilities ``(N, K)`` (softmax
    for "ce", per-label sigmoid for "bce"); with ``tta_flip_axes`` of the flip-averaged model (its evidence maps are
    the flip-averaged maps)."""
    model = FlipAveraged(net, tta_flip_axes) if tta_flip_axes else net
    logits, ginis, local_ginis, losses = [], [], [], []
    with evaluation_mode(net):
        for start in range(0, len(split), 64):
            x = split.images[start : start + 64].to(device)
            target = split.targets[start : start + 64].to(device)
            if hasattr(model, "evidence_map"):
                evidence = model.evidence_map(x)
                batch_logits = evidence.flatten(2).mean(2)
                predicted = resolve_target(batch_logits, "predicted").indices
                ginis.append(gini(evidence_on_input(model, evidence, predicted, x.shape[2:])).cpu())
                if hasattr(model, "class_bias"):
                    local_ginis.append(gini(local_part(model, evidence)).cpu())
            else:
                batch_logits = model(x)
            losses.append(float(objective.task_loss(batch_logits, target)) * len(x))
            logits.append(batch_logits.cpu())
    scores = torch.cat(logits).double()
    probabilities = scores.softmax(1) if objective.task == "ce" else scores.sigmoid()
    summary = classification_summary if objective.task == "ce" else multilabel_summary
    result = summary(split.targets.numpy(), probabilities.numpy())
    result["loss"] = sum(losses) / len(split)
    if ginis:
        result["gini"] = float(torch.cat(ginis).mean())
    if local_ginis:
        result["gini_local"] = float(torch.cat(local_ginis).mean())
    return result, probabilities


def _predictions_csv(split: Split, probabilities: Tensor, name: str) -> str:
    """One row per image of the held-out ``split``: id, split, label(s), predicted class, probabilities."""
    single = split.targets.ndim == 1
    k = probabilities.shape[1]
    labels = ["label", "predicted"] if single else [f"label_{j}" for j in range(k)]
    fields = ["id", "split", *labels, *(f"p_{j}" for j in range(k))]
    rows = []
    for i, sample_id in enumerate(split.ids):
        truth = [int(split.targets[i]), int(probabilities[i].argmax())] if single else split.targets[i].int().tolist()
        values = [sample_id, name, *truth, *(repr(float(p)) for p in probabilities[i])]
        rows.append(dict(zip(fields, values, strict=True)))
    return csv_text(rows, fields)


def _check_out(out: Path, resume: bool, settings: dict[str, Any]) -> bool:
    """Whether to resume: a fresh run needs an empty folder; a resumed one needs a checkpoint written with the
    same settings (a folder without one, of a run killed before its first epoch ended, starts afresh)."""
    empty = not out.exists() or (out.is_dir() and all(p.name == LOCK_FILE for p in out.iterdir()))
    if resume and out.is_dir() and not (out / RESUME_FILE).exists():
        empty = all(p.name in (LOCK_FILE, WEIGHTS_FILE) for p in out.iterdir())  # only the first epoch's weights
    if not resume or empty:
        if not empty:
            raise MedexplainError(
                f"{out}: exists and is not empty (set `resume` to continue a run, or use a new folder)",
                parameter="resume",
            )
        return False
    path = out / RESUME_FILE
    if not path.is_file():
        raise MedexplainError(f"{path}: no resume checkpoint to continue from")
    saved = read_resume_info(path).get("training", {})
    for key in sorted(set(saved) | set(settings)):
        if saved.get(key) != settings.get(key):
            raise MedexplainError(
                f"{out}: was trained with {key}={saved.get(key)!r}, not {settings.get(key)!r}; "
                f"resume with the same settings or start a new folder"
            )
    return True


def _num_classes(config: TrainConfig, info: dict[str, Any]) -> int:
    num_classes = config.model_args.get("num_classes")
    if num_classes is None:
        num_classes = len(info["label_names"]) if config.task == "bce" else info["num_classes"]
    if num_classes < (1 if config.task == "bce" else 2):
        raise MedexplainError(f"{info['data']}: needs at least two classes to train a classifier, found {num_classes}")
    return int(num_classes)


def _class_weights(config: TrainConfig, split: Split, num_classes: int) -> Tensor | None:
    class_weights = config.class_weights
    if class_weights is None:
        return None
    if config.task != "ce":
        raise MedexplainError("class weights apply to the 'ce' loss only")
    if isinstance(class_weights, str):
        return balanced_class_weights(split.targets, num_classes)
    weights = torch.tensor([float(w) for w in class_weights])
    if weights.numel() != num_classes or (weights < 0).any():
        raise MedexplainError(f"class weights must be {num_classes} non-negative numbers, got {list(class_weights)}")
    return weights


def _optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            net.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _best_val(state: dict[str, Any]) -> dict[str, float]:
    row = state["history"][state["best_epoch"] - 1]
    return {k[len("val_") :]: v for k, v in row.items() if k.startswith("val_")}


def _csv(rows: list[dict[str, float]]) -> str:
    return csv_text({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """cuDNN in deterministic mode for the duration of a run (restored afterwards)."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
