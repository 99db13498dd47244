"""What a trained concept bottleneck says and how much an expert's corrections help (Koh et al., ICML 2020).

Per split: the class metrics, each concept's AUROC against the experts' annotations, and the test-time
intervention curve: class AUROC when the ``k`` least certain predicted concepts of each image are replaced by the
expert's values, ``k = 0 .. L`` (``k = L`` is the linear layer applied to the expert concepts wherever they are
annotated). The readable part of the model is its linear layer: one weight per concept and class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medexplain.concepts.annotations import ConceptData
from medexplain.concepts.tables import rows_to_csv
from medexplain.files import write_text
from medexplain.metrics.classification import binary_auroc, classification_summary
from medexplain.models.bottleneck import ConceptBottleneck, intervene
from medexplain.models.modes import evaluation_mode


@torch.no_grad()
def predict(
    model: ConceptBottleneck, images: Tensor, *, batch_size: int = 64, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """``(concept probabilities (N, L), class logits (N, K))`` float64 of images ``(N, C, *spatial)``, eval mode."""
    concepts, logits = [], []
    with evaluation_mode(model):
        for start in range(0, len(images), batch_size):
            p = model.concept_probabilities(images[start : start + batch_size].to(device))
            concepts.append(p.double().cpu())
            logits.append(model.classify(p).double().cpu())
    return torch.cat(concepts).numpy(), torch.cat(logits).numpy()


def concept_aurocs(expert: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``(L,)`` AUROC of each concept's probabilities ``(N, L)`` over its annotated images (``expert`` NaN = none)."""
    return np.array(
        [
            binary_auroc(expert[annotated, j] > 0.5, probabilities[annotated, j])
            for j in range(expert.shape[1])
            for annotated in [~np.isnan(expert[:, j])]
        ]
    )


def _softmax(logits: Tensor) -> np.ndarray:
    return logits.double().softmax(1).numpy()


def intervention_curve(
    model: ConceptBottleneck, probabilities: np.ndarray, expert: np.ndarray, labels: np.ndarray
) -> list[dict[str, float]]:
    """Class metrics after replacing the ``k`` least certain concepts by the expert's, for ``k = 0 .. L``.

    probabilities, expert ``(N, L)`` (expert NaN = not annotated, never replaced); labels ``(N,)``. Rows:
    ``k, auroc, accuracy, corrected`` (mean number of concepts actually replaced per image).
    """
    p = torch.from_numpy(np.asarray(probabilities, dtype=np.float64))
    c = torch.from_numpy(np.asarray(expert, dtype=np.float64))
    weight = model.classifier.weight.detach().double().cpu()
    bias = model.classifier.bias.detach().double().cpu()
    rows = []
    for k in range(p.shape[1] + 1):
        corrected = intervene(p, c, k)
        summary = classification_summary(labels, _softmax(corrected @ weight.T + bias))
        replaced = float((corrected != p).sum(1).double().mean())
        rows.append({"k": k, "auroc": summary["auroc"], "accuracy": summary["accuracy"], "corrected": replaced})
    return rows


def class_weights(model: ConceptBottleneck, concepts: list[str], classes: list[str]) -> list[dict[str, Any]]:
    """One row per concept: its weight for each class and, with two classes, the log-odds it adds for class 1."""
    weight = model.classifier.weight.detach().double().cpu().numpy()
    rows = []
    for j, name in enumerate(concepts):
        row: dict[str, Any] = {"concept": name, **{f"weight_{k}": float(weight[i, j]) for i, k in enumerate(classes)}}
        if len(classes) == 2:
            row["log_odds"] = float(weight[1, j] - weight[0, j])
        rows.append(row)
    return rows


def bottleneck_summary(
    model: ConceptBottleneck, splits: Mapping[str, ConceptData], device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Weights, bias, and per held-out split (val, test) the class metrics, concept AUROCs and intervention curve;
    and one row per held-out image: ``id, split, label, predicted, p_<k>`` (class) and ``c_<concept>``."""
    train = splits["train"]
    result: dict[str, Any] = {
        "weights": class_weights(model, train.names, train.class_names),
        "bias": dict(zip(train.class_names, model.classifier.bias.detach().double().cpu().tolist(), strict=True)),
        "splits": {},
    }
    predictions: list[dict[str, Any]] = []
    for name, split in splits.items():
        if name == "train":
            continue
        probabilities, logits = predict(model, split.images, device=device)
        expert, labels = split.concepts.numpy().astype(np.float64), split.labels.numpy()
        scores = concept_aurocs(expert, probabilities)
        result["splits"][name] = {
            "n": len(split),
            "classification": classification_summary(labels, _softmax(torch.from_numpy(logits))),
            "concept_auroc": dict(zip(split.names, scores.tolist(), strict=True)),
            "concept_positives": dict(zip(split.names, np.nansum(expert, axis=0).astype(int).tolist(), strict=True)),
            "intervention": intervention_curve(model, probabilities, expert, labels),
        }
        class_probabilities = _softmax(torch.from_numpy(logits))
        for i, item in enumerate(split.ids):
            predictions.append(
                {
                    "id": item,
                    "split": name,
                    "label": int(labels[i]),
                    "predicted": int(class_probabilities[i].argmax()),
                    **{f"p_{k}": float(v) for k, v in enumerate(class_probabilities[i])},
                    **{f"c_{c}": float(v) for c, v in zip(split.names, probabilities[i], strict=True)},
                }
            )
    return result, predictions


def write_bottleneck_tables(
    folder: Path, summary: Mapping[str, Any], predictions: list[dict[str, Any]], history: list[dict[str, Any]]
) -> None:
    """``weights.csv``, ``concept_scores.csv``, ``intervention.csv``, ``predictions.csv`` (held-out images of the
    last split, test when there is one) and ``metrics.csv`` (training history)."""
    splits = summary["splits"]
    write_text(folder / "weights.csv", rows_to_csv(summary["weights"]))
    concept_rows = [
        {"split": s, "concept": c, "auroc": a, "positives": values["concept_positives"][c], "n": values["n"]}
        for s, values in splits.items()
        for c, a in values["concept_auroc"].items()
    ]
    write_text(folder / "concept_scores.csv", rows_to_csv(concept_rows))
    curve = [{"split": s, **row} for s, values in splits.items() for row in values["intervention"]]
    write_text(folder / "intervention.csv", rows_to_csv(curve))
    last = predictions[-1]["split"] if predictions else None
    write_text(folder / "predictions.csv", rows_to_csv([r for r in predictions if r["split"] == last]))
    if history:
        write_text(folder / "metrics.csv", rows_to_csv(history))
