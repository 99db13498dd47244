"""medexplain.metrics against Quantus and MONAI: same inputs, same numbers, time as ratios, in one run.

    .venv/bin/python benchmarks/metrics.py [--images 16] [--size 32] [--threads 1]

Model-free metrics (localisation, overlap, complexity) run on float32 2D maps (``--images`` x 224 x 224) and
3D maps (4 x 64^3). Model-bound metrics run a ResNet-18 (``create_model("resnet18")``, 1 input channel) on
``--images`` x 1 x ``--size``^2 inputs with saliency maps. Their *floor* is the number of model evaluations
per image (``medexplain.metrics.forward_passes``) done as plain batched calls (forward passes, or saliency calls
for robustness/sanity, in chunks of as many inputs as the metrics' default memory budget sends per call,
``medexplain.explain.budget.inputs_per_call``), timed right after medexplain so both see the same machine
load. Times are the best CPU seconds of this process over the repeats (medexplain and the reference called
alternately). Columns: speed-up = reference time / medexplain time; max abs diff = largest score
difference.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import _references  # noqa: F401  (torchvision stub for Quantus)
from medexplain import metrics
from medexplain.explain import create_explainer
from medexplain.explain.budget import inputs_per_call
from medexplain.metrics.sanity import parameter_layers
from medexplain.models import create_model

warnings.filterwarnings("ignore")
import quantus  # noqa: E402
from monai.metrics import SSIMMetric, compute_dice, compute_hausdorff_distance, compute_iou  # noqa: E402

ROWS: list[dict[str, object]] = []


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Best CPU time of this process (all its threads) over ``repeats`` calls, and the last result.

    CPU seconds rather than wall seconds: the machine is shared, and other jobs' load stretches wall time.
    """
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def interleaved(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[float, ...]:
    """Best CPU times of ``ours`` and ``theirs`` called alternately ``repeats`` times, and both last results."""
    ours_t, theirs_t, ours_result, theirs_result = float("inf"), float("inf"), None, None
    for _ in range(repeats):
        t, theirs_result = timed(theirs)
        theirs_t = min(theirs_t, t)
        t, ours_result = timed(ours)
        ours_t = min(ours_t, t)
    return ours_t, theirs_t, ours_result, theirs_result


def as_numpy(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def record(
    metric: str,
    case: str,
    ours: float,
    reference: str,
    theirs: float | None,
    diff: float | None,
    passes: int | None = None,
    floor: float | None = None,
) -> None:
    ROWS.append(
        {
            "metric": metric,
            "case": case,
            "ours": ours,
            "reference": reference,
            "theirs": theirs,
            "diff": diff,
            "passes": passes,
            "floor": floor,
        }
    )
    speed = f"{theirs / ours:7.1f}x" if theirs else "      -"
    print(f"  {metric:26s} {case:10s} ours {ours:8.3f}s  {reference:24s} {theirs or 0:8.3f}s  {speed}", flush=True)


def blobs(shape: tuple[int, ...], seed: int, level: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pool = getattr(F, f"avg_pool{len(shape) - 1}d")
    return pool(torch.rand(shape, generator=g)[:, None], 9, 1, 4)[:, 0] > level


def model_free(shape: tuple[int, ...], case: str, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    pool = getattr(F, f"avg_pool{len(shape) - 1}d")
    maps = pool(torch.rand(shape, generator=g)[:, None], 7, 1, 3)[:, 0]  # float32, as maps read from disk
    mask = blobs(shape, 1)
    x = torch.rand(shape[0], 1, *shape[1:], generator=g).numpy()
    kwargs = {
        "model": None,
        "x_batch": x,
        "y_batch": np.zeros(len(x), dtype=int),
        "a_batch": maps[:, None].numpy(),
        "s_batch": mask[:, None].double().numpy(),
        "channel_first": True,
    }
    localisation = [
        ("pointing-game", "PointingGame", False),
        ("relevance-mass", "RelevanceMassAccuracy", False),
        ("relevance-rank", "RelevanceRankAccuracy", False),
        ("mask-auroc", "AUC", False),
        ("gini", "Sparseness", True),
        ("entropy", "Complexity", True),
    ]
    for name, quantus_name, absolute in localisation:
        ours_fn = metrics.get_metric(name)
        args = (maps,) if metrics.metric_info(name).category == "complexity" else (maps, mask)
        q = getattr(quantus, quantus_name)(normalise=False, abs=absolute, disable_warnings=True)
        ours_t, theirs_t, ours, theirs = interleaved(lambda f=ours_fn, a=args: f(*a), lambda q=q: q(**kwargs), repeats)
        record(
            name,
            case,
            ours_t,
            f"quantus.{quantus_name}",
            theirs_t,
            float(np.nanmax(np.abs(as_numpy(ours) - as_numpy(theirs)))),
        )
    binary = metrics.binarise(maps, "top-k", fraction=0.3)  # both libraries get these boolean masks
    spatial_dims = len(shape) - 1

    def monai_inputs() -> tuple[torch.Tensor, torch.Tensor]:
        return binary[:, None].float(), mask[:, None].float()  # MONAI takes one-hot float (B, C, *spatial)

    monai = [
        (
            "hd95",
            lambda: compute_hausdorff_distance(*monai_inputs(), include_background=True, percentile=95),
            lambda: metrics.hausdorff_distance(binary, mask),
            "compute_hausdorff(95)",
        ),
        (
            "dice",
            lambda: compute_dice(*monai_inputs(), include_background=True),
            lambda: metrics.dice_coefficient(binary, mask),
            "compute_dice",
        ),
        (
            "iou",
            lambda: compute_iou(*monai_inputs(), include_background=True),
            lambda: metrics.iou_score(binary, mask),
            "compute_iou",
        ),
        (
            "ssim",
            lambda: SSIMMetric(spatial_dims=spatial_dims)(*monai_inputs()),
            lambda: metrics.structural_similarity(binary.float(), mask.float()),
            "SSIMMetric",
        ),
    ]
    for name, theirs_fn, ours_fn, label in monai:
        ours_t, theirs_t, ours, theirs = interleaved(ours_fn, theirs_fn, repeats)
        record(
            name, case, ours_t, f"monai.{label}", theirs_t, float(np.abs(as_numpy(ours) - as_numpy(theirs)[:, 0]).max())
        )


def explain_numpy(explainer):
    """A Quantus ``explain_func`` running a medexplain explainer."""

    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        return explainer(model, x, torch.as_tensor(np.asarray(targets))).maps.detach().numpy()

    return explain


def forward_floor(model, count: int, shape: tuple[int, ...], chunk: int) -> Callable[[], None]:
    """``count`` forward passes on inputs of ``shape``, in chunks of ``chunk``: the cost a metric cannot beat."""
    inputs = torch.rand(min(count, chunk), *shape)

    def run() -> None:
        with torch.no_grad():
            for start in range(0, count, chunk):
                model(inputs[: min(chunk, count - start)])

    return run


def explain_floor(explainer, model, count: int, shape: tuple[int, ...], chunk: int) -> Callable[[], None]:
    """``count`` explanations of inputs of ``shape`` in chunks of ``chunk``."""
    inputs = torch.rand(min(count, chunk), *shape)
    target = torch.zeros(len(inputs), dtype=torch.long)

    def run() -> None:
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            explainer(model, inputs[:size], target[:size])

    return run


def compare(
    name: str,
    case: str,
    ours: Callable[[], object],
    floor: Callable[[], None],
    passes: int,
    reference: str,
    theirs: Callable[[], object] | None,
    diff: Callable[[object, object], float | None],
    repeats: int,
) -> tuple[object, object]:
    """Time medexplain, its floor (interleaved, so both see the same machine load) and the reference."""
    ours_t, floor_t, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        t, result = timed(ours)
        ours_t = min(ours_t, t)
        floor_t = min(floor_t, timed(floor)[0])
    theirs_t, reference_result = timed(theirs) if theirs is not None else (None, None)
    score_diff = diff(result, reference_result) if theirs is not None else None
    record(name, case, ours_t, reference, theirs_t, score_diff, passes, floor_t)
    return result, reference_result


def model_bound(images: int, size: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", in_channels=1, num_classes=2, spatial_dims=2).eval()
    x = torch.rand(images, 1, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    saliency = create_explainer("saliency")
    maps = saliency(model, x, y).maps[:, 0].detach()
    shape = (1, size, size)
    kwargs = {
        "model": model,
        "x_batch": x.numpy(),
        "y_batch": y.numpy(),
        "a_batch": maps[:, None].numpy(),
        "device": "cpu",
        "channel_first": True,
    }
    case = f"{images}x{size}^2"
    per_call = inputs_per_call(model, x)  # inputs per model call of the metrics at their default memory budget

    def max_diff(ours, theirs) -> float:
        return float(np.abs(as_numpy(ours) - as_numpy(theirs)).max())

    # faithfulness correlation at Quantus's defaults (100 runs of 224 pixels), on Quantus's own subsets
    runs, subset = 100, 224
    np.random.seed(7)
    subsets = np.stack(
        [np.stack([np.random.choice(size * size, subset, replace=False) for _ in range(images)]) for _ in range(runs)],
        1,
    )
    passes = metrics.forward_passes("faithfulness-correlation", runs=runs)
    correlation = quantus.FaithfulnessCorrelation(
        nr_runs=runs,
        subset_size=subset,
        perturb_baseline=0.0,
        normalise=False,
        return_aggregate=False,
        disable_warnings=True,
    )

    def quantus_correlation():
        np.random.seed(7)
        return correlation(softmax=False, **kwargs)

    compare(
        "faithfulness-correlation",
        case,
        lambda: metrics.faithfulness_correlation(
            maps, model=model, x=x, target=y, subsets=torch.from_numpy(subsets)
        ),
        forward_floor(model, passes * images, shape, per_call),
        passes,
        "quantus.FaithfulnessCorr.",
        quantus_correlation,
        max_diff,
        repeats,
    )

    regions = min(100, (size // 8) ** 2)
    passes = metrics.forward_passes("region-perturbation", regions=regions)
    region = quantus.RegionPerturbation(
        patch_size=8, regions_evaluation=regions, perturb_baseline=0.0, normalise=False, disable_warnings=True
    )
    compare(
        "region-perturbation",
        case,
        lambda: metrics.region_perturbation_curve(
            model, x, maps, y, patch_size=8, regions=regions, baseline=0.0
        ),
        forward_floor(model, passes * images, shape, per_call),
        passes,
        "quantus.RegionPerturbation",
        lambda: region(softmax=True, **kwargs),
        max_diff,
        repeats,
    )

    steps = 16
    passes = metrics.forward_passes("pixel-flipping", steps=steps)
    flipping = quantus.PixelFlipping(
        features_in_step=size * size // steps, perturb_baseline=0.0, normalise=False, disable_warnings=True
    )
    compare(
        "pixel-flipping",
        case,
        lambda: metrics.pixel_flipping_curve(model, x, maps, y, steps=steps),
        forward_floor(model, passes * images, shape, per_call),
        passes,
        "quantus.PixelFlipping",
        lambda: flipping(softmax=True, **kwargs),
        lambda ours, theirs: max_diff(as_numpy(ours)[:, 1:], theirs),
        repeats,
    )

    for name in ("deletion-auc", "insertion-auc"):
        passes = metrics.forward_passes(name)
        compare(
            name,
            case,
            lambda n=name: metrics.get_metric(n)(maps, model=model, x=x, target=y),
            forward_floor(model, passes * images, shape, per_call),
            passes,
            "(no reference)",
            None,
            max_diff,
            repeats,
        )

    samples = 10
    passes = metrics.forward_passes("max-sensitivity", samples=samples)
    sensitivity = quantus.MaxSensitivity(
        nr_samples=samples, lower_bound=0.2, normalise=False, abs=False, disable_warnings=True
    )
    ours, theirs = compare(
        "max-sensitivity",
        case,
        lambda: metrics.max_sensitivity(
            maps, model=model, x=x, target=y, explainer=saliency, samples=samples
        ),
        explain_floor(saliency, model, passes * images, shape, per_call),
        passes,
        "quantus.MaxSensitivity",
        lambda: sensitivity(explain_func=explain_numpy(saliency), **kwargs),
        lambda *_: None,
        repeats,
    )
    print(
        f"    max-sensitivity means (different noise draws): ours {float(ours.mean()):.4f}, "
        f"Quantus {float(np.mean(theirs)):.4f}"
    )

    layers = len(parameter_layers(model))
    passes = metrics.forward_passes("model-randomisation", layers=layers)
    randomisation = quantus.MPRT(
        layer_order="top_down",
        similarity_func=quantus.similarity_func.correlation_spearman,
        return_average_correlation=True,
        normalise=False,
        abs=True,
        disable_warnings=True,
    )
    ours, theirs = compare(
        "model-randomisation",
        case,
        lambda: metrics.model_randomisation(maps, model=model, x=x, target=y, explainer=saliency),
        explain_floor(saliency, model, passes * images, shape, chunk=images),
        passes,
        "quantus.MPRT",
        lambda: randomisation(explain_func=explain_numpy(saliency), **kwargs),
        lambda *_: None,
        repeats,
    )
    print(
        f"    model-randomisation means (different random weights): ours {float(ours.mean()):.4f}, "
        f"Quantus {float(np.mean(theirs)):.4f}; {layers} layers"
    )


def table() -> str:
    lines = [
        "| metric | case | medexplain s | reference | reference s | speed-up | max abs diff | passes/image | "
        "floor s | medexplain / floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        theirs = f"{r['theirs']:.3f}" if r["theirs"] else "-"
        speed = f"{r['theirs'] / r['ours']:.1f}x" if r["theirs"] else "-"
        diff = f"{r['diff']:.1e}" if r["diff"] is not None else "- (random draws differ)"
        if r["reference"] == "(no reference)":
            diff = "-"
        floor = f"{r['floor']:.3f}" if r["floor"] else "-"
        ratio = f"{r['ours'] / r['floor']:.2f}" if r["floor"] else "-"
        lines.append(
            f"| {r['metric']} | {r['case']} | {r['ours']:.4f} | {r['reference']} | {theirs} | {speed} | "
            f"{diff} | {r['passes'] or '-'} | {floor} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="input size of the model-bound benchmark")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the model-free timings (best kept)")
    parser.add_argument("--model-repeats", type=int, default=1, help="repeats of medexplain and floor (best kept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, quantus {quantus.__version__}, {args.threads} threads, CPU seconds")
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("model-free metrics")
    model_free((args.images, 224, 224), "2D 224^2", args.repeats)
    model_free((4, 64, 64, 64), "3D 64^3", args.repeats)
    print("model-bound metrics")
    model_bound(args.images, args.size, args.model_repeats)
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    print(table())


if __name__ == "__main__":
    main()
