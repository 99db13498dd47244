"""Pooled layer activations and class-logit gradients for concept probes, 2D and 3D through one code path.

One pass over a dataset records, for every chosen layer, the spatially pooled activation of each image
(optionally averaged over seeded augmented copies, as Wang et al. 2019 did) and, for every class logit,
the gradient with respect to that layer summed over space: what the TCAV directional derivative needs
(Kim et al., ICML 2018). Only pooled vectors are kept, so memory grows with ``N x channels``, never with
the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from medexplain.data.sample import collate
from medexplain.errors import MedexplainError
from medexplain.explain.hooks import capture_output, find_module
from medexplain.models.modes import evaluation_mode
from medexplain.progress import progress_bar

POOLS = ("mean", "max")


@dataclass(frozen=True)
class Augmentation:
    """Seeded random copies of an image: flips, small circular shifts and intensity jitter (any spatial dims).

    ``copies`` augmented copies are averaged with the original's activation (0 = no augmentation). Each copy
    of image ``n`` draws from its own generator seeded by ``(seed, n, copy)``, so the result does not depend
    on the batch size or order.
    """

    copies: int = 0
    flip: bool = True
    max_shift: float = 0.05
    intensity_jitter: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0 or not 0 <= self.max_shift < 0.5 or self.intensity_jitter < 0:
            raise MedexplainError(
                f"augmentation needs copies >= 0, 0 <= max_shift < 0.5 and intensity_jitter >= 0, got {self}"
            )

    def apply(self, image: Tensor, index: int, copy: int) -> Tensor:
        """One augmented copy of ``image`` ``(C, *spatial)``."""
        seed = int(np.random.SeedSequence([self.seed, index, copy]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        spatial = image.shape[1:]
        out = image
        if self.flip:
            dims = [d + 1 for d in range(len(spatial)) if torch.rand((), generator=generator) < 0.5]
            out = out.flip(dims) if dims else out
        shifts = [
            int(torch.randint(-int(self.max_shift * s), int(self.max_shift * s) + 1, (), generator=generator))
            for s in spatial
        ]
        out = torch.roll(out, shifts=shifts, dims=list(range(1, len(spatial) + 1)))
        gain, offset = (self.intensity_jitter * (2 * torch.rand(2, generator=generator) - 1)).tolist()
        return out * (1 + gain) + offset * out.abs().amax()


@dataclass
class Activations:
    """What one pass over a dataset recorded.

    features[layer]: ``(N, C * len(pool))`` pooled activations, blocks in the order of ``pool``.
    gradients[layer]: ``(N, K, C)`` d logit_k / d A summed over the spatial positions of the layer output A
        (A has shape ``(C, *spatial)``); the derivative along a spatially uniform shift ``u`` of A is
        ``gradients @ u``. Taken at the un-augmented image.
    logits: ``(N, K)``; labels: ``(N,)`` class labels (-1 if unknown); concepts: ``(N, L)`` concept
    annotations (NaN where an image has none); ids: ``N`` image ids.
    """

    features: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    logits: np.ndarray
    labels: np.ndarray
    concepts: np.ndarray
    ids: list[str]
    pool: tuple[str, ...] = ("mean",)
    channels: dict[str, int] = field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> Activations:
        """The same record restricted to ``rows`` (indices or a boolean mask)."""
        rows = np.asarray(rows)
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        return Activations(
            features={k: v[index] for k, v in self.features.items()},
            gradients={k: v[index] for k, v in self.gradients.items()},
            logits=self.logits[index],
            labels=self.labels[index],
            concepts=self.concepts[index],
            ids=[self.ids[i] for i in index],
            pool=self.pool,
            channels=dict(self.channels),
        )


def pool_activation(output: Tensor, pool: Sequence[str] = ("mean",)) -> Tensor:
    """Pool a layer output ``(B, C, *spatial)`` over space to ``(B, C * len(pool))``; ``(B, C)`` passes through.

    Both pools move by exactly ``u`` when the activation is shifted by the same ``u`` at every position,
    which is what makes a concept direction learned on pooled features a direction in the layer's space.
    """
    unknown = [p for p in pool if p not in POOLS]
    if unknown or not pool:
        raise MedexplainError(f"pooling must be a non-empty subset of {POOLS}, got {list(pool)}")
    b, c, *_ = output.shape
    flat = output.reshape(b, c, -1)
    blocks = [flat.mean(-1) if p == "mean" else flat.amax(-1) for p in pool]
    return torch.cat(blocks, dim=1)


def collect_activations(
    model: nn.Module,
    dataset: Sequence[object],
    layers: Sequence[str],
    *,
    pool: Sequence[str] = ("mean",),
    augmentation: Augmentation | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "activations",
) -> Activations:
    """Record pooled activations and spatially summed class-logit gradients at ``layers`` for every item.

    ``dataset[i]`` gives a :class:`medexplain.data.Sample` (``image (C, *spatial)``, ``label``, ``labels (L,)``
    or None, ``meta["id"]``); images are batched with :func:`medexplain.data.sample.collate`. The model runs
    in evaluation mode; its training flags are restored afterwards and no hook outlives the call.
    """
    if not layers:
        raise MedexplainError("choose at least one layer for the concept analysis")
    if batch_size < 1:
        raise MedexplainError(f"batch size must be positive, got {batch_size}")
    for name in layers:
        find_module(model, name)
    augmentation = augmentation or Augmentation()
    pool = tuple(pool)
    features: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    gradients: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    logits_all: list[np.ndarray] = []
    labels: list[int] = []
    concepts: list[np.ndarray | None] = []
    ids: list[str] = []
    total = len(dataset)
    with ExitStack() as stack:
        stack.enter_context(evaluation_mode(model))
        captures = {name: stack.enter_context(capture_output(model, name)) for name in layers}
        bar = stack.enter_context(progress_bar(progress, transient=True))
        task = bar.add_task(description, total=total)
        for start in range(0, total, batch_size):
            indices = range(start, min(start + batch_size, total))
            batch = collate([dataset[i] for i in indices])
            labels.extend(batch.label.tolist())
            multi = None if batch.labels is None else batch.labels.double().cpu().numpy()
            concepts.extend([None] * len(indices) if multi is None else list(multi))
            ids.extend(str(meta.get("id", i)) for meta, i in zip(batch.meta, indices, strict=True))
            x = batch.image.to(device)
            _record_batch(model, x, layers, captures, pool, features, gradients, logits_all)
            if augmentation.copies:
                _add_augmented(model, x, indices, layers, captures, pool, augmentation, features)
            bar.advance(task, len(indices))
    return Activations(
        features={k: np.concatenate(v) for k, v in features.items()},
        gradients={k: np.concatenate(v) for k, v in gradients.items()},
        logits=np.concatenate(logits_all),
        labels=np.asarray(labels, dtype=np.int64),
        concepts=_stack_concepts(concepts),
        ids=ids,
        pool=pool,
        channels={k: v[0].shape[-1] for k, v in gradients.items()},
    )


def _layer_output(captured: object, name: str) -> Tensor:
    output = getattr(captured, "output", None)
    if not isinstance(output, Tensor) or output.dim() < 2:
        raise MedexplainError(f"layer {name!r} did not produce a (B, C, ...) tensor in the forward pass")
    return output


def _record_batch(model, x, layers, captures, pool, features, gradients, logits_all) -> None:
    with torch.enable_grad():
        logits = model(x.detach().requires_grad_(True))  # a graph even when the weights are frozen
        if logits.dim() != 2:
            raise MedexplainError(f"model output must be (B, K) logits, got shape {tuple(logits.shape)}")
        outputs = [_layer_output(captures[name], name) for name in layers]
        per_class = []
        for k in range(logits.shape[1]):
            grads = torch.autograd.grad(
                logits[:, k].sum(), outputs, retain_graph=k < logits.shape[1] - 1, allow_unused=True
            )
            per_class.append([torch.zeros_like(o) if g is None else g for g, o in zip(grads, outputs, strict=True)])
    for j, (name, output) in enumerate(zip(layers, outputs, strict=True)):
        b, c = output.shape[:2]
        summed = torch.stack([grads[j].reshape(b, c, -1).sum(-1) for grads in per_class], dim=1)
        gradients[name].append(summed.detach().double().cpu().numpy())
        features[name].append(pool_activation(output.detach(), pool).double().cpu().numpy())
    logits_all.append(logits.detach().double().cpu().numpy())


@torch.no_grad()
def _add_augmented(model, x, indices, layers, captures, pool, augmentation, features) -> None:
    """Replace the batch's last pooled features by their mean over the original and the augmented copies."""
    sums = {name: torch.from_numpy(features[name][-1]).clone() for name in layers}
    for copy in range(augmentation.copies):
        augmented = torch.stack([augmentation.apply(img, i, copy) for img, i in zip(x.cpu(), indices, strict=True)])
        model(augmented.to(x.device))
        for name in layers:
            sums[name] += pool_activation(_layer_output(captures[name], name), pool).double().cpu()
    for name in layers:
        features[name][-1] = (sums[name] / (augmentation.copies + 1)).numpy()


def _stack_concepts(concepts: list[np.ndarray | None]) -> np.ndarray:
    width = max((c.shape[0] for c in concepts if c is not None), default=0)
    out = np.full((len(concepts), width), np.nan)
    for i, c in enumerate(concepts):
        if c is not None:
            out[i, : c.shape[0]] = c
    return out
