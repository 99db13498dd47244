"""Training a concept bottleneck model (Koh et al., "Concept Bottleneck Models", ICML 2020) on any manifest.

Concepts are the ``label_<name>`` columns (or a chosen list), class labels the ``label`` column. The model is
:class:`medexplain.models.bottleneck.ConceptBottleneck`: any registered backbone with one output per concept,
a sigmoid, and one linear layer to the classes. Koh et al.'s three ways to train it:

- ``independent``: the concept network learns the concepts (binary cross-entropy, unannotated cells ignored);
  the linear layer is fit on the experts' concepts of the training split and at test time reads the predicted
  probabilities.
- ``sequential``: the same concept network; the linear layer is fit on its predicted probabilities of the
  training split.
- ``joint``: everything end to end, ``loss = CE(class) + concept_weight * BCE(concepts)``.

The linear layer of independent and sequential models is an L2 logistic regression (scikit-learn) whose
strength is chosen on the validation split, as is the saved epoch of every network (mean concept AUROC for the
concept stage, class AUROC for joint training). A run folder is what :func:`medexplain.models.load` reads
(``config.json`` + ``model.safetensors``) plus ``bottleneck.json`` (concepts, weights, concept AUROCs and the
intervention curve per split, see :mod:`medexplain.concepts.intervention`); it is written atomically at the end.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor

from medexplain.concepts.annotations import ConceptData, read_concept_data, select_concepts, usable_concepts
from medexplain.concepts.intervention import bottleneck_summary, concept_aurocs, predict, write_bottleneck_tables
from medexplain.concepts.tables import plain
from medexplain.data.transforms import Resize
from medexplain.errors import MedexplainError
from medexplain.files import atomic_directory, read_json, write_text
from medexplain.metrics.classification import auroc
from medexplain.models.bottleneck import ConceptBottleneck
from medexplain.models.checkpoint import save_weights
from medexplain.models.registry import create_model
from medexplain.models.run import CONFIG_FILE, RUN_FORMAT, WEIGHTS_FILE, load
from medexplain.progress import progress_bar
from medexplain.train.augment import Augment
from medexplain.train.data import Split, standardisation, standardise

MODES = ("independent", "sequential", "joint")
BOTTLENECK_FILE = "bottleneck.json"
BOTTLENECK_FORMAT = "medexplain-bottleneck/1"


@dataclass(frozen=True)
class BottleneckSettings:
    """How a bottleneck is built and trained.

    ``backbone`` (a registered model name) with ``backbone_args`` maps images to concept logits; images are
    resized to ``size`` (every spatial axis) when given. ``concept_weight`` is Koh et al.'s lambda of joint
    training; ``balance_concepts`` weighs each concept's positive examples by its negative/positive ratio on the
    training split; ``class_Cs`` are the inverse L2 strengths tried for the linear layer of independent and
    sequential models; a concept needs ``min_examples`` training examples of each value.
    """

    mode: str = "joint"
    backbone: str = "resnet18"
    backbone_args: Mapping[str, Any] = field(default_factory=dict)
    size: int | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    concept_weight: float = 1.0
    balance_concepts: bool = True
    class_Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    augment: bool = True
    seed: int = 0
    min_examples: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MedexplainError(f"unknown bottleneck training mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("epochs", "batch_size", "min_examples"):
            if getattr(self, name) < 1:
                raise MedexplainError(f"bottleneck {name} must be at least 1, got {getattr(self, name)}")
        if self.concept_weight < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise MedexplainError(f"bottleneck needs concept_weight >= 0, lr > 0, weight_decay >= 0; got {self}")
        if not self.class_Cs or min(self.class_Cs) <= 0:
            raise MedexplainError(f"class_Cs must be positive numbers, got {list(self.class_Cs)}")


def concept_loss(logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy over the annotated cells of ``targets (B, L)`` (NaN = not annotated)."""
    annotated = ~torch.isnan(targets)
    if not annotated.any():
        return logits.sum() * 0.0
    filled = torch.where(annotated, targets, torch.zeros_like(targets))
    losses = F.binary_cross_entropy_with_logits(logits, filled, pos_weight=pos_weight, reduction="none")
    return losses[annotated].mean()


