"""``train(...)``: fit any registered model on any dataset ``load_dataset`` reads; resumable and deterministic.

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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.files import csv_text, write_text
from medexplain.metrics.classification import classification_summary, multilabel_summary
from medexplain.metrics.complexity import gini
from medexplain.models.bagnet import FlipAveraged
from medexplain.models.checkpoint import load_weights, save_weights
from medexplain.models.modes import evaluation_mode
from medexplain.models.registry import MODELS, create_model
from medexplain.models.run import CONFIG_FILE, RUN_FORMAT, WEIGHTS_FILE
from medexplain.progress import progress_bar
from medexplain.train import distributed
from medexplain.train.augment import Augment
from medexplain.train.averaging import WeightAverage
from medexplain.train.data import Split, check_labels, dataset_info, read_split, standardisation, standardise
from medexplain.train.losses import Objective, balanced_class_weights, local_part
from medexplain.train.state import RESUME_FILE, load_resume, read_resume_info, save_resume

METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "predictions.csv"
MONITORS = ("loss", "accuracy", "balanced_accuracy", "auroc", "kappa")
OPTIMIZERS = ("sgd", "adamw")


def train(
    model: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model_args: dict[str, Any] | None = None,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float | None = None,
    optimizer: str = "adamw",
    weight_decay: float | None = None,
    loss: str | None = None,
    sparsity_lambda: float | None = None,
    sparsity_on: str = "evidence",
    sparsity_warmup: int = 0,
    class_weights: str | Sequence[float] | None = None,
    size: int | None = None,
    seed: int = 0,
    patience: int | None = None,
    monitor: str = "auroc",
    augment: bool = True,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    ema_decay: float | None = None,
    tta_flip_axes: Sequence[int] | None = None,
    label_smoothing: float = 0.0,
    ordinal_sigma: float = 0.0,
) -> dict[str, Any]:
    """Train ``model`` (a registered name) on ``data`` and write the run folder ``out``; returns its config.

    Args:
        model_args: extra model arguments (``in_channels``, ``num_classes`` and ``spatial_dims`` come from data).
        lr: peak learning rate of the cosine schedule (default 1e-2 for SGD, 1e-3 for AdamW).
        optimizer: ``"sgd"`` (Nesterov, momentum 0.9, weight decay 5e-4) or ``"adamw"`` (weight decay 1e-2).
        loss: ``"ce"``, ``"bce"`` (multi-label ``label_<name>`` targets), ``"ce+sparsity"``, ``"bce+sparsity"``;
            default ``"ce+sparsity"`` for models registered with a ``sparsity_lambda`` (``sparse-*``), else ``"ce"``.
        sparsity_lambda: weight of mean |evidence| (see :mod:`medexplain.train.losses` for the paper's scale).
        sparsity_on: ``"evidence"`` (the map, as published) or ``"local"`` (the map minus the class bias).
        sparsity_warmup: ``W`` > 0 ramps lambda linearly, ``lambda * min(1, e / W)`` in epoch ``e = 0, 1, ...``
            (features first, then sparsity); epochs ``e >= W - 1`` (lambda at least ``(W - 1) / W`` of its value)
            can be chosen as the best epoch, earlier ones only stand in until then.
        class_weights: ``"balanced"`` or one weight per class, for the cross-entropy.
        size: resize every image to ``size`` along each spatial axis.
        patience: stop after this many epochs without improvement of ``monitor`` on the validation split.
        monitor: validation metric choosing the saved epoch, one of :data:`MONITORS`.
        resume: continue ``out`` from its last completed epoch (same settings required).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after each epoch's files are written.
        ema_decay: keep an exponential moving average of the weights (:class:`~medexplain.train.averaging.
            WeightAverage`, updated after every step); validation, the saved checkpoint and the final metrics
            use the averaged weights. Default: none, the weights of the best epoch as trained.
        tta_flip_axes: evaluate (validation and test) with test-time flips of these spatial axes
            (:class:`~medexplain.models.bagnet.FlipAveraged`: the mean of the flipped-back evidence maps, so the
            metrics and Gini are those of an evidence model); evidence models only. Default: no flips.
        label_smoothing: label-smoothed cross-entropy with this ``eps`` ("ce" losses).
        ordinal_sigma: Gaussian soft targets over ordered grades with this width (see :class:`Objective`).

    Options at their defaults are left out of the recorded settings, so earlier run folders resume unchanged.
    """
    out = Path(out)
    entry = MODELS.entry(model)
    if loss is None:
        loss = "ce+sparsity" if entry.metadata.get("sparsity_lambda") else "ce"
    if "sparsity" in loss and sparsity_lambda is None:
        sparsity_lambda = entry.metadata.get("sparsity_lambda")
    task = loss.partition("+")[0]
    sparse = "sparsity" in loss
    settings = _checked_settings(
        {
            "model": model,
            "model_args": dict(model_args or {}),
            "data": str(Path(data).resolve()),
            "loss": loss,
            "sparsity_lambda": sparsity_lambda if sparse else None,
            "sparsity_on": sparsity_on if sparse else None,
            "sparsity_warmup": int(sparsity_warmup) if sparse else 0,
            "class_weights": class_weights if class_weights is None or isinstance(class_weights, str)
            else [float(w) for w in class_weights],
            "optimizer": optimizer,
            "lr": float(lr if lr is not None else (1e-2 if optimizer == "sgd" else 1e-3)),
            "weight_decay": float(weight_decay if weight_decay is not None else (5e-4 if optimizer == "sgd" else 1e-2)),
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "size": size,
            "seed": int(seed),
            "patience": patience,
            "monitor": monitor,
            "augment": bool(augment),
            **_optional_settings(ema_decay, tta_flip_axes, label_smoothing, ordinal_sigma),
        }
    )  # fmt: skip
    _check_out(out, resume, settings)
    info = dataset_info(data)
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ctx, run_device = distributed.context(run_device)  # torchrun: one rank of a data-parallel job

    with progress_bar(progress and ctx.is_main) as bar, _deterministic(), torch.random.fork_rng(devices=[]):
        splits = {"train": read_split(data, "train", size=size, task=task, progress=bar)}
        splits["val"] = read_split(data, "val", size=size, task=task, progress=bar)
        try:
            splits["test"] = read_split(data, "test", size=size, task=task, progress=bar)
        except MedexplainError as error:  # a data set without a test split is fine, a broken one is not
            if "split 'test'" not in str(error):
                raise
        intensity = standardisation(splits["train"].images)
        splits = {name: standardise(split, intensity) for name, split in splits.items()}
        num_classes = _num_classes(settings, info, task)
        check_labels(splits, num_classes, data, task)
        train_split = splits["train"]
        args = {
            **settings["model_args"],
            "in_channels": int(train_split.images.shape[1]),
            "num_classes": num_classes,
            "spatial_dims": train_split.images.ndim - 2,
        }
        torch.manual_seed(seed)
        net = ctx.prepare(create_model(model, **args).to(run_device))
        weights = _class_weights(class_weights, train_split, num_classes, task)
        objective = Objective.parse(
            loss,
            sparsity_lambda=sparsity_lambda,
            class_weights=weights,
            sparsity_on=sparsity_on,
            label_smoothing=label_smoothing,
            ordinal_sigma=ordinal_sigma,
        )
        if objective.sparsity_lambda > 0 and not hasattr(net, "evidence_map"):
            raise MedexplainError(f"model {model!r} has no evidence map: the sparsity loss needs a BagNet")
        if tta_flip_axes:
            FlipAveraged(net, tta_flip_axes)  # refuses models without evidence maps and bad axes before training
        averager = WeightAverage(net, ema_decay) if ema_decay else None
        opt = _optimizer(net, settings)
        generator = torch.Generator().manual_seed(seed)
        config = {
            "format": RUN_FORMAT,
            "model": model,
            "model_args": args,
            "data": info["data"],
            "class_names": info["class_names"] if task == "ce" else [],
            "label_names": info["label_names"] if task == "bce" else [],
            "task": task,
            "preprocessing": {"size": size, "intensity": {**intensity, "method": "training-set standardisation"}},
            "training": settings,
            "metrics": {},
        }
        state = {"epoch": 0, "best": None, "best_epoch": None, "since_best": 0, "history": [], "done": False}
        if resume:
            averaged = averager.average if averager is not None else None
            generators, state = load_resume(out / RESUME_FILE, model=net, optimizer=opt, averaged=averaged)
            if averager is not None:
                averager.updates = state["ema_updates"]
            generator.set_state(generators["shuffle"])
            torch.set_rng_state(generators["torch"])
            config["metrics"] = state.get("metrics", {})
        if not state["done"]:
            fitting = (net, opt, objective, splits, config, state, generator, out, run_device, augment, bar)
            _fit(*fitting, on_epoch_end, ctx, averager)
        ctx.barrier()  # rank 0 has written the weights
        load_weights(net, out / WEIGHTS_FILE)
        evaluated = {
            name: _evaluate(net, split, objective, run_device, tta_flip_axes)
            for name, split in splits.items()
            if name != "train"
        }
        config["metrics"] = {"best_epoch": state["best_epoch"], **{name: m for name, (m, _) in evaluated.items()}}
        if ctx.is_main:
            held_out = "test" if "test" in evaluated else "val"
            write_text(out / PREDICTIONS_FILE, _predictions_csv(splits[held_out], evaluated[held_out][1], held_out))
            write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return config


def _fit(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    objective: Objective,
    splits: dict[str, Split],
    config: dict[str, Any],
    state: dict[str, Any],
    generator: torch.Generator,
    out: Path,
    device: torch.device,
    augment: bool,
    bar: Progress,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    ctx: distributed.Context,
    averager: WeightAverage | None = None,
) -> None:
    settings = config["training"]
    evaluated = averager.average if averager is not None else net  # the weights validated and saved
    step = ctx.wrap(net)
    train_split = splits["train"]
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    augmentation = Augment() if augment else None
    batches = max(1, len(train_split) // batch_size) if len(train_split) > batch_size else 1
    epoch_task = bar.add_task("epochs", total=epochs, completed=state["epoch"])
    for epoch in range(state["epoch"], epochs):
        started = time.perf_counter()
        lr = 0.5 * settings["lr"] * (1 + math.cos(math.pi * epoch / epochs))
        for group in opt.param_groups:
            group["lr"] = lr
        warmup = settings["sparsity_warmup"]
        warming = epoch + 1 < warmup
        scale = min(1.0, epoch / warmup) if warmup else 1.0
        epoch_objective = replace(objective, sparsity_lambda=objective.sparsity_lambda * scale)
        net.train()
        order = torch.randperm(len(train_split), generator=generator)
        totals: dict[str, float] = {}
        batch_task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=batches)
        for index in range(batches):
            chosen = order[index * batch_size : (index + 1) * batch_size]
            x = train_split.images[chosen].to(device)
            if augmentation is not None:
                x = augmentation(x, generator)
            part, share = ctx.part(len(chosen))  # this rank's part of the global batch
            loss, _, parts = step(epoch_objective, x[part], train_split.targets[chosen][part].to(device))
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
        val, _ = _evaluate(evaluated, splits["val"], objective, device, settings.get("tta_flip_axes"))
        row = {"epoch": epoch + 1, "lr": lr, "sparsity_lambda": epoch_objective.sparsity_lambda}
        row.update({f"train_{k}": v for k, v in totals.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row["seconds"] = time.perf_counter() - started
        score = -val["loss"] if settings["monitor"] == "loss" else val[settings["monitor"]]
        best = state["best"]
        improved = best is None or (not math.isnan(score) and (math.isnan(best) or score > best))
        if warming or improved:  # during the sparsity warm-up the latest epoch stands in for the best
            state.update(best=None if warming else score, best_epoch=epoch + 1, since_best=0)
            if ctx.is_main:
                save_weights(evaluated, out / WEIGHTS_FILE)
        else:
            state["since_best"] += 1
        state["epoch"] = epoch + 1
        state["history"].append(row)
        patience = settings["patience"]
        state["done"] = state["epoch"] == epochs or (patience is not None and state["since_best"] >= patience)
        config["metrics"] = {"best_epoch": state["best_epoch"], "val": _best_val(state)}
        state["metrics"] = config["metrics"]
        state["training"] = settings
        if averager is not None:
            state["ema_updates"] = averager.updates
        if ctx.is_main:
            write_text(out / METRICS_FILE, _csv(state["history"]))
            write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
            save_resume(
                out / RESUME_FILE,
                model=net,
                optimizer=opt,
                generators={"shuffle": generator.get_state(), "torch": torch.get_rng_state()},
                info=state,
                averaged=averager.average if averager is not None else None,
            )
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
    """Loss, classification metrics and (for evidence models) the mean Gini of |evidence| on ``split``, and the
    predicted probabilities ``(N, K)`` (softmax for "ce", per-label sigmoid for "bce"); with ``tta_flip_axes``
    of the flip-averaged model (its evidence maps are the flip-averaged maps)."""
    model = FlipAveraged(net, tta_flip_axes) if tta_flip_axes else net
    logits, ginis, local_ginis, losses = [], [], [], []
    with evaluation_mode(net):
        for start in range(0, len(split), 64):
            x = split.images[start : start + 64].to(device)
            target = split.targets[start : start + 64].to(device)
            if hasattr(model, "evidence_map"):
                evidence = model.evidence_map(x)
                batch_logits = evidence.flatten(2).mean(2)
                ginis.append(gini(evidence).cpu())
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


def _optional_settings(
    ema_decay: float | None, tta_flip_axes: Sequence[int] | None, label_smoothing: float, ordinal_sigma: float
) -> dict[str, Any]:
    """The settings of the optional training features that are switched on (defaults are not recorded)."""
    optional: dict[str, Any] = {}
    if ema_decay:
        if not 0 < ema_decay < 1:
            raise MedexplainError(f"EMA decay must lie in (0, 1), got {ema_decay}")
        optional["ema_decay"] = float(ema_decay)
    if tta_flip_axes:
        optional["tta_flip_axes"] = [int(axis) for axis in tta_flip_axes]
    if label_smoothing:
        optional["label_smoothing"] = float(label_smoothing)
    if ordinal_sigma:
        optional["ordinal_sigma"] = float(ordinal_sigma)
    return optional


def _checked_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The run's identity (every setting that changes the result, checked again on resume), validated."""
    if settings["optimizer"] not in OPTIMIZERS:
        raise MedexplainError(f"unknown optimizer {settings['optimizer']!r}; available: {', '.join(OPTIMIZERS)}")
    if settings["monitor"] not in MONITORS:
        raise MedexplainError(f"unknown monitor {settings['monitor']!r}; available: {', '.join(MONITORS)}")
    for name in ("epochs", "batch_size"):
        if settings[name] < 1:
            raise MedexplainError(f"{name} must be at least 1, got {settings[name]}")
    reserved = sorted({"in_channels", "spatial_dims"} & set(settings["model_args"]))
    if reserved:
        raise MedexplainError(f"model argument {reserved[0]!r} is taken from the data, do not give it")
    if isinstance(settings["class_weights"], str) and settings["class_weights"] != "balanced":
        raise MedexplainError(f"class weights must be 'balanced' or numbers, got {settings['class_weights']!r}")
    return settings


def _check_out(out: Path, resume: bool, settings: dict[str, Any]) -> None:
    """A fresh run needs an empty folder; a resumed one needs a checkpoint written with the same settings."""
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise MedexplainError(f"{out}: exists and is not empty (use --resume to continue a run, or a new folder)")
        return
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


def _num_classes(settings: dict[str, Any], info: dict[str, Any], task: str) -> int:
    num_classes = settings["model_args"].get("num_classes")
    if num_classes is None:
        num_classes = len(info["label_names"]) if task == "bce" else info["num_classes"]
    if num_classes < (1 if task == "bce" else 2):
        raise MedexplainError(f"{info['data']}: needs at least two classes to train a classifier, found {num_classes}")
    return int(num_classes)


def _class_weights(
    class_weights: str | Sequence[float] | None, split: Split, num_classes: int, task: str
) -> Tensor | None:
    if class_weights is None:
        return None
    if task != "ce":
        raise MedexplainError("class weights apply to the 'ce' loss only")
    if isinstance(class_weights, str):
        return balanced_class_weights(split.targets, num_classes)
    weights = torch.tensor([float(w) for w in class_weights])
    if weights.numel() != num_classes or (weights < 0).any():
        raise MedexplainError(f"class weights must be {num_classes} non-negative numbers, got {list(class_weights)}")
    return weights


def _optimizer(net: nn.Module, settings: dict[str, Any]) -> torch.optim.Optimizer:
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(
            net.parameters(), lr=settings["lr"], momentum=0.9, nesterov=True, weight_decay=settings["weight_decay"]
        )
    return torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])


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
