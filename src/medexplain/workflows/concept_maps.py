"""A concept analysis on disk with its concept maps: the tables of :func:`medexplain.concepts.write_report` plus
``maps/``, an explanations folder (:mod:`~medexplain.workflows.explanations`; one method ``concept-<name>`` per
concept, targets -1) with ``maps/concept_maps.json`` saying which images were chosen for which concept, with the
probe's probability and the expert's annotation. ``medexplain evaluate`` scores the maps and the report shows them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medexplain.concepts import ConceptMapGallery, ConceptReport, write_report
from medexplain.concepts.tables import plain
from medexplain.files import write_text
from medexplain.workflows.explanations import explanation_output

MAPS_FOLDER = "maps"
GALLERY_FILE = "concept_maps.json"


def write_gallery(gallery: ConceptMapGallery, folder: Path) -> None:
    """Write the maps of ``gallery`` as an explanations folder and ``concept_maps.json`` beside its index."""
    methods = {f"concept-{name}": {"layer": gallery.layer, "concept": name} for name in gallery.concepts}
    with explanation_output(folder, gallery.header, methods) as writer:
        for row, (item_id, index, label) in enumerate(zip(gallery.ids, gallery.indices, gallery.labels, strict=True)):
            for j, name in enumerate(gallery.concepts):
                writer.write(item_id, index, label, [-1], f"concept-{name}", gallery.maps[row, j : j + 1])
        writer.commit(len(gallery.ids))
    document = {"layer": gallery.layer, "concepts": gallery.shown}
    write_text(folder / GALLERY_FILE, json.dumps(plain(document), indent=1))


def write_analysis(report: ConceptReport, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``report`` to ``out`` (atomically) with its concept maps, when it has a gallery, in ``out/maps``."""
    gallery = report.gallery
    extra = None if gallery is None else (lambda folder: write_gallery(gallery, folder / MAPS_FOLDER))
    return write_report(report, out, overwrite=overwrite, extra=extra)
