"""Explanations on disk: ``OUT/index.json`` plus one map file per item and method.

```
OUT/index.json   {"format": "medexplain-explanations/1", "model": ..., "data": ..., "split": ..., "size": ...,
                  "methods": {name: params}, "items": [{"id", "index", "label", "targets": [[k, ...]],
                  "maps": {method: "maps/<method>/<file>"}}]}
OUT/maps/<method>/<file>   float32 .npy (K, *spatial), or float32 .nii.gz (*spatial, K) for 3D maps
OUT/.progress.json         only while a run is unfinished: what it has written so far
```

``index.json`` is written once a run has finished, and lists exactly the methods whose maps are complete: a
folder with an index is complete, whatever happened to later runs. While a run goes on, what it has written is
recorded in ``.progress.json`` (atomically, after every batch), so a killed run continues where it stopped; a run
that fails removes the maps it wrote and leaves the folder as it was. :class:`ExplanationWriter` writes a folder
(:func:`explanation_output` opens one for a run, locked against other processes), :func:`load_explanations` is
the one reader that every consumer (evaluation, the audit, the report) uses.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medexplain.errors import MedexplainError
from medexplain.files import atomic_file, exclusive_folder, read_json, write_text

FORMAT = "medexplain-explanations/1"
INDEX = "index.json"
PROGRESS = ".progress.json"
MAP_FORMATS = ("npy", "nifti")
HEADER_KEYS = ("model", "data", "split", "size")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def map_filename(item_id: str, index: int, map_format: str) -> str:
    """A file name for an item: its id when that is a safe file name, else the id made safe plus the index."""
    safe = _UNSAFE.sub("_", item_id)[:120]
    stem = safe if safe == item_id and safe not in ("", ".", "..") else f"{safe}-{index}"
    return stem + (".nii.gz" if map_format == "nifti" else ".npy")


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, objects their text)."""
    return json.loads(json.dumps(value, default=str))


class ExplanationWriter:
    """Writes maps into ``root`` and keeps track of them; a folder with earlier maps is continued.

    Args:
        root: output folder.
        header: ``{"model", "data", "split", "size"}`` of this run (``size``: the resizing asked for, if any); a
            continued folder must have been written for the same.
        methods: ``{method: params}``; a method already in the folder must have the same parameters.
        map_format: ``"npy"`` or ``"nifti"`` (``.nii.gz``, 3D maps only), float32 either way (float16 maps tie
            at their maximum often enough to bias the pointing game).
    """

    def __init__(
        self, root: str | os.PathLike[str], header: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]],
        map_format: str = "npy",
    ) -> None:  # fmt: skip
        if map_format not in MAP_FORMATS:
            raise MedexplainError(f"unknown `map_format` {map_format!r}; choose one of {', '.join(MAP_FORMATS)}",
                                  parameter="map_format")  # fmt: skip
        self.root = Path(root)
        self.map_format = map_format
        self.header = {key: _plain(header.get(key)) for key in HEADER_KEYS}
        self.methods: dict[str, Any] = {}  # complete methods of the index, then this run's
        self.items: dict[str, dict[str, Any]] = {}
        self.created: list[Path] = []
        progress = self.root / PROGRESS
        self._progress_before = progress.read_bytes() if progress.is_file() else None
        if (self.root / INDEX).is_file():
            previous = load_explanations(self.root)
            self._continue(previous.header, previous.methods, previous.raw_items)
        if self._progress_before is not None:
            unfinished = read_json(progress, format_prefix=FORMAT)
            self._continue(unfinished, unfinished.get("methods", {}), unfinished.get("items", []))
        requested = _plain(methods)
        for name, params in requested.items():
            if name in self.methods and self.methods[name] != params:
                raise MedexplainError(
                    f"{self.root}: method {name!r} was written with other parameters {self.methods[name]}; "
                    "use another output folder"
                )
        self.requested = list(requested)
        self.methods.update(requested)

    def _continue(self, header: Mapping[str, Any], methods: Mapping[str, Any], items: Any) -> None:
        for key in HEADER_KEYS:
            if str(header.get(key)) != str(self.header.get(key)):
                raise MedexplainError(
                    f"{self.root}: holds explanations for {key} {header.get(key)!r}, not {self.header.get(key)!r}; "
                    "use another output folder"
                )
        self.methods.update(methods)
        for item in items:
            known = self.items.setdefault(item["id"], {**item, "maps": {}})
            known["maps"].update(item["maps"])

    def has(self, item_id: str, method: str) -> bool:
        """Whether the map of ``method`` for ``item_id`` is already written."""
        item = self.items.get(item_id)
        return item is not None and method in item["maps"] and (self.root / item["maps"][method]).is_file()

    def write(
        self, item_id: str, index: int, label: int, targets: list[int], method: str, maps: Tensor | np.ndarray
    ) -> None:
        """Write ``maps (K, *spatial)`` of one item atomically and record it (:meth:`checkpoint` saves the record)."""
        array = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
        relative = f"maps/{method}/{map_filename(item_id, index, self.map_format)}"
        path = self.root / relative
        existed = path.exists()
        with atomic_file(path) as tmp:
            if self.map_format == "nifti":
                _write_nifti(tmp, array)
            else:
                with tmp.open("wb") as handle:
                    np.save(handle, array.astype(np.float32), allow_pickle=False)
        if not existed:
            self.created.append(path)
        item = self.items.setdefault(
            item_id, {"id": item_id, "index": int(index), "label": int(label), "targets": [], "maps": {}}
        )
        item["targets"] = [[int(k) for k in targets]]
        item["maps"][method] = relative

    def _document(self, methods: Mapping[str, Any]) -> dict[str, Any]:
        items = sorted(self.items.values(), key=lambda item: item["index"])
        kept = [{**item, "maps": {m: path for m, path in item["maps"].items() if m in methods}} for item in items]
        return {"format": FORMAT, **self.header, "methods": dict(methods), "items": kept}

    def checkpoint(self) -> None:
        """Record what this run has written so far in ``.progress.json`` (atomically)."""
        write_text(self.root / PROGRESS, json.dumps(self._document(self.methods), indent=1))

    def commit(self, size: int) -> None:
        """Finish the run over a dataset of ``size`` items: write ``index.json`` with the methods whose maps are
        complete for every item (atomically) and drop the progress record."""
        if len(self.items) != size:
            raise MedexplainError(f"{self.root}: {len(self.items)} items written, the dataset has {size}")
        complete = {m: p for m, p in self.methods.items() if all(self.has(i, m) for i in self.items)}
        missing = [m for m in self.requested if m not in complete]
        if missing:
            raise MedexplainError(f"{self.root}: maps of {missing[0]!r} are missing for some items")
        write_text(self.root / INDEX, json.dumps(self._document(complete), indent=1))
        (self.root / PROGRESS).unlink(missing_ok=True)

    def rollback(self) -> None:
        """Undo this run: remove the maps it created and restore the progress record it found."""
        for path in self.created:
            path.unlink(missing_ok=True)
        progress = self.root / PROGRESS
        if self._progress_before is None:
            progress.unlink(missing_ok=True)
        else:
            progress.write_bytes(self._progress_before)
        for folder in sorted({p.parent for p in self.created}, reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


@contextmanager
def explanation_output(
    root: str | os.PathLike[str], header: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]],
    map_format: str = "npy",
) -> Iterator[ExplanationWriter]:  # fmt: skip
    """An :class:`ExplanationWriter` for one run, holding ``root`` against other processes.

    The caller writes maps and calls :meth:`~ExplanationWriter.commit` when every item is done. If the block
    raises, the run is undone: the folder is as before (removed if the run created it). A killed process leaves
    its progress record, which the next run continues from.
    """
    folder = Path(root)
    existed = folder.exists()
    with exclusive_folder(folder):
        writer = None
        try:
            writer = ExplanationWriter(folder, header, methods, map_format)
            yield writer
        except Exception:  # an interrupt (Ctrl-C) keeps the progress record, like a kill
            if writer is not None:
                writer.rollback()
            if not existed:
                shutil.rmtree(folder, ignore_errors=True)
            raise


