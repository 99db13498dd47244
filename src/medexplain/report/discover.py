"""Find what a run folder holds: training runs, explanations, evaluations, concept analyses, concept bottlenecks,
simulators.

Each kind is recognised by its marker file; a folder may hold several kinds in sub-folders (the demo does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medexplain.errors import MedexplainError
from medexplain.files import read_json

MAX_DEPTH = 3


@dataclass(frozen=True)
class Component:
    """One recognised part of a run folder: its ``kind``, its folder, and a name to show."""

    kind: str
    path: Path
    name: str


def _json(path: Path) -> dict | None:
    try:
        return read_json(path)
    except MedexplainError:
        return None


def _marks(path: Path, prefix: str) -> bool:
    """``path`` is a marker of ``prefix`` format, or is damaged (so the report says what is wrong with it)."""
    if not path.is_file():
        return False
    value = _json(path)
    return value is None or str(value.get("format", "")).startswith(prefix)


def classify(folder: Path) -> list[str]:
    """The kinds of component whose marker files are in ``folder`` itself."""
    kinds = []
    if _marks(folder / "config.json", "medexplain-run/"):
        kinds.append("train")
    concept_maps = (folder / "concept_maps.json").is_file()  # shown by the concept analysis that wrote them
    if not concept_maps and (_marks(folder / "index.json", "medexplain-explanations/")
                             or (folder / ".progress.json").is_file()):  # fmt: skip
        kinds.append("explanations")  # an unfinished folder is listed, so the report says it is incomplete
    if (folder / "summary.csv").is_file() and (folder / "per_sample.csv").is_file():
        kinds.append("evaluation")
    if (folder / "summary.json").is_file() and (folder / "concepts.csv").is_file():
        kinds.append("concepts")
    if _marks(folder / "bottleneck.json", "medexplain-bottleneck/"):
        kinds.append("bottleneck")
    if _marks(folder / "simulator.json", "medexplain-simulator/"):
        kinds.append("simulator")
    if _marks(folder / "index.json", "medexplain-simulations/"):
        kinds.append("simulation")
    if _marks(folder / "verdict.json", "medexplain-audit/"):
        kinds.append("audit")
    if (folder / "manifest.csv").is_file():
        kinds.append("data")
    return kinds


def discover(run_dir: str | os.PathLike[str]) -> list[Component]:
    """Every component under ``run_dir`` (itself and sub-folders up to :data:`MAX_DEPTH` deep), sorted by path.

    Raises :class:`MedexplainError` when ``run_dir`` is not a folder or holds no medexplain output at all.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise MedexplainError(f"{root}: not a folder")
    found: list[Component] = []
    for folder, subfolders, _files in os.walk(root):
        path = Path(folder)
        depth = len(path.relative_to(root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and depth < MAX_DEPTH)
        name = str(path.relative_to(root)) if path != root else root.name
        found.extend(Component(kind, path, name) for kind in classify(path))
    if not [c for c in found if c.kind != "data"]:
        raise MedexplainError(
            f"{root}: not a medexplain run folder (no training run, explanations, evaluation, concepts or "
            "simulator output found)"
        )
    return found
