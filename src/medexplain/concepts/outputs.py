"""Write a concept analysis to a folder: one CSV and one JSON per table, the table of concepts per class,
a summary and the ROC curve of inconsistency against wrong predictions (the report draws the curves).

The folder appears complete or not at all (written atomically)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medexplain.concepts.analysis import ConceptReport
from medexplain.concepts.tables import plain, rows_to_csv
from medexplain.files import atomic_directory, write_text

TABLES = ("concepts", "influence", "learning_curve", "images")


def roc_rows(roc: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> list[dict[str, object]]:
    """The ROC curve of inconsistency against wrong predictions, one row per layer and operating point."""
    return [
        {"layer": layer, "fpr": float(f), "tpr": float(t), "auroc": float(auroc)}
        for layer, (fpr, tpr, auroc) in roc.items()
        for f, t in zip(fpr, tpr, strict=True)
    ]


def write_report(
    report: ConceptReport,
    out: str | Path,
    *,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``<table>.csv`` and ``<table>.json`` for each table, ``concept_class_table.{csv,json}``,
    ``summary.json`` and ``inconsistency_roc.csv`` into the folder ``out``; ``extra(folder)`` adds more to it
    before it appears (the concept maps, :func:`medexplain.workflows.concept_maps.write_analysis`). Returns ``out``."""
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
        if extra is not None:
            extra(tmp)
    return out
