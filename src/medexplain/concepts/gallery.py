"""A gallery of concept maps for a concept analysis: for each concept, the held-out images where its probe is most
confident, with every concept's map (stored by :mod:`medexplain.workflows.concept_maps` as an explanations folder,
so that evaluation and the report read it like any other)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medexplain.concepts.analysis import ConceptReport
from medexplain.concepts.maps import ConceptMaps
from medexplain.data.sample import collate
from medexplain.errors import MedexplainError


@dataclass(frozen=True)
class ConceptMapGallery:
    """Maps ``(N, L, *spatial)`` of ``N`` chosen held-out images (``ids``, dataset ``indices``, class ``labels``)
    for the ``L`` concepts, which images were chosen for each concept (``shown``) with the probe probability and
    the expert's annotation (NaN: none), and the explanations-folder ``header`` (model run, data, split)."""

    layer: str
    concepts: list[str]
    ids: list[str]
    indices: list[int]
    labels: list[int]
    maps: Tensor
    shown: dict[str, list[dict[str, Any]]]
    header: Mapping[str, Any]


def concept_map_gallery(
    model: nn.Module,
    dataset: Sequence[Any],
    report: ConceptReport,
    header: Mapping[str, Any],
    *,
    layer: str | None = None,
    per_concept: int = 2,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> ConceptMapGallery:
    """Concept maps at ``layer`` (default: the last analysed) for the ``per_concept`` held-out images with the
    highest probe probability of each concept; ``dataset`` is the held-out split the report was computed on."""
    layers = list(report.summary["layers"])
    layer = layer or layers[-1]
    if layer not in layers:
        raise MedexplainError(f"concept maps: layer {layer!r} was not analysed; analysed layers: {layers}")
    names = list(report.summary["concepts"])
    probes = [report.probes[(layer, name)] for name in names]
    pools = len(report.summary["settings"]["pool"])
    mapper = ConceptMaps.from_probes(probes, layer, probes[0].raw_weights.size // pools)
    rows = [r for r in report.images if r["layer"] == layer]
    chosen: dict[str, list[int]] = {}
    for name in names:
        probability = np.array([r[f"p_{name}"] for r in rows])
        chosen[name] = [int(i) for i in np.argsort(-probability, kind="stable")[:per_concept]]
    indices = sorted({i for picks in chosen.values() for i in picks})
    samples = [dataset[i] for i in indices]
    maps = []
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size])
        maps.append(mapper(model, batch.image.to(device)).maps.detach().float().cpu())
    column = {name: j for j, name in enumerate(names)}
    shown = {
        name: [
            {
                "id": rows[i]["id"],
                "probability": float(rows[i][f"p_{name}"]),
                "annotated": _annotation(samples[indices.index(i)], column[name]),
            }
            for i in picks
        ]
        for name, picks in chosen.items()
    }
    return ConceptMapGallery(
        layer=layer,
        concepts=names,
        ids=[str(s.meta.get("id", i)) for s, i in zip(samples, indices, strict=True)],
        indices=indices,
        labels=[int(s.label) for s in samples],
        maps=torch.cat(maps) if maps else torch.zeros(0),
        shown=shown,
        header=dict(header),
    )


def _annotation(sample: Any, column: int) -> float:
    labels = getattr(sample, "labels", None)
    return float(labels[column]) if labels is not None and column < len(labels) else float("nan")
