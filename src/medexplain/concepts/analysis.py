"""The whole concept analysis of Wang et al. (2019) on recorded activations: probes, influence, explanations.

Probes and CAVs are fit on the training activations only; everything reported as held-out (probe AUROC,
TCAV scores, correlations, per-image explanations, the inconsistency AUROC) is computed on the other split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from torch import nn

from medexplain.concepts.activations import Activations, Augmentation, collect_activations
from medexplain.concepts.annotations import select_concepts, usable_concepts
from medexplain.concepts.consistency import (
    ConceptClassTable,
    explain_images,
    inconsistency,
    learn_table,
    wrong_prediction_auroc,
)
from medexplain.concepts.influence import (
    bagged_direction,
    directional_derivatives,
    holm,
    resampled_directions,
    score_correlation,
    tcav_scores,
    tcav_significance,
)
from medexplain.concepts.probes import (
    DEFAULT_CS,
    Probe,
    binary_targets,
    check_trainable,
    cross_validated_probability,
    examples_needed,
    fit_probe,
    learning_curve,
    score_probe,
)
from medexplain.errors import MedexplainError
from medexplain.explain.hooks import last_conv_block
from medexplain.progress import progress_bar


@dataclass(frozen=True)
class ConceptSettings:
    """Hyperparameters of the analysis.

    The probe (C by cross-validation) detects a concept; its direction, the concept activation vector, is the
    mean of ``cav_runs`` probes with the fixed regularisation ``cav_C`` re-fit on resampled training data, so that
    the concept and the ``random_runs`` random-label directions it is tested against are fit identically.
    """

    layers: tuple[str, ...] = ()  # empty: the last convolutional block
    pool: tuple[str, ...] = ("mean",)
    augmentation: Augmentation = field(default_factory=Augmentation)
    folds: int = 5
    Cs: tuple[float, ...] = DEFAULT_CS
    threshold: float = 0.5
    cav_C: float = 0.01
    cav_runs: int = 20
    random_runs: int = 50
    learning_sizes: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    learning_draws: int = 5
    alpha: float = 0.05
    seed: int = 0
    batch_size: int = 32


@dataclass
class ConceptReport:
    """Result tables (lists of flat rows) plus the fitted probes, the concept-class table and concept maps."""

    concepts: list[dict[str, object]]
    influence: list[dict[str, object]]
    learning_curve: list[dict[str, object]]
    images: list[dict[str, object]]
    table: ConceptClassTable
    probes: dict[tuple[str, str], Probe]
    roc: dict[str, tuple[np.ndarray, np.ndarray, float]]
    summary: dict[str, object]
    gallery: Any = None  # a medexplain.concepts.gallery.ConceptMapGallery of the held-out split, when made


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax ``(N, K)`` of class logits ``(N, K)``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def analyse(
    model: nn.Module,
    train_data: Sequence[object],
    held_out_data: Sequence[object],
    concept_names: Sequence[str],
    class_names: Sequence[str],
    *,
    concepts: Sequence[str] | str = "all",
    settings: ConceptSettings = ConceptSettings(),
    table: ConceptClassTable | None = None,
    problems: Mapping[str, str] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> ConceptReport:
    """Record activations on both splits (``Sample`` datasets) and run :func:`analyse_activations`."""
    select_concepts(concepts, concept_names)  # fail before the long passes over the data
    layers = settings.layers or (last_conv_block(model),)
    record = dict(
        layers=layers,
        pool=settings.pool,
        augmentation=settings.augmentation,
        batch_size=settings.batch_size,
        device=device,
        progress=progress,
    )
    train = collect_activations(model, train_data, description="activations (training split)", **record)
    held_out = collect_activations(model, held_out_data, description="activations (held-out split)", **record)
    return analyse_activations(
        train,
        held_out,
        concept_names,
        class_names,
        concepts=concepts,
        settings=settings,
        table=table,
        problems=problems,
        progress=progress,
    )


def analyse_activations(
    train: Activations,
    held_out: Activations,
    concept_names: Sequence[str],
    class_names: Sequence[str],
    *,
    concepts: Sequence[str] | str = "all",
    settings: ConceptSettings = ConceptSettings(),
    table: ConceptClassTable | None = None,
    problems: Mapping[str, str] | None = None,
    progress: bool = True,
) -> ConceptReport:
    """Probes, influence, per-image explanations and the inconsistency AUROC for every layer and concept.

    A concept named explicitly must have a readable column (``problems``: ``{name: why not}``, as in
    ``ImageDataset.label_problems``), both values and at least ``settings.folds`` examples of each in the training
    split; with ``concepts="all"`` other concepts are left out and listed in ``summary["skipped_concepts"]``.
    """
    chosen = select_concepts(concepts, concept_names)
    if train.concepts.shape[1] < max(chosen) + 1:
        raise MedexplainError("the training split carries no concept annotations (Sample.labels is None)")
    skipped: dict[str, str] = {}
    if isinstance(concepts, str) and concepts.strip() == "all":  # named concepts must be usable; "all" skips
        chosen, skipped = usable_concepts(train.concepts, concept_names, chosen, settings.folds, problems)
    else:
        for i in chosen:
            if problems and concept_names[i] in problems:
                raise MedexplainError(f"concept {concept_names[i]!r}: {problems[concept_names[i]]}")
    names = [concept_names[i] for i in chosen]
    classes = list(class_names)
    if held_out.logits.shape[1] != len(classes) or held_out.logits.shape[1] < 2:
        raise MedexplainError(
            f"model gives {held_out.logits.shape[1]} logits but the data has {len(classes)} classes "
            "(the concept analysis needs K >= 2 class logits)"
        )
    for split, record in (("training", train), ("held-out", held_out)):
        if record.labels.max(initial=-1) >= len(classes):
            raise MedexplainError(
                f"{split} split has class label {record.labels.max()} but the model has {len(classes)} classes"
            )
    if table is None:
        table = learn_table(train.concepts[:, chosen], train.labels, names, classes, settings.alpha)
    else:
        table = table.restricted_to(names, classes)
    probability = class_probabilities(held_out.logits)
    predicted = probability.argmax(axis=1)
    labelled = held_out.labels >= 0
    wrong = predicted != held_out.labels

    concept_rows, influence_rows, curve_rows, image_rows = [], [], [], []
    probes: dict[tuple[str, str], Probe] = {}
    roc: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    steps = len(train.features) * len(names)
    # thousands of small logistic regressions: multi-threaded BLAS only adds overhead (20x on a busy machine)
    with progress_bar(progress, transient=True) as bar, threadpool_limits(limits=1, user_api="blas"):
        task = bar.add_task("concept probes", total=steps)
        for layer in train.features:
            channels = train.channels[layer]
            presence = np.zeros((len(held_out.ids), len(names)))
            influence_on_prediction = np.zeros_like(presence)
            layer_influence = []
            for j, (column, name) in enumerate(zip(chosen, names, strict=True)):
                probe, rows = _concept(train, held_out, layer, column, name, settings, probability, channels)
                probes[(layer, name)] = probe
                concept_rows.append(rows["concept"])
                curve_rows.extend(rows["curve"])
                layer_influence.extend(rows["influence"])
                presence[:, j] = probe.probability(held_out.features[layer])
                derivatives = rows["derivatives"]
                influence_on_prediction[:, j] = derivatives[np.arange(len(predicted)), predicted]
                bar.advance(task)
            for row in layer_influence:
                row["class_name"] = classes[int(row["class"])]
            _correct_pvalues(layer_influence, settings.alpha)
            influence_rows.extend(layer_influence)
            score = inconsistency(presence, predicted, table)
            consistent = inconsistency((presence >= settings.threshold).astype(float), predicted, table) == 0
            auroc, fpr, tpr = wrong_prediction_auroc(score[labelled], wrong[labelled])
            roc[layer] = (fpr, tpr, auroc)
            ranked = explain_images(held_out.ids, names, presence, influence_on_prediction, settings.threshold)
            for i, item in enumerate(held_out.ids):
                image_rows.append(
                    {
                        "layer": layer,
                        "id": item,
                        "label": classes[held_out.labels[i]] if labelled[i] else None,
                        "predicted": classes[predicted[i]],
                        "class_probability": float(probability[i, predicted[i]]),
                        "correct": bool(not wrong[i]) if labelled[i] else None,
                        "inconsistency": float(score[i]),
                        "consistent": bool(consistent[i]),
                        "detected": ranked[i],
                        **{f"p_{n}": float(presence[i, j]) for j, n in enumerate(names)},
                        **{f"d_{n}": float(influence_on_prediction[i, j]) for j, n in enumerate(names)},
                    }
                )
    summary = {
        "layers": list(train.features),
        "concepts": names,
        "skipped_concepts": skipped,
        "classes": classes,
        "n_train": len(train.ids),
        "n_held_out": len(held_out.ids),
        "held_out_accuracy": float(np.mean(~wrong[labelled])) if labelled.any() else math.nan,
        "inconsistency_auroc": {layer: value[2] for layer, value in roc.items()},
        "settings": {
            "pool": list(settings.pool),
            "augmentation_copies": settings.augmentation.copies,
            "folds": settings.folds,
            "Cs": list(settings.Cs),
            "threshold": settings.threshold,
            "cav_C": settings.cav_C,
            "cav_runs": settings.cav_runs,
            "random_runs": settings.random_runs,
            "alpha": settings.alpha,
            "seed": settings.seed,
        },
    }
    return ConceptReport(concept_rows, influence_rows, curve_rows, image_rows, table, probes, roc, summary)


def _concept(
    train: Activations,
    held_out: Activations,
    layer: str,
    column: int,
    name: str,
    settings: ConceptSettings,
    probability: np.ndarray,
    channels: int,
) -> tuple[Probe, dict[str, object]]:
    rows_train, y_train = binary_targets(train.concepts[:, column], name)
    check_trainable(y_train, name, settings.folds)
    x_train = train.features[layer][rows_train]
    probe = fit_probe(
        x_train,
        y_train,
        concept=name,
        folds=settings.folds,
        Cs=settings.Cs,
        seed=settings.seed,
        threshold=settings.threshold,
    )
    cv = score_probe(
        cross_validated_probability(x_train, y_train, folds=settings.folds, Cs=settings.Cs, seed=settings.seed),
        y_train,
        settings.threshold,
    )
    annotated = held_out.concepts.shape[1] > column
    held_concepts = held_out.concepts[:, column] if annotated else np.full(len(held_out.ids), np.nan)
    rows_test, y_test = binary_targets(held_concepts, name)
    x_test = held_out.features[layer][rows_test]
    test = score_probe(probe.probability(x_test), y_test, settings.threshold) if len(y_test) else None
    curve = (
        learning_curve(
            x_train,
            y_train,
            x_test,
            y_test,
            sizes=settings.learning_sizes,
            draws=settings.learning_draws,
            folds=settings.folds,
            Cs=settings.Cs,
            seed=settings.seed,
        )
        if len(y_test)
        else []
    )
    concept_row = {
        "layer": layer,
        "concept": name,
        "n_train": len(y_train),
        "n_train_positive": int(y_train.sum()),
        "C": probe.C,
        "threshold": settings.threshold,
        "cv_auroc": cv.auroc,
        "cv_precision": cv.precision,
        "cv_recall": cv.recall,
        "heldout_auroc": test.auroc if test else math.nan,
        "heldout_precision": test.precision if test else math.nan,
        "heldout_recall": test.recall if test else math.nan,
        "n_heldout": test.n if test else 0,
        "n_heldout_positive": test.positives if test else 0,
        "examples_needed": examples_needed(curve),
    }

    resample = dict(channels=channels, C=settings.cav_C, seed=settings.seed)
    concept_dirs = resampled_directions(x_train, y_train, runs=settings.cav_runs, **resample)
    random_dirs = resampled_directions(x_train, y_train, runs=settings.random_runs, random_labels=True, **resample)
    direction = bagged_direction(concept_dirs)
    derivatives = directional_derivatives(held_out.gradients[layer], direction)
    tests = tcav_significance(held_out.gradients[layer], held_out.labels, concept_dirs, random_dirs)
    concept_logit = probe.logit(held_out.features[layer])
    influence = []
    for test_row in tests:
        k = test_row["class"]
        members = held_out.labels == k
        members = members if members.any() else np.ones(len(members), dtype=bool)
        rho, rho_p = score_correlation(concept_logit, probability[:, k])
        influence.append(
            {
                "layer": layer,
                "concept": name,
                **test_row,
                "tcav": float(tcav_scores(derivatives[members, k])),
                "mean_derivative": float(derivatives[members, k].mean()),
                "spearman_rho": rho,
                "spearman_p": rho_p,
            }
        )
    curve_rows = [{"layer": layer, "concept": name, **r} for r in curve]
    return probe, {"concept": concept_row, "influence": influence, "curve": curve_rows, "derivatives": derivatives}


def _correct_pvalues(rows: list[dict[str, object]], alpha: float) -> None:
    """Holm correction over the concepts, separately for each class: adds ``p_holm``, ``p_tcav_holm`` and
    ``significant`` (the magnitude test, ``p_holm < alpha``)."""
    for k in {r["class"] for r in rows}:
        group = [r for r in rows if r["class"] == k]
        for key in ("p", "p_tcav"):
            for row, adjusted in zip(group, holm([float(r[key]) for r in group]), strict=True):
                row[f"{key}_holm"] = float(adjusted)
        for row in group:
            row["significant"] = bool(row["p_holm"] < alpha)
