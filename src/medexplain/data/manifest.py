"""``manifest.csv``: parse and validate a dataset folder's table of images, labels and masks (no pixel decoding).

Columns (see the project README): ``image`` (required; path relative to the folder), ``split`` (e.g.
train/val/test), ``label`` (non-negative integer class), ``label_<name>`` (0/1 multi-label targets; with
``partial_labels`` an empty cell means "not annotated" and a column with other values is left out),
``mask_<name>`` (binary mask file; an empty cell means an all-zero mask), ``class_name`` (the name of the row's
``label``), ``id`` (unique item id; default: the image file name without extension); every other column is
free metadata carried in ``Sample.meta``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from medexplain.errors import MedexplainError

MANIFEST_NAME = "manifest.csv"
_RESERVED = {"image", "label", "id"}


@dataclass(frozen=True)
class ManifestRow:
    """One validated row: resolved file paths inside the dataset folder, parsed labels, metadata."""

    image: Path
    split: str | None
    label: int
    labels: tuple[float, ...] | None
    masks: dict[str, Path | None]
    meta: dict[str, str]


@dataclass(frozen=True)
class Manifest:
    """All rows of a manifest (every split) and the names derived from its columns."""

    file: Path
    rows: list[ManifestRow]
    label_names: list[str]
    mask_names: list[str]
    class_names: list[str]
    has_split: bool
    label_problems: dict[str, str] = field(default_factory=dict)
    """With ``partial_labels``: ``{name: problem}`` for each ``label_<name>`` column left out (all NaN)."""


def read_manifest(folder: Path, *, partial_labels: bool = False) -> Manifest:
    """Read ``folder/manifest.csv``; any problem raises a one-line :class:`MedexplainError` naming file and line.

    Checked here: the ``image`` column exists, no cell is missing, labels are non-negative integers and
    multi-labels 0/1, a ``class_name`` is consistent per label, ids are unique, and every path stays inside
    ``folder`` (neither absolute nor escaping with ``..``, also through symbolic links). Whether the files
    exist is checked by :func:`check_files` for the rows actually used.

    With ``partial_labels`` (annotations such as concepts, which experts give for some images only) an empty
    ``label_<name>`` cell is NaN, "not annotated", and a column holding anything but 0, 1 or empty does not stop
    the reading: the whole column becomes NaN and ``Manifest.label_problems`` says why, naming the column.
    """
    file = folder / MANIFEST_NAME
    if not file.is_file():
        raise MedexplainError(f"{folder}: not a dataset folder (no {MANIFEST_NAME})")
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise MedexplainError(f"{file}: cannot read the manifest ({error})") from None
    if not table or not any(cell.strip() for cell in table[0]):
        raise MedexplainError(f"{file}: manifest is empty (expected a header row with an 'image' column)")
    header = [cell.strip() for cell in table[0]]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise MedexplainError(f"{file}: duplicate column(s) {', '.join(duplicated)}")
    if "image" not in header:
        raise MedexplainError(f"{file}: missing required column 'image' (columns: {', '.join(header)})")
    label_columns = [name for name in header if name.startswith("label_")]
    mask_columns = [name for name in header if name.startswith("mask_")]
    meta_columns = [name for name in header if name not in _RESERVED and name not in label_columns + mask_columns]
    base = folder.resolve()
    rows: list[ManifestRow] = []
    line_of_id: dict[str, int] = {}
    problems: dict[str, str] = {}
    class_of_label: dict[int, str] = {}
    for line, cells in enumerate(table[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{file}, line {line}"
        if len(cells) != len(header):
            raise MedexplainError(f"{where}: {len(cells)} fields, the header has {len(header)}")
        record = dict(zip(header, (cell.strip() for cell in cells), strict=True))
        image = _inside(base, record["image"], where, "image")
        label = _integer(record["label"], where, "label") if "label" in record else -1
        collect = problems if partial_labels else None
        labels = tuple(_label_value(record[n], where, n, collect) for n in label_columns) if label_columns else None
        masks = {
            name[len("mask_") :]: _inside(base, record[name], where, name) if record[name] else None
            for name in mask_columns
        }
        split = record.get("split")
        if split == "":
            raise MedexplainError(f"{where}: empty 'split' cell")
        item_id = record.get("id") or _stem(image)
        if item_id in line_of_id:
            raise MedexplainError(
                f"{where}: id {item_id!r} already used on line {line_of_id[item_id]} (add a unique 'id' column)"
            )
        line_of_id[item_id] = line
        if "class_name" in record and label >= 0:
            known = class_of_label.setdefault(label, record["class_name"])
            if known != record["class_name"]:
                raise MedexplainError(
                    f"{where}: class_name {record['class_name']!r} for label {label}, earlier rows say {known!r}"
                )
        meta = {"id": item_id, "path": str(image), **{name: record[name] for name in meta_columns}}
        rows.append(ManifestRow(image, split, label, labels, masks, meta))
    if not rows:
        raise MedexplainError(f"{file}: manifest has no rows")
    num_classes = max(row.label for row in rows) + 1
    if problems:
        dropped = [name in problems for name in label_columns]
        rows = [
            replace(row, labels=tuple(math.nan if d else v for d, v in zip(dropped, row.labels, strict=True)))
            for row in rows
        ]
    return Manifest(
        file=file,
        rows=rows,
        label_names=[name[len("label_") :] for name in label_columns],
        mask_names=[name[len("mask_") :] for name in mask_columns],
        class_names=[class_of_label.get(k, str(k)) for k in range(num_classes)],
        has_split="split" in header,
        label_problems={name[len("label_") :]: problem for name, problem in problems.items()},
    )


def select_split(manifest: Manifest, split: str | None) -> list[ManifestRow]:
    """The rows of ``split`` (all rows for ``None``); an unknown split name is an error listing the known ones."""
    if split is None:
        return manifest.rows
    if not manifest.has_split:
        raise MedexplainError(f"{manifest.file}: split {split!r} requested but the manifest has no 'split' column")
    rows = [row for row in manifest.rows if row.split == split]
    if not rows:
        known = ", ".join(sorted({str(row.split) for row in manifest.rows}))
        raise MedexplainError(f"{manifest.file}: no rows with split {split!r} (splits present: {known})")
    return rows


def check_files(manifest: Manifest, rows: list[ManifestRow]) -> None:
    """Every image and mask file named by ``rows`` exists (a cheap ``stat``, no decoding)."""
    for row in rows:
        for path in (row.image, *row.masks.values()):
            if path is not None and not path.is_file():
                raise MedexplainError(f"{manifest.file}: file {path} (row {row.meta['id']!r}) does not exist")


def _inside(base: Path, cell: str, where: str, column: str) -> Path:
    if not cell:
        raise MedexplainError(f"{where}: empty {column!r} cell")
    relative = Path(cell)
    if relative.is_absolute() or relative.drive:
        raise MedexplainError(f"{where}: {column} path {cell!r} is absolute; paths must be relative to the folder")
    resolved = (base / relative).resolve()
    if not resolved.is_relative_to(base):
        raise MedexplainError(f"{where}: {column} path {cell!r} points outside the dataset folder")
    return resolved


def _integer(cell: str, where: str, column: str) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise MedexplainError(f"{where}: {column} {cell!r} is not an integer") from None
    if value < 0:
        raise MedexplainError(f"{where}: {column} {value} is negative")
    return value


def _label_value(cell: str, where: str, column: str, problems: dict[str, str] | None) -> float:
    """A ``label_<name>`` cell: 0 or 1; with ``problems`` (partial labels) empty is NaN and any other value is
    recorded in ``problems[column]`` (the first one found) instead of raising."""
    if problems is None:
        return _binary(cell, where, column)
    if cell in ("0", "1"):
        return float(cell)
    if cell == "":
        return math.nan
    problems.setdefault(column, f"{where}: {column} has the value {cell!r}, not 0, 1 or empty; {column} is left out")
    return math.nan


def _binary(cell: str, where: str, column: str) -> int:
    value = _integer(cell, where, column)
    if value > 1:
        raise MedexplainError(f"{where}: {column} {value} is not 0 or 1")
    return value


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem
