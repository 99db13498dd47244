"""Faithfulness: does removing what the map calls relevant change the model's output?

Deletion and insertion curves (Petsiuk et al., BMVC 2018), pixel flipping (Bach et al., PLoS ONE 2015),
region perturbation (Samek et al., IEEE TNNLS 2017) and faithfulness correlation (Bhatt et al., IJCAI 2020).

Inputs: ``x`` ``(B, C, *spatial)``, maps ``(B, *spatial)`` or ``(B, 1, *spatial)``, ``target`` (a class index,
one per sample, or ``None`` for the predicted class). A *feature* is a pixel/voxel (all channels together) or,
with ``patch_size > 1``, a patch of the grid that Quantus uses (image padded evenly to a multiple of the patch).
Every perturbed input is built as a tensor and the model runs on chunks sized by the memory budget
``max_memory`` (bytes of activations per model call, counted as for a forward + backward:
:func:`medexplain.explain.budget.inputs_per_call`; ``None``: as much as one forward + backward of the batch, at
least 64 MiB); every score comes from its own input, so results do not depend on the chunking.
:func:`medexplain.metrics.registry.forward_passes` gives the forward passes each image needs. The model is
run as given under ``torch.no_grad()`` (call ``model.eval()`` first); its state is never changed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.budget import inputs_per_call
from medexplain.explain.targets import Target, resolve_target
from medexplain.metrics._inputs import as_float, drop_channel, pearson
from medexplain.metrics.registry import Curve, register_metric
from medexplain.ndimage import gaussian_blur

Baseline = float | str | Tensor
"""What replaces removed features: a value, ``"blur"`` (Gaussian, sigma ``blur_sigma``), ``"mean"`` (per image
and channel) or a tensor shaped like ``x``."""

OUTPUTS = ("probability", "sigmoid", "logit")


def _baseline(x: Tensor, baseline: Baseline, blur_sigma: float) -> Tensor:
    if isinstance(baseline, Tensor):
        if baseline.shape != x.shape:
            raise MedexplainError(f"baseline shape {tuple(baseline.shape)} differs from input {tuple(x.shape)}")
        return baseline.to(x)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x)
    if isinstance(baseline, str):
        raise MedexplainError(f"unknown baseline {baseline!r}; use a number, 'blur', 'mean' or a tensor")
    return torch.full_like(x, float(baseline))


def _model_inputs(maps: Tensor, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    if not isinstance(x, Tensor) or x.ndim < 3:
        raise MedexplainError(f"x must be (B, C, *spatial), got {getattr(x, 'shape', type(x).__name__)}")
    spatial = tuple(x.shape[2:])
    maps = drop_channel(as_float(maps), spatial, "maps")
    if maps.shape[0] != x.shape[0]:
        raise MedexplainError(f"maps batch {maps.shape[0]} differs from input batch {x.shape[0]}")
    return maps.to(x.device), spatial


class _Scorer:
    """Scores ``(N,)`` of each sample's target from the model, on chunks within the memory budget."""

    def __init__(self, model: nn.Module, x: Tensor, target: Target, output: str, max_memory: int | None) -> None:
        if output not in OUTPUTS:
            raise MedexplainError(f"unknown output {output!r}; use one of {', '.join(OUTPUTS)}")
        self.model, self.output = model, output
        self.per_call = inputs_per_call(model, x, max_memory)
        with torch.no_grad():
            logits = torch.cat([model(part) for part in x.split(self.per_call)])
        resolved = resolve_target(logits, target)
        if resolved.score_fn is not None or resolved.indices.shape[1] != 1:
            raise MedexplainError("faithfulness metrics need one class index per sample as target")
        self.classes = resolved.indices[:, 0]
        self.clean = self._pick(logits, self.classes)

    def _pick(self, logits: Tensor, classes: Tensor) -> Tensor:
        if self.output == "probability":
            values = logits.softmax(1)
        else:
            values = logits.sigmoid() if self.output == "sigmoid" else logits
        return values.gather(1, classes[:, None].to(values.device))[:, 0]

    def perturbed(self, count: int, build: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Scores ``(B, count)``: ``build(sample_idx, step_idx)`` returns the perturbed inputs of those pairs."""
        batch = self.classes.shape[0]
        pairs = torch.arange(batch * count, device=self.classes.device)
        scores = []
        with torch.no_grad():
            for chunk in pairs.split(self.per_call):
                samples, steps = chunk // count, chunk % count
                scores.append(self._pick(self.model(build(samples, steps)), self.classes[samples]))
        return torch.cat(scores).view(batch, count)


def feature_ranks(maps: Tensor, patch_size: int = 1, order: str = "morf") -> tuple[Tensor, int]:
    """Order in which features are removed: ``(ranks (B, *spatial) long, number of features)``.

    ``order`` ``"morf"``: most relevant first (rank 0 = largest map value, or largest patch sum); ``"lerf"``:
    least relevant first. With ``patch_size > 1``, every position of a patch shares the patch's rank; the map is
    zero-padded evenly (floor before, ceil after) to a multiple of the patch, as Quantus does.
    """
    if order not in ("morf", "lerf"):
        raise MedexplainError(f"unknown order {order!r}; use 'morf' (most relevant first) or 'lerf'")
    if patch_size < 1:
        raise MedexplainError(f"patch_size must be positive, got {patch_size}")
    batch, *spatial = maps.shape
    pads = [((-n) % patch_size) for n in spatial]
    padding = [p for n in reversed(pads) for p in (n // 2, n - n // 2)]
    padded = F.pad(maps.unsqueeze(1), padding).squeeze(1) if any(pads) else maps
    grid = [n // patch_size for n in padded.shape[1:]]
    sums = padded.reshape(batch, *[v for g in grid for v in (g, patch_size)])
    sums = sums.sum(dim=tuple(range(2, 2 + 2 * len(grid), 2))).flatten(1)
    keys = -sums if order == "morf" else sums
    ranks = torch.empty_like(keys, dtype=torch.long)
    ranks.scatter_(1, keys.argsort(dim=1, stable=True), torch.arange(keys.shape[1], device=keys.device).expand_as(keys))
    ranks = ranks.view(batch, *grid)
    for axis in range(len(grid)):
        ranks = ranks.repeat_interleave(patch_size, dim=1 + axis)
    crop = [slice(None)] + [slice(p // 2, p // 2 + n) for p, n in zip(pads, spatial, strict=True)]
    return ranks[tuple(crop)], keys.shape[1]


def _step_counts(features: int, steps: int, device: torch.device) -> Tensor:
    if steps < 1:
        raise MedexplainError(f"steps must be positive, got {steps}")
    return torch.round(torch.arange(steps + 1, device=device, dtype=torch.float64) * features / steps).long()


def perturbation_curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    mode: str = "deletion",
    steps: int = 20,
    patch_size: int = 1,
    order: str = "morf",
    baseline: Baseline = 0.0,
    blur_sigma: float = 5.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """Model score of the target as features are removed (deletion) or added (insertion), ``(B, steps + 1)``.

    Column ``k`` holds the score after ``round(k * F / steps)`` of the ``F`` features (in ``order``) were
    replaced by the baseline (deletion, starting from ``x``) or copied from ``x`` into the baseline (insertion,
    starting from the baseline). ``steps + 1`` forward passes per image (one of them on the clean
    input), in chunks within ``max_memory`` (module docstring).

    Args:
        model: ``(B, C, *spatial) -> (B, K)`` logits.
        x: ``(B, C, *spatial)`` inputs.
        maps: ``(B, *spatial)`` relevance.
        target: class per sample (see :data:`medexplain.explain.targets.Target`), ``None`` = predicted.
        mode: ``"deletion"`` or ``"insertion"``.
        steps, patch_size, order, baseline, blur_sigma: see the module docstring.
        output: ``"probability"`` (softmax over classes), ``"sigmoid"`` (a multi-label model's probability of the
            target label) or ``"logit"``.
    """
    if mode not in ("deletion", "insertion"):
        raise MedexplainError(f"unknown mode {mode!r}; use 'deletion' or 'insertion'")
    maps, _ = _model_inputs(maps, x)
    ranks, features = feature_ranks(maps, patch_size, order)
    counts = _step_counts(features, steps, x.device)
    # One end of the curve is the clean input, already scored: deletion perturbs steps 1..S, insertion 0..S-1.
    counts = counts[1:] if mode == "deletion" else counts[:-1]
    filler = _baseline(x, baseline, blur_sigma)
    first, second = (filler, x) if mode == "deletion" else (x, filler)
    scorer = _Scorer(model, x, target, output, max_memory)

    def build(samples: Tensor, step: Tensor) -> Tensor:
        changed = ranks[samples] < counts[step].view(-1, *[1] * (ranks.ndim - 1))
        return torch.where(changed.unsqueeze(1), first[samples], second[samples])

    curve = scorer.perturbed(steps, build)
    clean = scorer.clean[:, None]
    return torch.cat([clean, curve] if mode == "deletion" else [curve, clean], dim=1)


def curve_area(curve: Tensor) -> Tensor:
    """Trapezoidal area under ``curve`` (B, S + 1) sampled at evenly spaced fractions of [0, 1]; (B,)."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(1)


@register_metric(
    "deletion-auc", category="faithfulness", higher_is_better=False, needs=("model",),
    curve=Curve("deletion", perturbation_curve), passes=lambda p: p["steps"] + 1,
)
def deletion_auc(
    maps: Tensor,
    *,
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    steps: int = 20,
    patch_size: int = 1,
    order: str = "morf",
    baseline: Baseline = 0.0,
    blur_sigma: float = 5.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """Area under the deletion curve (Petsiuk et al., BMVC 2018); (B,). Lower is better with ``order="morf"``.

    See :func:`perturbation_curve` (``mode="deletion"``) for the arguments; ``steps + 1`` forward passes.
    """
    return curve_area(
        perturbation_curve(
            model,
            x,
            maps,
            target,
            mode="deletion",
            steps=steps,
            patch_size=patch_size,
            order=order,
            baseline=baseline,
            blur_sigma=blur_sigma,
            output=output,
            max_memory=max_memory,
        )
    )


@register_metric(
    "insertion-auc", category="faithfulness", higher_is_better=True, needs=("model",),
    curve=Curve("insertion", perturbation_curve), passes=lambda p: p["steps"] + 1,
)
def insertion_auc(
    maps: Tensor,
    *,
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    steps: int = 20,
    patch_size: int = 1,
    order: str = "morf",
    baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """Area under the insertion curve (Petsiuk et al., BMVC 2018), from a blurred input by default; (B,).

    Higher is better with ``order="morf"``. See :func:`perturbation_curve`; ``steps + 1`` forward passes.
    """
    return curve_area(
        perturbation_curve(
            model,
            x,
            maps,
            target,
            mode="insertion",
            steps=steps,
            patch_size=patch_size,
            order=order,
            baseline=baseline,
            blur_sigma=blur_sigma,
            output=output,
            max_memory=max_memory,
        )
    )


def pixel_flipping_curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    steps: int = 20,
    baseline: Baseline = 0.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """Pixel flipping (Bach et al., PLoS ONE 2015): score as single pixels/voxels, most relevant first, are set
    to ``baseline``; ``(B, steps + 1)``, column 0 the unperturbed score. ``steps + 1`` forward passes."""
    return perturbation_curve(
        model, x, maps, target, mode="deletion", steps=steps, baseline=baseline, output=output, max_memory=max_memory
    )


@register_metric(
    "pixel-flipping", category="faithfulness", higher_is_better=True, needs=("model",),
    passes=lambda p: p["steps"] + 1,
)
def pixel_flipping(
    maps: Tensor,
    *,
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    steps: int = 20,
    baseline: Baseline = 0.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """Area over the pixel-flipping curve (AOPC): mean over steps 1..S of ``score(x) - score(x_k)``; (B,).

    Higher is better: a faithful map makes the score fall fast. See :func:`pixel_flipping_curve`.
    """
    curve = pixel_flipping_curve(
        model, x, maps, target, steps=steps, baseline=baseline, output=output, max_memory=max_memory
    )
    return (curve[:, :1] - curve[:, 1:]).mean(1)


def region_perturbation_curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    patch_size: int = 8,
    regions: int = 100,
    order: str = "morf",
    baseline: Baseline = 0.0,
    blur_sigma: float = 5.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """Region perturbation (Samek et al., IEEE TNNLS 2017) as Quantus's ``RegionPerturbation``; ``(B, regions)``.

    Non-overlapping ``patch_size`` patches (grid as :func:`feature_ranks`) are ranked by their summed
    relevance; column ``k`` is ``score(x) - score(x with the first k + 1 patches set to baseline)``.
    ``regions + 1`` forward passes per image (capped at the number of patches).
    """
    maps, _ = _model_inputs(maps, x)
    ranks, features = feature_ranks(maps, patch_size, order)
    regions = min(regions, features)
    filler = _baseline(x, baseline, blur_sigma)
    scorer = _Scorer(model, x, target, output, max_memory)

    def build(samples: Tensor, step: Tensor) -> Tensor:
        changed = ranks[samples] <= step.view(-1, *[1] * (ranks.ndim - 1))
        return torch.where(changed.unsqueeze(1), filler[samples], x[samples])

    return scorer.clean[:, None] - scorer.perturbed(regions, build)


@register_metric(
    "region-perturbation", category="faithfulness", higher_is_better=True, needs=("model",),
    passes=lambda p: p["regions"] + 1,
)
def region_perturbation(
    maps: Tensor,
    *,
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    patch_size: int = 8,
    regions: int = 100,
    order: str = "morf",
    baseline: Baseline = 0.0,
    output: str = "probability",
    max_memory: int | None = None,
) -> Tensor:
    """AOPC of region perturbation: the mean of :func:`region_perturbation_curve`; (B,), higher is better."""
    return region_perturbation_curve(
        model,
        x,
        maps,
        target,
        patch_size=patch_size,
        regions=regions,
        order=order,
        baseline=baseline,
        output=output,
        max_memory=max_memory,
    ).mean(1)


def random_subsets(features: int, runs: int, size: int, seed: int) -> Tensor:
    """``(runs, size)`` feature indices, each row a uniform subset without replacement (seeded CPU generator).

    The same subsets serve every sample of a batch, so a sample's score does not depend on its batch.
    """
    if not 0 < size <= features:
        raise MedexplainError(f"subset_size must be in 1..{features} (the number of features), got {size}")
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(runs, features, generator=generator).topk(size, dim=1).indices


@register_metric(
    "faithfulness-correlation", category="faithfulness", higher_is_better=True, needs=("model",),
    passes=lambda p: p["runs"] + 1,
)
def faithfulness_correlation(
    maps: Tensor,
    *,
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    runs: int = 100,
    subset_size: int = 224,
    baseline: Baseline = 0.0,
    output: str = "logit",
    seed: int = 0,
    subsets: Tensor | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Faithfulness correlation (Bhatt et al., IJCAI 2020), as Quantus's ``FaithfulnessCorrelation``; (B,).

    For ``runs`` random subsets of ``subset_size`` pixels/voxels: the Pearson correlation between the summed
    relevance of the subset and the drop of the target score when the subset is set to ``baseline``.
    Defaults follow Quantus (100 runs, 224 features, logits). ``runs + 1`` forward passes per image.

    Args:
        seed: seeds the subsets (:func:`random_subsets`, shared by the samples of the batch) unless
            ``subsets`` ``(B, runs, subset_size)`` (indices into the flattened spatial positions) are given,
            e.g. Quantus's per-sample draws.
    """
    maps, spatial = _model_inputs(maps, x)
    flat = maps.flatten(1)
    if subsets is None:
        subsets = random_subsets(flat.shape[1], runs, subset_size, seed).expand(x.shape[0], runs, subset_size)
    subsets = subsets.to(x.device).long()
    if subsets.ndim != 3 or subsets.shape[0] != x.shape[0]:
        raise MedexplainError(f"subsets must be (B, runs, size), got shape {tuple(subsets.shape)}")
    runs = subsets.shape[1]
    filler = _baseline(x, baseline, 5.0)
    scorer = _Scorer(model, x, target, output, max_memory)

    def build(samples: Tensor, run: Tensor) -> Tensor:
        changed = torch.zeros(len(samples), flat.shape[1], dtype=torch.bool, device=x.device)
        changed.scatter_(1, subsets[samples, run], True)
        return torch.where(changed.view(-1, 1, *spatial), filler[samples], x[samples])

    drops = scorer.clean[:, None] - scorer.perturbed(runs, build)
    relevance = flat.gather(1, subsets.flatten(1)).view(subsets.shape).sum(-1)
    return pearson(relevance, drops).to(maps.dtype)
