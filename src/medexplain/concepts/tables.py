"""Result tables as CSV and JSON: flat rows with NaN written as empty cells / null."""

from __future__ import annotations

import math

import numpy as np

from medexplain.files import csv_text


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
