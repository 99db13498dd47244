"""Write a concept analysis to a folder: one CSV and one JSON per table, the table of concepts per class,
a summary, the ROC curve of inconsistency against wrong predictions and the probes' learning curves.

The folder appears complete or not at all (written atomically)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from medexplain.concepts.analysis import ConceptReport
from medexplain.files import atomic_directory, csv_text, write_bytes, write_text
from medexplain.report.figures import line_png

TABLES = ("concepts", "influence", "learning_curve", "images")


def _plain(value: object) -> object:
    """JSON-safe value: NaN and infinities become null, numpy scalars and arrays plain Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: object) -> object:
    if isinstance(value, list):  # ranked detected concepts of one image
        return "; ".join(f"{e['concept']} (p={e['probability']:.2f}, d={e['influence']:+.3g})" for e in value)
    value = _plain(value)
    return "" if value is None else value


def rows_to_csv(rows: list[dict[str, object]]) -> str:
    """CSV text of flat rows (columns in first-seen order); lists of detected concepts become one cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return csv_text([{k: _cell(row.get(k)) for k in columns} for row in rows], columns)


def roc_png(roc: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curves (one per layer) of inconsistency as a detector of wrong predictions."""
    series = {f"{layer} (AUROC {auroc:.3f})": (fpr, tpr) for layer, (fpr, tpr, auroc) in roc.items() if len(fpr)}
    series["chance"] = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    return line_png(
        series,
        "false positive rate (right predictions flagged)",
        "true positive rate (wrong predictions flagged)",
        "Inconsistent explanations vs wrong predictions",
    )


def learning_curve_png(rows: list[dict[str, object]]) -> bytes:
    """Mean held-out probe AUROC against the number of annotated training examples, one line per concept."""
    series = {}
    for layer, concept in dict.fromkeys((r["layer"], r["concept"]) for r in rows):
        mine = [r for r in rows if r["layer"] == layer and r["concept"] == concept]
        sizes = sorted({int(r["size"]) for r in mine})
        means = [np.mean([r["auroc"] for r in mine if r["size"] == n]) for n in sizes]
        series[f"{concept} ({layer})"] = (np.array(sizes), np.array(means))
    return line_png(series, "annotated training examples", "held-out probe AUROC", "Concept probe learning curves")


def write_report(report: ConceptReport, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``<table>.csv`` and ``<table>.json`` for each table, ``concept_class_table.{csv,json}``,
    ``summary.json``, ``inconsistency_roc.png`` and ``learning_curve.png`` into the folder ``out``; returns it."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for name in TABLES:
            rows = getattr(report, name)
            write_text(tmp / f"{name}.csv", rows_to_csv(rows))
            write_text(tmp / f"{name}.json", json.dumps(_plain(rows), indent=1))
        table = report.table.to_dict()
        write_text(tmp / "concept_class_table.json", json.dumps(table, indent=1))
        write_text(tmp / "concept_class_table.csv", rows_to_csv([{"concept": c, **row} for c, row in table.items()]))
        write_text(tmp / "summary.json", json.dumps(_plain(report.summary), indent=1))
        write_bytes(tmp / "inconsistency_roc.png", roc_png(report.roc))
        write_bytes(tmp / "learning_curve.png", learning_curve_png(report.learning_curve))
    return out
