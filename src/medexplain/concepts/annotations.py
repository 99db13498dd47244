"""Concept annotations of a dataset: the ``label_<name>`` columns (or a chosen list) as 0/1/NaN, checked per concept.

Experts annotate concepts for some images and some concepts only, and a column can be unusable (values other
than 0/1/empty, one value only on the training split, too few examples of the rarer value): such a concept is
left out with a message that names it, and the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from medexplain.concepts.probes import binary_targets, check_trainable
from medexplain.data import load_dataset
from medexplain.data.sample import collate
from medexplain.data.transforms import Transform
from medexplain.errors import MedexplainError


def select_concepts(requested: Sequence[str] | str, available: Sequence[str]) -> list[int]:
    """Indices of the requested concepts (``"all"``, or names with or without the ``label_`` prefix)."""
    if not available:
        raise MedexplainError("the dataset has no label_<name> columns to use as concepts")
    if isinstance(requested, str):
        requested = list(available) if requested.strip() == "all" else [r for r in requested.split(",") if r.strip()]
    indices = []
    for name in requested:
        bare = name.strip().removeprefix("label_")
        if bare not in available:
            raise MedexplainError(f"concept {name!r} is not a label column of the dataset; it has {list(available)}")
        indices.append(list(available).index(bare))
    if not indices:
        raise MedexplainError("no concepts chosen")
    return indices


def usable_concepts(
    values: np.ndarray,
    names: Sequence[str],
    chosen: Sequence[int],
    min_each: int,
    problems: Mapping[str, str] | None = None,
) -> tuple[list[int], dict[str, str]]:
    """The chosen concept columns of training annotations ``values (N, L)`` (NaN = none) a model can learn.

    A concept is left out, with the reason naming it, when its column was unreadable (``problems``, from
    ``ImageDataset.label_problems``), when all its annotated training examples have one value, or when the rarer
    value has fewer than ``min_each`` examples. Returns ``(kept indices, {name: reason})``; none kept is an error.
    """
    keep, skipped = [], {}
    for i in chosen:
        name = names[i]
        try:
            if problems and name in problems:
                raise MedexplainError(f"concept {name!r}: {problems[name]}")
            check_trainable(binary_targets(values[:, i], name)[1], name, min_each)
            keep.append(i)
        except MedexplainError as error:
            skipped[name] = str(error)
    if not keep:
        raise MedexplainError(f"no concept can be used: {next(iter(skipped.values()))}")
    return keep, skipped


@dataclass(frozen=True)
class ConceptData:
    """One split in memory: ``images (N, C, *spatial)``, class ``labels (N,)`` (-1 unknown), concept annotations
    ``concepts (N, L)`` float (0/1, NaN where not annotated), ``ids`` and the concept ``names`` (``L``)."""

    images: Tensor
    labels: Tensor
    concepts: Tensor
    ids: list[str]
    names: list[str]
    class_names: list[str]
    problems: Mapping[str, str]

    def __len__(self) -> int:
        return len(self.ids)

    def columns(self, indices: Sequence[int]) -> ConceptData:
        """The same split with only the concepts ``indices``, in that order."""
        index = list(indices)
        return ConceptData(
            self.images,
            self.labels,
            self.concepts[:, index],
            self.ids,
            [self.names[i] for i in index],
            self.class_names,
            {n: p for n, p in self.problems.items() if n in {self.names[i] for i in index}},
        )


def read_concept_data(data: str | os.PathLike[str], split: str, transform: Transform | None = None) -> ConceptData:
    """Every image of ``split`` of ``data`` (after ``transform``) with its class label and concept annotations.

    Concept columns are read with ``partial_labels``: empty cells are NaN, an unreadable column is all NaN and
    explained in ``ConceptData.problems``.
    """
    dataset = load_dataset(data, split, transform, partial_labels=True)
    if not dataset.label_names:
        raise MedexplainError(f"{data}: the dataset has no label_<name> columns to use as concepts")
    batch = collate([dataset[i] for i in range(len(dataset))])
    return ConceptData(
        images=batch.image,
        labels=batch.label,
        concepts=batch.labels.to(torch.float32),
        ids=[str(meta.get("id", i)) for i, meta in enumerate(batch.meta)],
        names=list(dataset.label_names),
        class_names=list(dataset.class_names),
        problems=dict(dataset.label_problems),
    )
