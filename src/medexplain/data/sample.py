"""One item of a dataset (:class:`Sample`) and a stack of same-size items (:class:`Batch`, :func:`collate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from medexplain.errors import MedexplainError


@dataclass(frozen=True)
class Sample:
    """An image with its targets and ground truth; 2-D and 3-D alike.

    Attributes:
        image: ``(C, *spatial)`` float32, ``spatial`` = ``(H, W)`` or ``(D, H, W)``.
        label: class index, ``-1`` when the dataset has no class label.
        labels: ``(L,)`` float32 multi-label targets in {0, 1} (one per ``label_<name>`` column), or ``None``.
        masks: name -> ``(1, *spatial)`` float32 in {0, 1}, same spatial shape as ``image``.
        meta: ``"id"`` (stable, unique in the dataset), ``"path"``, ``"split"`` and free metadata columns.
    """

    image: Tensor
    label: int = -1
    labels: Tensor | None = None
    masks: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


@dataclass(frozen=True)
class Batch:
    """Samples stacked along a new first axis.

    Attributes:
        image: ``(B, C, *spatial)`` float32.
        label: ``(B,)`` long.
        labels: ``(B, L)`` float32, or ``None`` when the samples have no multi-label targets.
        masks: name -> ``(B, 1, *spatial)`` float32.
        meta: one metadata dict per sample.
    """

    image: Tensor
    label: Tensor
    labels: Tensor | None
    masks: dict[str, Tensor]
    meta: list[dict[str, str]]

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        return Batch(
            image=self.image.to(device),
            label=self.label.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            masks={name: mask.to(device) for name, mask in self.masks.items()},
            meta=self.meta,
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples of identical image shape (use as ``DataLoader(..., collate_fn=collate)``).

    Images of different sizes cannot be stacked: the error names two offending ids and suggests
    :class:`medexplain.data.transforms.Resize`. All samples must carry the same mask names and either all or
    none must have multi-label targets.
    """
    if not samples:
        raise MedexplainError("collate: cannot make a batch of zero samples")
    first = samples[0]
    for sample in samples[1:]:
        if sample.image.shape != first.image.shape:
            raise MedexplainError(
                f"collate: images {_name(first)} {tuple(first.image.shape)} and {_name(sample)} "
                f"{tuple(sample.image.shape)} differ in shape; add transforms.Resize(...) to batch them"
            )
        if sample.masks.keys() != first.masks.keys():
            raise MedexplainError(
                f"collate: {_name(first)} has masks {sorted(first.masks)} "
                f"but {_name(sample)} has {sorted(sample.masks)}"
            )
        if (sample.labels is None) != (first.labels is None):
            raise MedexplainError(f"collate: {_name(first)} and {_name(sample)} differ in having multi-label targets")
    return Batch(
        image=torch.stack([s.image for s in samples]),
        label=torch.tensor([s.label for s in samples], dtype=torch.long),
        labels=None if first.labels is None else torch.stack([s.labels for s in samples]),
        masks={name: torch.stack([s.masks[name] for s in samples]) for name in first.masks},
        meta=[dict(s.meta) for s in samples],
    )


def _name(sample: Sample) -> str:
    return repr(sample.meta.get("id", "?"))
