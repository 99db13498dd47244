"""Scores on disk: the folder an evaluation writes (and the report reads).

```
OUT/per_sample.csv   one row per image, method, explained target and metric (ROW_FIELDS)
OUT/summary.csv      per method and metric: mean and 95 % bootstrap interval, with the metric's metadata
OUT/summary.json     {"summary": [...], "chance": {metric: level}, "curves": {method: {mode: [...]}}, ...}
```
The folder appears at once, complete, or not at all.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medexplain.files import atomic_directory, csv_text
from medexplain.metrics.registry import metric_info
from medexplain.metrics.summary import summarise

ROW_FIELDS = ("id", "index", "label", "method", "target", "metric", "score")
SUMMARY_FIELDS = ("method", "metric", "category", "higher_is_better", "n", "excluded", "mean", "ci_low", "ci_high")


def summary_rows(rows: list[dict[str, Any]], *, resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """The bootstrap summary of per-sample ``rows`` per method and metric, with each metric's metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN counts are reported in the "excluded" column
        summary = summarise(rows, resamples=resamples, seed=seed)
    for row in summary:
        info = metric_info(str(row["metric"]))
        row["category"], row["higher_is_better"] = info.category, info.higher_is_better
    return [{key: row[key] for key in SUMMARY_FIELDS} for row in summary]


def write_scores(
    out: str | os.PathLike[str],
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    extra: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``per_sample.csv``, ``summary.csv`` and ``summary.json`` (plus ``extra`` tables) atomically.

    NaN means are written as empty CSV fields and JSON null.
    """
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in summary]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "per_sample.csv").write_text(csv_text(rows, ROW_FIELDS), encoding="utf-8")
        (tmp / "summary.csv").write_text(csv_text(clean, SUMMARY_FIELDS), encoding="utf-8")
        document = {"summary": clean, **(extra or {})}
        (tmp / "summary.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(out)