def positive_weights(concepts: Tensor) -> Tensor:
    """``(L,)`` negatives / positives of each concept over its annotated training examples."""
    annotated = ~torch.isnan(concepts)
    positives = torch.where(annotated, concepts, torch.zeros_like(concepts)).sum(0)
    negatives = annotated.sum(0) - positives
    return negatives / positives.clamp(min=1)


def fit_class_layer(
    train_inputs: np.ndarray,
    train_labels: np.ndarray,
    val_inputs: np.ndarray,
    val_labels: np.ndarray,
    Cs: Sequence[float],
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """L2 logistic regression of class on concepts ``(N, L)``, C chosen by validation AUROC (first best wins).

    Returns ``(weight (K, L), bias (K,), C, validation AUROC)`` of the class logits ``W c + b``; with two
    classes the single logistic regression is split as ``W = [-w/2, w/2]`` so that the softmax equals it.
    """
    from sklearn.linear_model import LogisticRegression

    best: tuple[float, Any, float] | None = None
    for C in Cs:
        model = LogisticRegression(C=C, max_iter=5000).fit(train_inputs, train_labels)
        score = auroc(val_labels, _full_probabilities(model, val_inputs, num_classes))
        if best is None or (not math.isnan(score) and (math.isnan(best[0]) or score > best[0])):
            best = (score, model, C)
    assert best is not None
    score, model, C = best
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if coef.shape[0] == 1:  # binary: one logit difference
        weight, bias = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    else:
        weight, bias = np.zeros((num_classes, coef.shape[1])), np.zeros(num_classes)
        weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias, float(C), float(score)


def _full_probabilities(model: Any, inputs: np.ndarray, num_classes: int) -> np.ndarray:
    probabilities = np.zeros((len(inputs), num_classes))
    probabilities[:, model.classes_] = model.predict_proba(inputs)
    return probabilities


def train_bottleneck(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: BottleneckSettings = BottleneckSettings(),
    *,
    concepts: Sequence[str] | str = "all",
    concept_model_from: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a concept bottleneck on ``data`` (train/val splits; test when present) and write the run ``out``.

    ``concepts``: ``"all"`` (every usable ``label_<name>`` column; unusable ones are left out and listed, with
    the reason, in ``bottleneck.json``'s ``skipped_concepts``) or names (each must be usable).
    ``concept_model_from``: an independent or sequential run on the same data, concepts and size whose concept
    network is reused (only the linear layer is fit), e.g. to get both from one concept network.
    Returns ``bottleneck.json``'s content.
    """
    out = Path(out)
    if concept_model_from is not None and settings.mode == "joint":
        raise MedexplainError("a joint bottleneck trains its concept network itself; reuse needs another mode")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MedexplainError(f"{out}: exists and is not empty (choose another folder or overwrite)")
    transform = Resize(settings.size) if settings.size else None
    splits = {"train": read_concept_data(data, "train", transform), "val": read_concept_data(data, "val", transform)}
    try:
        splits["test"] = read_concept_data(data, "test", transform)
    except MedexplainError as error:  # a data set without a test split is fine, a broken one is not
        if "split 'test'" not in str(error):
            raise
    train = splits["train"]
    chosen = select_concepts(concepts, train.names)
    if isinstance(concepts, str) and concepts.strip() == "all":
        chosen, skipped = usable_concepts(train.concepts.numpy(), train.names, chosen, settings.min_examples,
                                          train.problems)  # fmt: skip
    else:  # each named concept must be usable
        skipped = {}
        for i in chosen:
            usable_concepts(train.concepts.numpy(), train.names, [i], settings.min_examples, train.problems)
    intensity = standardisation(train.images)
    splits = {name: _standardised(split.columns(chosen), intensity) for name, split in splits.items()}
    train = splits["train"]
    if (train.labels < 0).any():
        raise MedexplainError(f"{data}: the training split has images without a class label")
    num_classes = len(train.class_names)
    if num_classes < 2:
        raise MedexplainError(f"{data}: a bottleneck needs at least two classes, found {num_classes}")
    model_args = {
        "in_channels": int(train.images.shape[1]),
        "num_classes": num_classes,
        "spatial_dims": train.images.ndim - 2,
        "num_concepts": len(train.names),
        "backbone": settings.backbone,
        "backbone_args": dict(settings.backbone_args),
    }
    torch.manual_seed(settings.seed)
    model = create_model("concept-bottleneck", **model_args).to(device)
    assert isinstance(model, ConceptBottleneck)
    history: list[dict[str, Any]] = []
    chosen_C = None
    with progress_bar(progress, transient=True) as bar:
        if settings.mode == "joint":
            _fit_network(model, splits, settings, "joint", device, bar, history)
        else:
            if concept_model_from is not None:
                _reuse_concept_model(model, concept_model_from, train.names, settings)
            else:
                _fit_network(model, splits, settings, "concepts", device, bar, history)
            chosen_C = _fit_linear_layer(model, splits, settings, device)
    results, predictions = bottleneck_summary(model, splits, device)
    summary = {
        "format": BOTTLENECK_FORMAT,
        "mode": settings.mode,
        "concepts": list(train.names),
        "classes": list(train.class_names),
        "skipped_concepts": skipped,
        "class_C": chosen_C,
        "concept_model_from": None if concept_model_from is None else str(Path(concept_model_from).resolve()),
        **results,
    }
    config = {
        "format": RUN_FORMAT,
        "model": "concept-bottleneck",
        "model_args": model_args,
        "data": str(Path(data).resolve()),
        "class_names": list(train.class_names),
        "label_names": list(train.names),
        "task": "bottleneck",
        "preprocessing": {"size": settings.size, "intensity": {**intensity, "method": "training-set standardisation"}},
        "training": {**asdict(settings), "backbone_args": dict(settings.backbone_args)},
        "metrics": {
            "best_epoch": next((r["epoch"] for r in history if r["saved"]), None),
            **{split: values["classification"] for split, values in summary["splits"].items() if split != "train"},
        },
    }
    _write_run(out, model, config, summary, predictions, history, overwrite)
    return summary


def _standardised(split: ConceptData, intensity: Mapping[str, list[float]]) -> ConceptData:
    images = standardise(Split(split.images, split.labels, split.ids), dict(intensity)).images
    return ConceptData(images, split.labels, split.concepts, split.ids, split.names, split.class_names, split.problems)


def _fit_network(
    model: ConceptBottleneck,
    splits: Mapping[str, ConceptData],
    settings: BottleneckSettings,
    stage: str,
    device: str,
    bar: Progress,
    history: list[dict[str, Any]],
) -> None:
    """Train the concept network (``stage="concepts"``) or the whole model (``"joint"``); keep the best epoch."""
    train, val = splits["train"], splits["val"]
    network = model.concept_model if stage == "concepts" else model
    pos_weight = positive_weights(train.concepts).to(device) if settings.balance_concepts else None
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    augmentation = Augment() if settings.augment else None
    n = len(train)
    batches = max(1, n // settings.batch_size)
    best_score, best_epoch, best_state = -math.inf, 0, copy.deepcopy(network.state_dict())
    task = bar.add_task(f"bottleneck ({stage})", total=settings.epochs)

    def loss_of(x: Tensor, labels: Tensor, concepts: Tensor) -> tuple[Tensor, dict[str, float]]:
        logits = model.concept_logits(x)
        c_loss = concept_loss(logits, concepts, pos_weight)
        if stage == "concepts":
            return c_loss, {"concept_loss": float(c_loss.detach())}
        y_loss = F.cross_entropy(model.classify(torch.sigmoid(logits)), labels)
        return y_loss + settings.concept_weight * c_loss, {
            "concept_loss": float(c_loss.detach()),
            "class_loss": float(y_loss.detach()),
        }

    for epoch in range(settings.epochs):
        lr = 0.5 * settings.lr * (1 + math.cos(math.pi * epoch / settings.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(n, generator=generator)
        totals: dict[str, float] = {}
        for b in range(batches):
            rows = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            x = train.images[rows]
            if augmentation is not None:
                x = augmentation(x, generator)
            loss, parts = loss_of(x.to(device), train.labels[rows].to(device), train.concepts[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[f"train_{key}"] = totals.get(f"train_{key}", 0.0) + value / batches
        probabilities, class_logits = predict(model, val.images, device=device)
        validation = {"val_concept_auroc": float(np.nanmean(concept_aurocs(val.concepts.numpy(), probabilities)))}
        if stage == "joint":  # in the concept stage the linear layer is not fit yet
            validation["val_auroc"] = auroc(val.labels.numpy(), torch.from_numpy(class_logits).softmax(1).numpy())
        score = validation["val_concept_auroc" if stage == "concepts" else "val_auroc"]
        if not math.isnan(score) and score > best_score:
            best_score, best_epoch, best_state = score, epoch + 1, copy.deepcopy(network.state_dict())
        history.append({"stage": stage, "epoch": epoch + 1, "lr": lr, **totals, **validation})
        bar.advance(task)
    network.load_state_dict(best_state)
    for row in history:
        row["saved"] = row["stage"] == stage and row["epoch"] == best_epoch
    bar.remove_task(task)


def _fit_linear_layer(
    model: ConceptBottleneck, splits: Mapping[str, ConceptData], settings: BottleneckSettings, device: str
) -> float:
    """Fit the class layer on expert (independent) or predicted (sequential) training concepts; returns C."""
    train, val = splits["train"], splits["val"]
    train_predicted, _ = predict(model, train.images, device=device)
    val_predicted, _ = predict(model, val.images, device=device)
    if settings.mode == "independent":
        expert = train.concepts.numpy().astype(np.float64)
        prevalence = np.nanmean(expert, axis=0)
        inputs = np.where(np.isnan(expert), prevalence, expert)  # unannotated cells: the concept's prevalence
    else:
        inputs = train_predicted
    weight, bias, C, _ = fit_class_layer(
        inputs, train.labels.numpy(), val_predicted, val.labels.numpy(), settings.class_Cs, len(train.class_names)
    )
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))
    return C


def _reuse_concept_model(
    model: ConceptBottleneck, run_dir: str | os.PathLike[str], names: list[str], settings: BottleneckSettings
) -> None:
    previous, config = load(run_dir)
    recorded = _read_summary(Path(run_dir))
    if not isinstance(previous, ConceptBottleneck) or recorded.get("concepts") != names:
        raise MedexplainError(
            f"{run_dir}: not a concept bottleneck on the concepts {names} (it has {recorded.get('concepts')})"
        )
    if config.get("preprocessing", {}).get("size") != settings.size or config["model_args"]["backbone"] != (
        settings.backbone
    ):
        raise MedexplainError(f"{run_dir}: was trained with another image size or backbone")
    model.concept_model.load_state_dict(previous.concept_model.state_dict())


def _read_summary(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / BOTTLENECK_FILE, format_prefix=BOTTLENECK_FORMAT)


def _write_run(
    out: Path,
    model: ConceptBottleneck,
    config: dict[str, Any],
    summary: dict[str, Any],
    predictions: list[dict[str, Any]],
    history: list[dict[str, Any]],
    overwrite: bool,
) -> None:
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_weights(model, tmp / WEIGHTS_FILE)
        write_text(tmp / CONFIG_FILE, json.dumps(plain(config), indent=2) + "\n")
        write_text(tmp / BOTTLENECK_FILE, json.dumps(plain(summary), indent=1) + "\n")
        write_bottleneck_tables(tmp, summary, predictions, history)
