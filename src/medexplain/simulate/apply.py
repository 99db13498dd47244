"""Apply a trained simulator to a dataset: simulated images, fields, Jacobian maps and a summary on disk.

Output folder (written atomically: complete or absent)::

    OUT/index.json         {"format": "medexplain-simulations/1", "direction", "summary", "items": [...]}
    OUT/summary.json       flip rate, logit shift, smoothness, folding rate, localisation AUROC per mask
    OUT/summary.csv        the same numbers, one ``metric,value`` row each
    OUT/items.csv          one row per image
    OUT/images/<id>.npy    (C, *spatial) float32 simulated image, in the classifier's input space
    OUT/displacements/<id>.npy  (D, *spatial) float32 sampling field u: image' = warp(image, u), voxel units
    OUT/jacobians/<id>.npy (1, *spatial) float32 det J of the tissue deformation (< 1 shrinkage, <= 0 folding)

With ``file_format="nifti"`` (3D only) the arrays are ``.nii.gz`` with channels last (dropped when single)
and an identity affine.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medexplain.errors import MedexplainError
from medexplain.files import atomic_directory, csv_text
from medexplain.metrics.localisation import mask_auroc
from medexplain.progress import progress_bar
from medexplain.simulate.jacobian import folding_rate
from medexplain.simulate.losses import disease_logit, frozen, smoothness_loss
from medexplain.simulate.network import Simulation, Simulator

FORMAT = "medexplain-simulations/1"
DIRECTIONS = {"inject": 1, "remove": -1}
FILE_FORMATS = {"npy": ".npy", "nifti": ".nii.gz"}


def parse_direction(name: str) -> int:
    """``"inject" -> +1``, ``"remove" -> -1``; anything else is a one-line error."""
    if name not in DIRECTIONS:
        raise MedexplainError(f"direction {name!r}: must be one of {', '.join(DIRECTIONS)}")
    return DIRECTIONS[name]


def predicted_diseased(outputs: Tensor, disease_class: int = 1) -> Tensor:
    """``(B, K) -> (B,)`` bool: argmax is ``disease_class`` (or the single logit is positive)."""
    if outputs.shape[1] == 1:
        return outputs[:, 0] > 0
    return outputs.argmax(1) == disease_class


def localisation_score(jacobian: Tensor, direction: Tensor) -> Tensor:
    """``-d log det J`` (``(B, 1, *spatial)``): high where tissue shrinks when injecting, grows when removing."""
    view = direction.view(-1, *([1] * (jacobian.dim() - 1)))
    return -view * jacobian.clamp(min=1e-6).log()


@dataclass
class ItemResult:
    """Per-image outcome of a simulation."""

    id: str
    label: int
    logit_before: float
    logit_after: float
    diseased_before: bool
    diseased_after: bool
    smoothness: float
    folding_rate: float
    mean_displacement: float
    localisation_auroc: dict[str, float | None] = field(default_factory=dict)  # None: empty or full mask


def simulate_batch(
    simulator: Simulator, classifier: nn.Module, images: Tensor, direction: int, disease_class: int = 1
) -> tuple[Simulation, Tensor, Tensor]:
    """Simulate ``images (B, C, *spatial)`` in one direction; returns the simulation and outputs before/after."""
    with torch.no_grad(), frozen(classifier):
        simulation = simulator.simulate(images, direction)
        return simulation, classifier(images), classifier(simulation.image)


def item_results(
    simulation: Simulation, jacobian: Tensor, before: Tensor, after: Tensor, direction: int, disease_class: int,
    ids: list[str], labels: list[int], masks: dict[str, Tensor],
) -> list[ItemResult]:
    """Per-image numbers of one simulated batch.

    ``jacobian``: ``simulation.jacobian()``, ``(B, 1, *spatial)``; ``before``/``after``: classifier outputs
    ``(B, K)``; ``masks``: ``{name: (B, 1, *spatial)}`` (may be empty).
    """
    score = localisation_score(jacobian, torch.full((jacobian.shape[0],), float(direction), device=jacobian.device))
    aurocs = {}
    for name, mask in masks.items():
        positive = mask.flatten(1) > 0.5
        valid = positive.any(1) & ~positive.all(1)
        values = torch.full((mask.shape[0],), float("nan"), dtype=torch.float32)
        if bool(valid.any()):
            values[valid.cpu()] = mask_auroc(score[valid, 0], positive[valid].view_as(score[valid, 0])).float().cpu()
        aurocs[name] = values
    logit_before, logit_after = disease_logit(before, disease_class), disease_logit(after, disease_class)
    sick_before, sick_after = predicted_diseased(before, disease_class), predicted_diseased(after, disease_class)
    folding = folding_rate(jacobian)
    return [
        ItemResult(
            id=ids[i],
            label=int(labels[i]),
            logit_before=float(logit_before[i]),
            logit_after=float(logit_after[i]),
            diseased_before=bool(sick_before[i]),
            diseased_after=bool(sick_after[i]),
            smoothness=float(smoothness_loss(simulation.displacement[i : i + 1])),
            folding_rate=float(folding[i]),
            mean_displacement=float(simulation.displacement[i].norm(dim=0).mean()),
            localisation_auroc={
                name: None if math.isnan(float(values[i])) else float(values[i]) for name, values in aurocs.items()
            },
        )
        for i in range(len(ids))
    ]


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def summarise(items: list[ItemResult], direction: int) -> dict[str, float | int | str | None]:
    """Flip rate among the images predicted on the other side, mean logit shift, smoothness, folding, AUROC.

    ``flip_rate``: injecting, the share of images predicted healthy before that are predicted diseased after;
    removing, the reverse. ``logit_shift``: mean ``F(x') - F(x)`` of the disease log-odds over all images.
    ``auroc_<mask>``: mean per-image AUROC of ``-d log det J`` against the mask (images with an empty or full
    mask left out). Undefined values (no eligible image, no usable mask) are ``None``.
    """
    eligible = [item for item in items if item.diseased_before != (direction > 0)]
    flipped = [item for item in eligible if item.diseased_after == (direction > 0)]
    summary: dict[str, float | int | str | None] = {
        "direction": "inject" if direction > 0 else "remove",
        "images": len(items),
        "eligible": len(eligible),
        "flipped": len(flipped),
        "flip_rate": len(flipped) / len(eligible) if eligible else None,
        "logit_shift": _mean(item.logit_after - item.logit_before for item in items),
        "smoothness": _mean(item.smoothness for item in items),
        "folding_rate": _mean(item.folding_rate for item in items),
        "mean_displacement": _mean(item.mean_displacement for item in items),
    }
    for name in sorted({name for item in items for name in item.localisation_auroc}):
        values = [item.localisation_auroc.get(name) for item in items]
        summary[f"auroc_{name}"] = _mean(values)
        summary[f"auroc_{name}_images"] = sum(v is not None for v in values)
    return summary


def _safe_name(identifier: str, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).lstrip(".") or "item"
    unique, counter = name, 1
    while unique in used:
        unique, counter = f"{name}_{counter}", counter + 1
    used.add(unique)
    return unique


def _write_array(path: Path, array: np.ndarray, file_format: str) -> None:
    if file_format == "npy":
        np.save(path, array, allow_pickle=False)
        return
    import nibabel

    volume = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)


def _collate(samples: list) -> dict:
    return {
        "image": torch.stack([s.image for s in samples]),
        "label": [int(s.label) for s in samples],
        "id": [str(s.meta.get("id", "")) for s in samples],
        "masks": {name: torch.stack([s.masks[name] for s in samples]) for name in samples[0].masks},
    }


def check_compatible(simulator: Simulator, dataset: Dataset, source: str) -> None:
    """One-line error when the data's dimensionality or channels differ from the simulator's."""
    dims, channels = getattr(dataset, "spatial_dims", None), getattr(dataset, "in_channels", None)
    config = simulator.config
    if dims is not None and dims != config.spatial_dims:
        raise MedexplainError(f"{source}: {dims}D images, but the simulator was trained on {config.spatial_dims}D")
    if channels is not None and channels != config.in_channels:
        raise MedexplainError(
            f"{source}: {channels}-channel images, but the simulator expects {config.in_channels} channels"
        )


def apply_simulator(
    simulator: Simulator,
    classifier: nn.Module,
    dataset: Dataset,
    direction: str,
    out: str | os.PathLike[str],
    *,
    disease_class: int = 1,
    batch_size: int = 8,
    file_format: str = "npy",
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    source: str = "data",
) -> dict[str, float | int | str | None]:
    """Simulate every ``Sample`` of ``dataset`` in ``direction`` (``"inject"``/``"remove"``) and write ``out``.

    ``simulator`` and ``classifier`` must already be on ``device``; neither is modified. Returns the summary
    (also written to ``summary.json``/``summary.csv``).
    """
    sign = parse_direction(direction)
    if file_format not in FILE_FORMATS:
        raise MedexplainError(f"format {file_format!r}: must be one of {', '.join(FILE_FORMATS)}")
    if file_format == "nifti" and simulator.config.spatial_dims != 3:
        raise MedexplainError("format 'nifti' is for 3D images; use 'npy' for 2D")
    check_compatible(simulator, dataset, source)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    suffix = FILE_FORMATS[file_format]
    items: list[ItemResult] = []
    entries: list[dict] = []
    used: set[str] = set()
    with atomic_directory(out, overwrite=overwrite) as folder, progress_bar(progress) as bar:
        for sub in ("images", "displacements", "jacobians"):
            (folder / sub).mkdir()
        task = bar.add_task(f"simulate {direction}", total=len(dataset))
        for batch in loader:
            simulation, before, after = simulate_batch(
                simulator, classifier, batch["image"].to(device), sign, disease_class
            )
            ids = [identifier or str(len(items) + i) for i, identifier in enumerate(batch["id"])]
            masks = {name: mask.to(device) for name, mask in batch["masks"].items()}
            jacobian = simulation.jacobian()
            results = item_results(simulation, jacobian, before, after, sign, disease_class, ids, batch["label"], masks)
            jacobian = jacobian.cpu().numpy()
            for i, result in enumerate(results):
                name = _safe_name(result.id, used)
                paths = {sub: f"{sub}/{name}{suffix}" for sub in ("images", "displacements", "jacobians")}
                _write_array(folder / paths["images"], simulation.image[i].cpu().numpy(), file_format)
                _write_array(folder / paths["displacements"], simulation.displacement[i].cpu().numpy(), file_format)
                _write_array(folder / paths["jacobians"], jacobian[i], file_format)
                entries.append({**asdict(result), **paths})
            items.extend(results)
            bar.update(task, advance=len(results))
        summary = summarise(items, sign)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        rows = [{"metric": key, "value": "" if value is None else value} for key, value in summary.items()]
        (folder / "summary.csv").write_text(csv_text(rows, ("metric", "value")), encoding="utf-8")
        (folder / "items.csv").write_text(_items_csv(entries), encoding="utf-8")
        index = {"format": FORMAT, "direction": direction, "file_format": file_format, "summary": summary,
                 "items": entries}
        (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return summary


def _items_csv(entries: list[dict]) -> str:
    mask_names = sorted({name for entry in entries for name in entry["localisation_auroc"]})
    header = [key for key in (entries[0] if entries else {}) if key != "localisation_auroc"]
    header += [f"auroc_{name}" for name in mask_names]
    rows = []
    for entry in entries:
        aurocs = entry["localisation_auroc"]
        row = {**entry, **{f"auroc_{n}": "" if aurocs.get(n) is None else aurocs[n] for n in mask_names}}
        rows.append({key: row[key] for key in header})
    return csv_text(rows, header)
