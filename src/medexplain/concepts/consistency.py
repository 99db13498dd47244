"""Explanation consistency: do the concepts a network detects support the class it predicts?

Wang et al. (SPIE Medical Imaging 2019; European Radiology 2019) list which radiological features support
which diagnosis and observe that "bad explanations often lead to wrong diagnoses". Here the concept-class
table holds +1 (the concept supports the class), -1 (it speaks against it) or 0 (neutral); it is supplied
(CSV or JSON) or learned from the annotations (Fisher's exact test of each concept against each class,
one-vs-rest, Holm-corrected). An explanation for predicted class c is inconsistent when a concept against c
is detected or when c has supporting concepts and none of them is detected:
``inconsistency = max(max_{T[k,c]<0} p_k, 1 - max_{T[k,c]>0} p_k)`` with probe probabilities ``p_k``
(a missing term counts 0), in [0, 1]. With detections (``p_k >= threshold`` as 0/1) in place of probabilities
the same formula gives 0 (consistent) or 1 (inconsistent).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from medexplain.concepts.influence import holm
from medexplain.errors import MedexplainError
from medexplain.files import read_json


@dataclass(frozen=True)
class ConceptClassTable:
    """``values (L, K)`` in {-1, 0, +1}: whether concept l supports (+1) or contradicts (-1) class k."""

    concepts: tuple[str, ...]
    classes: tuple[str, ...]
    values: np.ndarray

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {c: {k: int(self.values[i, j]) for j, k in enumerate(self.classes)} for i, c in enumerate(self.concepts)}

    def restricted_to(self, concepts: list[str], classes: list[str]) -> ConceptClassTable:
        """The table for ``concepts`` x ``classes`` in that order; a concept or class it lacks is an error."""
        for name, have, kind in ((concepts, self.concepts, "concept"), (classes, self.classes, "class")):
            missing = [n for n in name if n not in have]
            if missing:
                raise MedexplainError(f"concept-class table has no {kind} {missing[0]!r}; it has {list(have)}")
        rows = [self.concepts.index(c) for c in concepts]
        cols = [self.classes.index(k) for k in classes]
        return ConceptClassTable(tuple(concepts), tuple(classes), self.values[np.ix_(rows, cols)])


def learn_table(
    concept_labels: np.ndarray,
    class_labels: np.ndarray,
    concepts: list[str],
    classes: list[str],
    alpha: float = 0.05,
) -> ConceptClassTable:
    """Learn the table from annotations ``(N, L)`` (NaN = not annotated) and class labels ``(N,)``.

    Entry (l, k) is the sign of the association of concept l with class k (one-vs-rest) where Fisher's
    exact test is significant at ``alpha`` after Holm correction over all L x K pairs, else 0.
    """
    L, K = len(concepts), len(classes)
    pvalues = np.ones((L, K))
    signs = np.zeros((L, K), dtype=np.int64)
    for i in range(L):
        annotated = ~np.isnan(concept_labels[:, i]) & (class_labels >= 0)
        present = concept_labels[annotated, i] > 0.5
        cls = class_labels[annotated]
        for k in range(K):
            member = cls == k
            table = [
                [np.sum(present & member), np.sum(~present & member)],
                [np.sum(present & ~member), np.sum(~present & ~member)],
            ]
            if member.all() or not member.any():
                continue
            pvalues[i, k] = stats.fisher_exact(table).pvalue
            rate_in, rate_out = present[member].mean(), present[~member].mean()
            signs[i, k] = int(np.sign(rate_in - rate_out))
    significant = holm(pvalues.ravel()).reshape(L, K) < alpha
    return ConceptClassTable(tuple(concepts), tuple(classes), np.where(significant, signs, 0))


def _check_value(value: object, where: str) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if number not in (-1.0, 0.0, 1.0):
        raise MedexplainError(f"{where}: concept-class table values must be -1, 0 or 1, got {value!r}")
    return int(number)


def read_table(path: str | Path) -> ConceptClassTable:
    """Read a table: CSV with a ``concept`` column and one column per class, or JSON ``{concept: {class: v}}``."""
    path = Path(path)
    if not path.is_file():
        raise MedexplainError(f"{path}: concept-class table not found")
    try:
        if path.suffix.lower() == ".json":
            data = read_json(path)
            if not all(isinstance(v, dict) for v in data.values()):
                raise MedexplainError(f"{path}: expected a JSON object {{concept: {{class: -1|0|1}}}}")
            rows = {str(c): {str(k): v for k, v in row.items()} for c, row in data.items()}
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or "concept" not in reader.fieldnames:
                    raise MedexplainError(f"{path}: CSV concept-class table needs a 'concept' column")
                rows = {r["concept"]: {k: v for k, v in r.items() if k != "concept"} for r in reader}
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise MedexplainError(f"{path}: unreadable concept-class table ({error})") from None
    if not rows:
        raise MedexplainError(f"{path}: concept-class table is empty")
    classes = list(next(iter(rows.values())))
    values = np.zeros((len(rows), len(classes)), dtype=np.int64)
    for i, (concept, row) in enumerate(rows.items()):
        if list(row) != classes:
            raise MedexplainError(f"{path}: concept {concept!r} does not list the classes {classes}")
        values[i] = [_check_value(row[k], f"{path}: {concept}/{k}") for k in classes]
    return ConceptClassTable(tuple(rows), tuple(classes), values)


def inconsistency(presence: np.ndarray, predicted: np.ndarray, table: ConceptClassTable) -> np.ndarray:
    """Inconsistency ``(N,)`` in [0, 1] of concept probabilities ``(N, L)`` with predicted classes ``(N,)``."""
    signs = table.values[:, predicted].T  # (N, L)
    against = np.where(signs < 0, presence, 0.0).max(axis=1, initial=0.0)
    best_support = np.where(signs > 0, presence, 0.0).max(axis=1, initial=0.0)
    missing_support = np.where((signs > 0).any(axis=1), 1.0 - best_support, 0.0)
    return np.maximum(against, missing_support)


def wrong_prediction_auroc(score: np.ndarray, wrong: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC with which ``score (N,)`` flags wrong predictions ``(N,)`` bool, and the ROC curve (fpr, tpr).

    NaN (and an empty curve) when every prediction is right or every one is wrong.
    """
    wrong = np.asarray(wrong, dtype=bool)
    if wrong.all() or not wrong.any():
        return math.nan, np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(wrong, score)
    return float(roc_auc_score(wrong, score)), fpr, tpr


def explain_images(
    ids: list[str],
    concepts: list[str],
    presence: np.ndarray,
    influence: np.ndarray,
    threshold: float = 0.5,
) -> list[list[dict[str, float | str]]]:
    """Per image, the detected concepts (probability >= threshold) ranked by influence x presence.

    presence ``(N, L)`` probe probabilities; influence ``(N, L)`` directional derivatives of the predicted
    class logit along each concept direction. Each entry: ``concept, probability, influence, score``.
    """
    ranked = []
    for i in range(len(ids)):
        entries = [
            {
                "concept": concepts[j],
                "probability": float(presence[i, j]),
                "influence": float(influence[i, j]),
                "score": float(influence[i, j] * presence[i, j]),
            }
            for j in range(len(concepts))
            if presence[i, j] >= threshold
        ]
        ranked.append(sorted(entries, key=lambda e: -e["score"]))
    return ranked
