"""Explanations on disk: ``OUT/index.json`` plus one map file per item and method (format in DATA_API.md).

``ExplanationWriter`` adds maps to a folder, resuming one written before (items already there are skipped,
the index is rewritten atomically after every batch); :func:`load_explanations` is the one reader that every
consumer (``medexplain evaluate``, the report) uses.

```
OUT/index.json   {"format": "medexplain-explanations/1", "model": ..., "data": ..., "split": ...,
                  "methods": {name: params}, "items": [{"id", "index", "label", "targets": [[k, ...]],
                  "maps": {method: "maps/<method>/<file>"}}]}
OUT/maps/<method>/<file>   float16 .npy (K, *spatial), or float32 .nii.gz (*spatial, K) for 3D maps
```
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medexplain.errors import MedexplainError
from medexplain.files import atomic_file, write_text

FORMAT = "medexplain-explanations/1"
INDEX = "index.json"
MAP_FORMATS = ("npy", "nifti")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def map_filename(item_id: str, index: int, map_format: str) -> str:
    """A file name for an item: its id when that is a safe file name, else the id made safe plus the index."""
    safe = _UNSAFE.sub("_", item_id)[:120]
    stem = safe if safe == item_id and safe not in ("", ".", "..") else f"{safe}-{index}"
    return stem + (".nii.gz" if map_format == "nifti" else ".npy")


class ExplanationWriter:
    """Writes maps into ``root`` and keeps its index; reopening a folder continues it.

    Args:
        root: output folder.
        header: ``{"model", "data", "split"}`` of this run; a resumed folder must have been written for the same.
        methods: ``{method: params}``; a method already in the folder must have the same parameters.
        map_format: ``"npy"`` (float16) or ``"nifti"`` (float32 ``.nii.gz``, 3D maps only).
    """

    def __init__(
        self, root: str | os.PathLike[str], header: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]],
        map_format: str = "npy",
    ) -> None:
        if map_format not in MAP_FORMATS:
            raise MedexplainError(f"unknown map format {map_format!r}; choose one of {', '.join(MAP_FORMATS)}")
        self.root = Path(root)
        self.map_format = map_format
        methods = json.loads(json.dumps(methods, default=str))
        self.index: dict[str, Any] = {"format": FORMAT, **json.loads(json.dumps(dict(header), default=str))}
        self.index["methods"] = {}
        self.items: dict[str, dict[str, Any]] = {}
        if (self.root / INDEX).is_file():
            self._resume(header, methods)
        self.index["methods"].update(methods)

    def _resume(self, header: Mapping[str, Any], methods: Mapping[str, Any]) -> None:
        previous = load_explanations(self.root)
        for key in ("model", "data", "split"):
            if str(previous.header.get(key)) != str(header.get(key)):
                raise MedexplainError(
                    f"{self.root}: holds explanations for {key} {previous.header.get(key)!r}, not {header.get(key)!r}; "
                    "use another --out folder"
                )
        for name, params in methods.items():
            if name in previous.methods and previous.methods[name] != params:
                raise MedexplainError(
                    f"{self.root}: method {name!r} was written with other parameters {previous.methods[name]}; "
                    "use another --out folder"
                )
        self.index["methods"] = dict(previous.methods)
        for item in previous.raw_items:
            self.items[item["id"]] = item

    def has(self, item_id: str, method: str) -> bool:
        """Whether the map of ``method`` for ``item_id`` is already written."""
        item = self.items.get(item_id)
        return item is not None and method in item["maps"] and (self.root / item["maps"][method]).is_file()

    def write(
        self, item_id: str, index: int, label: int, targets: list[int], method: str, maps: Tensor | np.ndarray
    ) -> None:
        """Write ``maps (K, *spatial)`` of one item atomically and record it (call :meth:`flush` to save the index)."""
        array = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
        relative = f"maps/{method}/{map_filename(item_id, index, self.map_format)}"
        with atomic_file(self.root / relative) as tmp:
            if self.map_format == "nifti":
                _write_nifti(tmp, array)
            else:
                with tmp.open("wb") as handle:
                    np.save(handle, array.astype(np.float16), allow_pickle=False)
        item = self.items.setdefault(
            item_id, {"id": item_id, "index": int(index), "label": int(label), "targets": [], "maps": {}}
        )
        item["targets"] = [[int(k) for k in targets]]
        item["maps"][method] = relative

    def flush(self) -> None:
        """Rewrite ``index.json`` atomically with every item written so far."""
        items = sorted(self.items.values(), key=lambda item: item["index"])
        write_text(self.root / INDEX, json.dumps({**self.index, "items": items}, indent=1))


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
    """Read an explanations folder written by ``medexplain explain``; map paths may not leave the folder."""
    root = Path(root)
    path = root / INDEX
    if not path.is_file():
        raise MedexplainError(f"{path}: no such file (is {root} written by `medexplain explain`?)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MedexplainError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
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
    header = {key: index.get(key) for key in ("model", "data", "split")}
    return StoredExplanations(root, header, dict(index.get("methods", {})), tuple(items), tuple(index.get("items", [])))