def _write_nifti(path: Path, array: np.ndarray) -> None:
    import nibabel

    if array.ndim != 4:
        raise MedexplainError(f"NIfTI maps need 3D maps (K, D, H, W), got shape {array.shape}")
    image = nibabel.Nifti1Image(np.moveaxis(array.astype(np.float32), 0, -1), np.eye(4))
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6))


@dataclass(frozen=True)
class StoredItem:
    """One explained image: dataset ``index``, stable ``id``, class ``label``, explained ``targets`` (K,) and
    the map file of each method (absolute paths inside the folder)."""

    id: str
    index: int
    label: int
    targets: tuple[int, ...]
    maps: Mapping[str, Path]


@dataclass(frozen=True)
class StoredExplanations:
    """The content of an explanations folder (see module docstring)."""

    root: Path
    header: Mapping[str, Any]
    methods: Mapping[str, Any]
    items: tuple[StoredItem, ...]
    raw_items: tuple[dict[str, Any], ...]

    def load(self, item: StoredItem, method: str) -> Tensor:
        """The maps ``(K, *spatial)`` float32 of ``item`` for ``method``."""
        if method not in item.maps:
            raise MedexplainError(f"{self.root}: item {item.id!r} has no {method!r} map")
        return read_map(item.maps[method])


def read_map(path: Path) -> Tensor:
    """A stored map file as a float32 tensor ``(K, *spatial)`` (never unpickles)."""
    if path.name.endswith(".nii.gz") or path.suffix == ".nii":
        import nibabel

        array = np.moveaxis(np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float32), -1, 0)
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise MedexplainError(f"{path}: not a readable .npy map ({error})") from None
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def load_explanations(root: str | os.PathLike[str]) -> StoredExplanations:
    """Read a complete explanations folder; map paths may not leave the folder.

    A folder whose run has not finished (no ``index.json`` yet) and a folder without items are refused.
    """
    root = Path(root)
    path = root / INDEX
    if not path.is_file():
        if (root / PROGRESS).is_file():
            raise MedexplainError(f"{root}: the explanation run into it has not finished; run it again to complete it")
        raise MedexplainError(f"{path}: no such file (is {root} an explanations folder?)")
    index = read_json(path)
    if index.get("format") != FORMAT:
        raise MedexplainError(f"{path}: not a {FORMAT} index")
    resolved_root = root.resolve()
    items = []
    for raw in index.get("items", []):
        try:
            relative_maps = {str(method): str(relative) for method, relative in raw["maps"].items()}
            targets = tuple(int(k) for k in raw["targets"][0]) if raw["targets"] else ()
            item = (str(raw["id"]), int(raw["index"]), int(raw["label"]), targets)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise MedexplainError(f"{path}: malformed item {raw!r:.80} ({error})") from None
        maps = {}
        for method, relative in relative_maps.items():
            file = (root / relative).resolve()
            if Path(relative).is_absolute() or resolved_root not in file.parents:
                raise MedexplainError(f"{path}: map path {relative!r} leaves the folder")
            maps[method] = file
        items.append(StoredItem(*item, maps))
    if not items or not index.get("methods"):
        raise MedexplainError(f"{path}: holds no explained items; nothing to evaluate or show")
    header = {key: index.get(key) for key in HEADER_KEYS}
    return StoredExplanations(root, header, dict(index.get("methods", {})), tuple(items), tuple(index.get("items", [])))
