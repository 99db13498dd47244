"""Concept analysis of a trained run folder on a dataset: what ``medexplain concepts`` and the benchmarks call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medexplain.concepts.analysis import ConceptReport, ConceptSettings, analyse
from medexplain.concepts.consistency import ConceptClassTable, read_table
from medexplain.concepts.gallery import concept_map_gallery


def analyse_run(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    concepts: Sequence[str] | str = "all",
    train_split: str = "train",
    held_out_split: str = "test",
    settings: ConceptSettings | None = None,
    table: str | os.PathLike[str] | ConceptClassTable | None = None,
    maps_per_concept: int = 0,
    maps_layer: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> ConceptReport:
    """Load the model of ``run_dir`` (with its preprocessing) and analyse concepts = the ``label_<name>`` columns
    (empty cells: not annotated; a column with other values is left out, with the reason, see ``analyse``).

    Probes and CAVs are fit on ``train_split``; everything else is reported on ``held_out_split``. ``table`` is
    a concept-class table (or a CSV/JSON path to one); by default it is learned from the training annotations.
    ``maps_per_concept`` > 0 adds concept maps (at ``maps_layer``, default the last layer analysed) of the held-out
    images where each concept's probe is most confident (``ConceptReport.gallery``).
    """
    from medexplain.models import load_run, run_dataset

    model, config, train = load_run(run_dir, data, train_split, device=device, partial_labels=True)
    held_out = run_dataset(config, data, held_out_split, partial_labels=True)
    class_names = config.get("class_names") or train.class_names
    if table is not None and not isinstance(table, ConceptClassTable):
        table = read_table(table)
    report = analyse(
        model,
        train,
        held_out,
        train.label_names,
        class_names,
        concepts=concepts,
        settings=settings or ConceptSettings(),
        table=table,
        problems=train.label_problems,
        device=device,
        progress=progress,
    )
    if maps_per_concept > 0:
        header = {"model": str(Path(run_dir).resolve()), "data": str(Path(data).resolve()), "split": held_out_split}
        report.gallery = concept_map_gallery(
            model, held_out, report, header, layer=maps_layer, per_concept=maps_per_concept, device=device
        )
    return report
