"""Robustness: how explanations and the classifier change under input noise.

Max- and avg-sensitivity (Yeh et al., NeurIPS 2019; as Quantus's ``MaxSensitivity``/``AvgSensitivity``),
SSIM between clean and noisy maps, and classifier AUROC under Gaussian noise (SIBnet's evaluation,
Mahapatra et al., MedIA 2022). An *explainer* is any callable ``(model, x, target) -> maps`` returning an
:class:`~medexplain.explain.explanation.Explanation` or a tensor ``(N, *spatial)`` / ``(N, 1, *spatial)``, e.g. a
medexplain explainer. Noisy inputs are built as a tensor and explained in chunks sized by the memory budget
``max_memory`` (bytes of activations per explainer call, counted as one forward + backward per input:
:func:`medexplain.explain.budget.inputs_per_call`; ``None``: as much as one forward + backward of the batch, at
least 64 MiB). The noise comes from a seeded CPU generator, one copy after another, so results depend neither on
the device nor on the chunking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.budget import inputs_per_call
from medexplain.explain.explanation import Explanation
from medexplain.explain.targets import Target, explicit_indices, resolve_target
from medexplain.metrics._inputs import as_float, drop_channel, nan_where_undefined
from medexplain.metrics.classification import auroc, multilabel_auroc
from medexplain.metrics.overlap import structural_similarity
from medexplain.metrics.registry import register_metric

ExplainerFn = Callable[[nn.Module, Tensor, Tensor], "Explanation | Tensor"]
NOISE = ("uniform", "gaussian")
SIGMAS = (0.005, 0.01, 0.05, 0.1)


def explain_maps(
    explainer: ExplainerFn, model: nn.Module, x: Tensor, classes: Tensor, per_call: int | None = None
) -> Tensor:
    """Maps ``(N, *spatial)`` of ``explainer`` on ``x`` (N, C, *spatial) for one class per sample.

    With ``per_call``, the explainer sees at most that many inputs at a time.
    """
    if per_call is not None and len(x) > per_call:
        parts = zip(x.split(per_call), classes.split(per_call), strict=True)
        return torch.cat([explain_maps(explainer, model, xs, cs) for xs, cs in parts])
    out = explainer(model, x, classes)
    maps = out.maps if isinstance(out, Explanation) else out
    return drop_channel(as_float(maps.detach(), "explainer maps"), tuple(x.shape[2:]), "explainer maps")


def clean_maps(
    maps: Tensor | None, explainer: ExplainerFn, model: nn.Module, x: Tensor, classes: Tensor, per_call: int
) -> Tensor:
    """The clean explanations ``(B, *spatial)``: ``maps`` validated, or computed by ``explainer`` when None."""
    if maps is None:
        return explain_maps(explainer, model, x, classes, per_call)
    return drop_channel(as_float(maps), tuple(x.shape[2:]), "maps").to(x.device)


def target_classes(model: nn.Module, x: Tensor, target: Target, per_call: int) -> Tensor:
    """``(B,)`` class index per sample resolved on the clean input (``None`` = predicted class); class indices
    given one per sample need no forward pass (the explainer checks their range)."""
    indices = explicit_indices(target, len(x), x.device)
    if indices is not None and indices.shape[1] == 1:
        return indices[:, 0]
    with torch.no_grad():
        resolved = resolve_target(torch.cat([model(part) for part in x.split(per_call)]), target)
    if resolved.score_fn is not None or resolved.indices.shape[1] != 1:
        raise MedexplainError("robustness and sanity metrics need one class index per sample as target")
    return resolved.indices[:, 0]


def _noise(shape: tuple[int, ...], noise: str, scale: float, generator: torch.Generator) -> Tensor:
    if noise == "uniform":
        return (torch.rand(shape, generator=generator) * 2 - 1) * scale
    if noise == "gaussian":
        return torch.randn(shape, generator=generator) * scale
    raise MedexplainError(f"unknown noise {noise!r}; use one of {', '.join(NOISE)}")


def noisy_explanations(
    explainer: ExplainerFn,
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    *,
    samples: int,
    noise: str,
    scale: float,
    seed: int,
    per_call: int,
    score: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``score(maps of noisy copies, indices of their samples)`` for ``samples`` noisy copies per image; (B, samples).

    Copies ``x + noise`` (uniform in [-scale, scale] or Gaussian with std ``scale``, drawn copy by copy, sample
    by sample) are explained ``per_call`` at a time; ``score`` reduces each chunk's maps ``(n, *spatial)`` to
    ``(n,)``.
    """
    if samples < 1:
        raise MedexplainError(f"samples must be positive, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.arange(x.shape[0] * samples, device=x.device)
    results = []
    for chunk in pairs.split(per_call):
        index = chunk // samples
        draws = torch.stack([_noise(tuple(x.shape[1:]), noise, scale, generator) for _ in range(len(chunk))])
        noisy = x[index] + draws.to(x)
        results.append(score(explain_maps(explainer, model, noisy, classes[index]), index))
    return torch.cat(results).view(x.shape[0], samples)


def sensitivity(
    maps: Tensor | None,
    *,
    model: nn.Module,
    x: Tensor,
    explainer: ExplainerFn,
    target: Target = None,
    samples: int = 10,
    noise: str = "uniform",
    radius: float = 0.2,
    norm: str = "l2",
    seed: int = 0,
    max_memory: int | None = None,
) -> Tensor:
    """Relative explanation change ``||a(x) - a(x + e)|| / ||a(x)||`` per noisy copy; ``(B, samples)``.

    Quantus's defaults for the noise (uniform, ``radius`` 0.2) and norms (``"l2"``: Frobenius of the
    flattened map; ``"linf"``: maximum). ``maps`` are the clean explanations (computed when ``None``).
    ``samples`` explainer calls per image (one more when ``maps`` is ``None``). An all-zero clean map has no
    relative change: its row is NaN, with an :class:`~medexplain.metrics._inputs.UndefinedScoreWarning`.
    """
    if norm not in ("l2", "linf"):
        raise MedexplainError(f"unknown norm {norm!r}; use 'l2' or 'linf'")
    per_call = inputs_per_call(model, x, max_memory)
    classes = target_classes(model, x, target, per_call)
    clean = clean_maps(maps, explainer, model, x, classes, per_call).flatten(1)
    order = 2 if norm == "l2" else float("inf")
    scale = torch.linalg.vector_norm(clean, ord=order, dim=1)

    def score(noisy: Tensor, index: Tensor) -> Tensor:
        return torch.linalg.vector_norm(noisy.flatten(1) - clean[index], ord=order, dim=1) / scale[index]

    changes = noisy_explanations(
        explainer,
        model,
        x,
        classes,
        samples=samples,
        noise=noise,
        scale=radius,
        seed=seed,
        per_call=per_call,
        score=score,
    )
    undefined = nan_where_undefined(scale.new_zeros(len(scale)), scale == 0, "sensitivity", "an all-zero clean map")
    return changes + undefined[:, None]


@register_metric(
    "max-sensitivity", category="robustness", higher_is_better=False, needs=("explainer",),
    passes=lambda p: p["samples"],
)
def max_sensitivity(
    maps: Tensor | None,
    *,
    model: nn.Module,
    x: Tensor,
    explainer: ExplainerFn,
    target: Target = None,
    samples: int = 10,
    noise: str = "uniform",
    radius: float = 0.2,
    norm: str = "l2",
    seed: int = 0,
    max_memory: int | None = None,
) -> Tensor:
    """Max-sensitivity (Yeh et al., NeurIPS 2019): the largest relative map change over noisy copies; (B,).

    See :func:`sensitivity` for the arguments (Quantus uses 200 samples; we default to 10).
    """
    return sensitivity(
        maps,
        model=model,
        x=x,
        explainer=explainer,
        target=target,
        samples=samples,
        noise=noise,
        radius=radius,
        norm=norm,
        seed=seed,
        max_memory=max_memory,
    ).amax(1)


@register_metric(
    "avg-sensitivity", category="robustness", higher_is_better=False, needs=("explainer",),
    passes=lambda p: p["samples"],
)
def avg_sensitivity(
    maps: Tensor | None,
    *,
    model: nn.Module,
    x: Tensor,
    explainer: ExplainerFn,
    target: Target = None,
    samples: int = 10,
    noise: str = "uniform",
    radius: float = 0.2,
    norm: str = "l2",
    seed: int = 0,
    max_memory: int | None = None,
) -> Tensor:
    """Avg-sensitivity (Yeh et al., NeurIPS 2019): the mean relative map change over noisy copies; (B,)."""
    return sensitivity(
        maps,
        model=model,
        x=x,
        explainer=explainer,
        target=target,
        samples=samples,
        noise=noise,
        radius=radius,
        norm=norm,
        seed=seed,
        max_memory=max_memory,
    ).mean(1)


def minmax(maps: Tensor) -> Tensor:
    """Each map ``(N, ...)`` rescaled to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low).clamp(min=torch.finfo(flat.dtype).tiny)).view_as(maps)


def map_similarity(a: Tensor, b: Tensor) -> Tensor:
    """SSIM of min-max normalised maps ``(N, *spatial)`` (window shrunk to fit small images); (N,)."""
    window = min(11, *a.shape[1:])
    window -= 1 - window % 2
    return structural_similarity(minmax(a), minmax(b), win_size=window, sigma=1.5 * window / 11)


@register_metric(
    "noise-ssim", category="robustness", higher_is_better=True, needs=("explainer",),
    passes=lambda p: p["samples"],
)
def noise_ssim(
    maps: Tensor | None,
    *,
    model: nn.Module,
    x: Tensor,
    explainer: ExplainerFn,
    target: Target = None,
    samples: int = 5,
    sigma: float = 0.05,
    seed: int = 0,
    max_memory: int | None = None,
) -> Tensor:
    """Mean SSIM between the clean map and maps of ``x`` + Gaussian noise (std ``sigma``), both min-max
    normalised; (B,), 1 = unchanged. ``samples`` explainer calls per image (one more when ``maps`` is None)."""
    per_call = inputs_per_call(model, x, max_memory)
    classes = target_classes(model, x, target, per_call)
    clean = clean_maps(maps, explainer, model, x, classes, per_call)
    scores = noisy_explanations(
        explainer,
        model,
        x,
        classes,
        samples=samples,
        noise="gaussian",
        scale=sigma,
        seed=seed,
        per_call=per_call,
        score=lambda noisy, index: map_similarity(clean[index], noisy),
    )
    return scores.mean(1)


def noisy_scores(
    model: nn.Module,
    x: Tensor,
    *,
    sigmas: Sequence[float] = SIGMAS,
    seed: int = 0,
    clip: tuple[float, float] | None = None,
    multilabel: bool = False,
    max_batch: int = 64,
) -> list[tuple[float, Tensor]]:
    """``(sigma, scores (N, K))`` for the clean input (sigma 0) and each std in ``sigmas``: softmax (or, when
    ``multilabel``, sigmoid) outputs of ``model`` on ``x`` (N, C, *spatial) plus Gaussian noise of that std, clipped
    to ``clip``. The noise comes from a CPU generator seeded with ``seed`` (device-independent)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in (0.0, *sigmas):
        outputs = []
        with torch.no_grad():
            for chunk in x.split(max_batch):
                noisy = chunk + torch.randn(chunk.shape, generator=generator).to(chunk) * sigma
                if clip is not None:
                    noisy = noisy.clamp(*clip)
                logits = model(noisy)
                outputs.append(logits.sigmoid() if multilabel else logits.softmax(1))
        rows.append((float(sigma), torch.cat(outputs)))
    return rows


def auroc_under_noise(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    sigmas: Sequence[float] = SIGMAS,
    seed: int = 0,
    clip: tuple[float, float] | None = None,
    multilabel: bool = False,
    max_batch: int = 64,
) -> list[dict[str, float]]:
    """Classifier AUROC on ``x`` (N, C, *spatial) with added Gaussian noise of each std in ``sigmas``.

    SIBnet's robustness evaluation (images in [0, 1]; sigma 0.005, 0.01, 0.05, 0.1). AUROC of softmax
    probabilities against ``labels`` (N,) (:func:`medexplain.metrics.classification.auroc`: binary, or
    one-vs-rest macro), or of sigmoids against ``labels`` (N, K) when ``multilabel`` (mean over labels), of the
    :func:`noisy_scores`.

    Returns:
        rows ``{"sigma": s, "auroc": a}``, the first for the clean input (sigma 0).
    """
    scored = noisy_scores(model, x, sigmas=sigmas, seed=seed, clip=clip, multilabel=multilabel, max_batch=max_batch)
    rows = []
    for sigma, scores in scored:
        value = float(np.nanmean(multilabel_auroc(labels, scores))) if multilabel else auroc(labels, scores)
        rows.append({"sigma": sigma, "auroc": value})
    return rows
