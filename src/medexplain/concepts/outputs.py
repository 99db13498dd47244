"""Write a concept analysis to a folder: one CSV and one JSON per table, the table of concepts per class,
a summary and the ROC curve of inconsistency against wrong predictions (the report draws the curves).

The folder appears complete or not at all (written atomically)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from medexplain.concepts.analysis import ConceptReport
from medexplain.files import atomic_directory, csv_text, write_text

TABLES = ("concepts", "influence", "learning_curve", "images")


def plain(value: object) -> object:
    """JSON-safe value: NaN and infinities become null, numpy scalars and arrays plain Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: object) -> object:
    if isinstance(value, list):  # ranked detected concepts of one image
        return "; ".join(f"{e['concept']} (p={e['probability']:.2f}, d={e['influence']:+.3g})" for e in value)
    value = plain(value)
    return "" if value is None else value


def rows_to_csv(rows: list[dict[str, object]]) -> str:
    """CSV text of flat rows (columns in first-seen order); lists of detected concepts become one cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return csv_text([{k: _cell(row.get(k)) for k in columns} for row in rows], columns)


def roc_rows(roc: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> list[dict[str, object]]:
    """The ROC curve of inconsistency against wrong predictions, one row per layer and operating point."""
    return [
        {"layer": layer, "fpr": float(f), "tpr": float(t), "auroc": float(auroc)}
        for layer, (fpr, tpr, auroc) in roc.items()
        for f, t in zip(fpr, tpr, strict=True)
    ]


def write_report(report: ConceptReport, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``<table>.csv`` and ``<table>.json`` for each table, ``concept_class_table.{csv,json}``,
    ``summary.json`` and ``inconsistency_roc.csv`` into the folder ``out``; returns it."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for name in TABLES:
            rows = getattr(report, name)
            write_text(tmp / f"{name}.csv", rows_to_csv(rows))
            write_text(tmp / f"{name}.json", json.dumps(plain(rows), indent=1))
        table = report.table.to_dict()
        write_text(tmp / "concept_class_table.json", json.dumps(table, indent=1))
        write_text(tmp / "concept_class_table.csv", rows_to_csv([{"concept": c, **row} for c, row in table.items()]))
        write_text(tmp / "summary.json", json.dumps(plain(report.summary), indent=1))
        write_text(tmp / "inconsistency_roc.csv", rows_to_csv(roc_rows(report.roc)))
    return out
