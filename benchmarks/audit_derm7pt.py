"""Derm7pt melanoma at 384 px through the audit (issue 23): is the sparse BagNet's evidence more faithful than the
best post-hoc map of a ResNet of comparable accuracy, is either beyond the baselines, and does any map sit on the
image border or the dark vignette out of proportion to its area (a shortcut)?

1. ``derm7pt`` (1011 dermoscopy images, 384 x 384, label 1 = melanoma; Kawahara et al., IEEE JBHI 2019) at its
   own size, splits as shipped (train 607 / val 152 / test 252); ``smoke`` a stratified resized subset;
2. a ResNet-18 (registered ``resnet18``, small width) and the sparse BagNet-17 (``sparse-bagnet17-light``, small
   width, ReLU evidence, sparsity on the local evidence) for each lambda of a small sweep, trained with
   ``medexplain.train`` (class weights balanced); the epoch of each run and the lambda are chosen on validation
   AUROC (the lambda on seed 0's sweep, reused by the other seeds, unless the preset sweeps every seed);
3. test accuracy, balanced accuracy and AUROC of both chosen models and their paired AUROC difference (95 %
   bootstrap over test images; "comparable" when that interval holds 0);
4. ``medexplain.workflows.audit.audit_run`` without masks (Derm7pt has none) on the melanoma test images, maps of
   the melanoma class (1) whatever the prediction: the ResNet with Grad-CAM, LRP, integrated gradients and
   saliency, the BagNet with its evidence and Grad-CAM; faithfulness (deletion, insertion, faithfulness
   correlation) against the random map, robustness, Gini, the randomisation check, and the shortcut check (share
   of relevance on the image border and on the image's dark background against their area), with the audit's
   baselines (constant, random, centre, edges);
5. the paired difference BagNet evidence - the ResNet's best post-hoc method on deletion and insertion AUC (95 %
   bootstrap over images), the best method chosen by the lowest mean deletion AUC on validation melanoma images;
   and each model's map against each baseline.

    python benchmarks/audit_derm7pt.py [--size smoke|default|full] [--seeds 0] [--device cpu|cuda] [--work DIR]
        [--results FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from _headline import (
    DATA,
    RESAMPLES,
    Size,
    audit_benchmark_main,
    binary_test_accuracy,
    bootstrap_statistic,
    cell,
    positive_probability,
    preset_header,
    write_subset,
)
from audit_busi import CHEAP_METRICS, _criterion, _randomisation, audit_data
from audit_idrid import (
    BAGNET_METHODS,
    RESNET_METHODS,
    _triple,
    _tuple,
    audit,
    choose_bagnet,
    configs,
    paired,
    run_folder,
    validate,
)
from medexplain.metrics.classification import binary_auroc
from medexplain.workflows.audit import BASELINES, RANDOM_MODEL, audit_scores

DERM = DATA / "derm7pt"
NATIVE = 384
SWEEP_SEED = 0
FAITHFULNESS_AND_SANITY = ("deletion-auc", "insertion-auc", "faithfulness-correlation", "gini", "model-randomisation")
"""The metrics of the CPU presets: the audit's without localisation (no masks) and without robustness
(max-sensitivity re-explains every image several times: integrated gradients at 384 px did not fit the budget)."""
SHOWN = ("deletion-auc", "insertion-auc", "faithfulness-correlation", "gini")
COMPARED = ("deletion-auc", "insertion-auc")
CHOOSING = "deletion-auc"
"""The ResNet's best post-hoc method has the lowest mean deletion AUC on validation melanoma images."""
REGIONS = ("border", "background")


@dataclass(frozen=True)
class Preset:
    """One size of the benchmark.

    Attributes:
        per_split: images per split (stratified, seeded 0; None: all 1011).
        side: image side in pixels (384: the images' own).
        width: the ResNet-18's width (64: the published one).
        bagnet_width: the BagNet-17's width (16: the light layout's).
        resnet_epochs, bagnet_epochs: training epochs (the best validation epoch is kept).
        lambdas: the sparse BagNet's sparsity weights tried (chosen on validation AUROC).
        sweep_every_seed: sweep lambda on each seed's validation split (False: on seed 0's, reused).
        audited_tiles: melanoma test images audited (None: all).
        val_images: melanoma validation images on which the ResNet's best post-hoc method is chosen.
        ig_steps: integrated gradients' steps.
        metrics: the audit's metrics (those that need masks are left out by the audit).
        metric_params: the audit's metric parameters.
    """

    per_split: Mapping[str, int] | None
    side: int
    width: int
    bagnet_width: int
    resnet_epochs: int
    bagnet_epochs: int
    lambdas: tuple[float, ...]
    sweep_every_seed: bool
    audited_tiles: int | None
    val_images: int
    ig_steps: int
    metrics: tuple[str, ...] = FAITHFULNESS_AND_SANITY
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(CHEAP_METRICS))


PRESETS = {
    "smoke": Preset({"train": 24, "val": 12, "test": 12}, 48, 4, 4, 1, 1, (0.01, 0.1), False, 3, 2, 4,
                    metric_params={**CHEAP_METRICS, "model-randomisation": {"layers": 2}}),
    "default": Preset(None, NATIVE, 8, 4, 6, 3, (0.01, 0.1), False, 8, 8, 16),
    "full": Preset(None, NATIVE, 64, 16, 40, 30, (0.003, 0.01, 0.03, 0.1, 0.3), True, None, 32, 32,
                   (*FAITHFULNESS_AND_SANITY, "max-sensitivity"), {}),
}  # fmt: skip
"""``default`` is what one core of the shared 2-core CPU affords at 384 px (sized before any test number was seen;
three seeds from scratch take 29 min on one core): an epoch takes 0.3 min for the width-8 ResNet-18 and 1.1-1.3 min
for the width-4 BagNet-17 (with ``medexplain.allocator.keep_freed_memory``; 2.5-3.3 min without); ``full`` (max-
sensitivity included, every seed's own sweep) is meant for a GPU; ``smoke`` (the tests) runs in seconds."""


# ---- data and models ---------------------------------------------------------------------------------------------


def derm_data(preset: Preset, work: Path) -> Path:
    """The Derm7pt folder itself at 384 px with every image, else a resized stratified subset in ``work``."""
    if preset.per_split is None and preset.side == NATIVE:
        return DERM
    return write_subset(DERM, work / f"data-{preset.side}px", Size(preset.per_split, preset.side,
                        preset.resnet_epochs), 0)  # fmt: skip


def train_models(preset: Preset, data: Path, work: Path, seed: int, device: str) -> dict[str, Any]:
    """The ResNet and the lambda sweep of the BagNet (on ``seed``, or on seed 0 and reused), trained or reused; the
    chosen BagNet, the validation metrics of this seed's runs and those of the sweep."""
    resnet, bagnets = configs(preset, bagnet_args={"width": preset.bagnet_width})
    sweep_seed = seed if preset.sweep_every_seed else SWEEP_SEED
    sweep = validate(bagnets, data, work, sweep_seed, device)
    chosen = choose_bagnet(bagnets, sweep)
    validation = validate([resnet] + ([chosen] if sweep_seed != seed else []), data, work, seed, device)
    return {"resnet": resnet, "bagnet": chosen, "validation": validation, "sweep": sweep, "sweep_seed": sweep_seed}


def accuracies_on_test(runs: Mapping[str, Path], data: Path, seed: int) -> dict[str, Any]:
    """Each model's test accuracy, balanced accuracy and AUROC, and the paired AUROC difference BagNet - ResNet
    (95 % bootstrap over test images)."""
    result: dict[str, Any] = {model: binary_test_accuracy(run_dir, data, seed) for model, run_dir in runs.items()}
    melanoma, bagnet = positive_probability(runs["bagnet"], data)
    _, resnet = positive_probability(runs["resnet"], data)
    result["auroc_difference"] = bootstrap_statistic(lambda y, a, b: binary_auroc(y, a) - binary_auroc(y, b),
                                                     melanoma, bagnet, resnet, seed=seed)  # fmt: skip
    return result


# ---- audits ------------------------------------------------------------------------------------------------------


def best_on_validation(preset: Preset, data: Path, run_dir: Path, work: Path, seed: int,
                       device: str) -> dict[str, Any]:  # fmt: skip
    """The ResNet's post-hoc method with the lowest mean deletion AUC on ``preset.val_images`` melanoma validation
    images (an audit of the validation split scoring deletion only), with every method's mean."""
    audited, count = audit_data(data, work / f"val-audit-data-seed{seed}", preset.val_images, seed, masks=(),
                                split="val")  # fmt: skip
    folder = work / f"val-audit-{run_dir.name}"
    audit(run_dir, audited, folder, RESNET_METHODS, replace(preset, audited_tiles=None), seed, device, mask=None,
          metrics=(CHOOSING,), metric_params=preset.metric_params, split="val")  # fmt: skip
    scores = audit_scores(folder)[CHOOSING]
    means = {method: float(np.nanmean(list(scores[method].values()))) for method in RESNET_METHODS}
    return {"best": min(means, key=lambda m: means[m]), "means": means, "images": count}


def shortcut_cells(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Per region of the shortcut check: the map's mean relevance share, the region's mean area share, the density
    ratio with its interval and the flag (None: the region or the map not checked)."""
    checked = document.get("shortcuts", {})
    return {region: checked[region].get(name) if region in checked else None for region in REGIONS}


def rows_of(model: str, document: Mapping[str, Any], seconds: float) -> list[dict[str, Any]]:
    """Table rows of one audit: each method (verdicts, metrics, shortcut shares), then each reference map."""
    rows = []
    for entry in document["verdict"]:
        rows.append({"model": model, "map": entry["method"], "faithful": _criterion(entry["faithful"]),
                     "randomisation": _randomisation(entry["randomisation"]), "s / image": seconds,
                     "metrics": {m: _triple(entry["metrics"].get(m)) for m in SHOWN},
                     "shortcuts": shortcut_cells(document, entry["method"])})  # fmt: skip
    for reference, metrics in document["baselines"].items():
        rows.append({"model": model, "map": reference, "faithful": "baseline", "randomisation": "-",
                     "s / image": None, "metrics": {m: _triple(metrics.get(m)) for m in SHOWN},
                     "shortcuts": shortcut_cells(document, reference)})  # fmt: skip
    return rows


def comparisons(folders: Mapping[str, Path], best: str, seed: int) -> dict[str, Any]:
    """BagNet evidence - the ResNet's ``best`` method, and each model's map - each baseline, on ``COMPARED``."""
    scores = {model: audit_scores(folder) for model, folder in folders.items()}
    both = {metric: {"evidence": scores["bagnet"][metric].get("evidence", {}), best: scores["resnet"][metric][best]}
            for metric in COMPARED}  # fmt: skip
    against = {}
    for model, method in (("bagnet", "evidence"), ("resnet", best)):
        for reference in (b for b in BASELINES if b in scores[model][COMPARED[0]]):
            against[f"{method} - {reference}"] = {
                metric: paired(scores[model], method, reference, metric, seed) for metric in COMPARED}
    beyond = {metric: {name: _minus(scores[model][metric], method, "baseline-random")
                       for name, (model, method) in (("evidence", ("bagnet", "evidence")), (best, ("resnet", best)))}
              for metric in COMPARED}  # fmt: skip
    return {"evidence_vs_best": {metric: paired(both, "evidence", best, metric, seed) for metric in COMPARED},
            "beyond_random": {metric: paired(beyond, "evidence", best, metric, seed) for metric in COMPARED},
            "against_baselines": against}  # fmt: skip


def _minus(scores: Mapping[str, Mapping[str, float]], method: str, reference: str) -> dict[str, float]:
    """Per image, ``method``'s score minus ``reference``'s (on the same model)."""
    return {i: value - scores[reference][i] for i, value in scores.get(method, {}).items() if i in scores[reference]}


# ---- one seed ----------------------------------------------------------------------------------------------------


def run_seed(size_name: str, preset: Preset, seed: int, device: str, work: Path) -> dict[str, Any]:
    data = derm_data(preset, work)
    trained = train_models(preset, data, work, seed, device)
    models = {"resnet": (trained["resnet"], RESNET_METHODS), "bagnet": (trained["bagnet"], BAGNET_METHODS)}
    runs = {model: run_folder(work, config, seed) for model, (config, _) in models.items()}
    chosen = best_on_validation(preset, data, runs["resnet"], work, seed, device)
    audited, count = audit_data(data, work / f"audit-data-seed{seed}", preset.audited_tiles, seed, masks=())
    folders, seconds, rows = {}, {}, []
    for model, (config, methods) in models.items():
        folders[model] = work / f"audit-{config.name}-seed{seed}"
        document, seconds[model] = audit(runs[model], audited, folders[model], methods, preset, seed, device, mask=None,
                                         metrics=preset.metrics, metric_params=preset.metric_params)  # fmt: skip
        rows += rows_of(config.name, document, seconds[model])
    return {
        "seed": seed, "size": size_name, "preset": asdict(preset), "data": str(data),
        "models": {m: c.name for m, (c, _) in models.items()}, "validation": trained["validation"],
        "sweep": trained["sweep"], "sweep_seed": trained["sweep_seed"],
        "accuracy": accuracies_on_test(runs, data, seed), "resnet_best": chosen, "audited_images": count, "rows": rows,
        "comparisons": comparisons(folders, chosen["best"], seed), "seconds_per_image": seconds,
        "command": f"python benchmarks/audit_derm7pt.py --size {size_name} --seeds {seed} --device {device}",
    }  # fmt: skip


# ---- tables ------------------------------------------------------------------------------------------------------


def _share(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry["n"] == 0:
        return "n/a"
    flag = " **flagged**" if entry["flagged"] else ""
    return (f"{entry['relevance_share']:.2f} / {entry['area_share']:.2f} (ratio {entry['ratio']:.2f} "
            f"[{entry['ratio_ci'][0]:.2f}, {entry['ratio_ci'][1]:.2f}]){flag}")  # fmt: skip


def markdown(result: Mapping[str, Any]) -> str:
    """One seed's tables: lambda sweep, accuracy, choice of the ResNet's best method, audit, paired differences."""
    models, accuracy, seed = result["models"], result["accuracy"], result["seed"]
    lines = [f"#### seed {seed}", "",
             f"Lambda sweep on seed {result['sweep_seed']}'s validation split (each run's epoch and the lambda chosen "
             "on validation AUROC):", "",
             "| run | seed | validation AUROC | validation accuracy | validation balanced accuracy | validation Gini "
             "(evidence) | chosen epoch | chosen |", "|---" * 8 + "|"]  # fmt: skip
    runs = {(name, result["sweep_seed"]): e for name, e in result["sweep"].items()}
    runs.update({(name, seed): e for name, e in result["validation"].items()})
    for (name, run_seed_), entry in runs.items():
        chosen = "yes" if name in models.values() else ""
        lines.append(f"| {name} | {run_seed_} | {cell(entry['auroc'])} | {cell(entry['accuracy'])} | "
                     f"{cell(entry['balanced_accuracy'])} | {cell(entry['gini'])} | {entry['best_epoch']} | "
                     f"{chosen} |")  # fmt: skip
    lines += ["", "| model | test images (melanoma) | test accuracy | test balanced accuracy | test AUROC |",
              "|---|---|---|---|---|"]  # fmt: skip
    for model, name in models.items():
        entry = accuracy[model]
        lines.append(f"| {name} | {entry['images']} ({entry['positive']}) | {cell(tuple(entry['accuracy']))} | "
                     f"{cell(tuple(entry['balanced_accuracy']))} | {cell(tuple(entry['auroc']))} |")  # fmt: skip
    difference = tuple(accuracy["auroc_difference"])
    comparable = "comparable" if difference[1] <= 0 <= difference[2] else "not comparable"
    best = result["resnet_best"]
    lines += ["", f"Test AUROC difference BagNet - ResNet (paired): {cell(difference)}: {comparable} (the interval "
              f"{'holds' if comparable == 'comparable' else 'excludes'} 0).", "",
              f"The ResNet's best post-hoc method, chosen on {best['images']} melanoma validation images by the lowest "
              "mean deletion AUC: **" + best["best"] + "** (" + ", ".join(
                  f"{m} {v:.3f}" for m, v in best["means"].items()) + ").", "",
              f"Audit without masks on {result['audited_images']} melanoma test images (maps of the melanoma class "
              "whatever the prediction); faithful = significantly better than the random map on k of n faithfulness "
              "metrics (paired Wilcoxon, Holm), pass when k > n/2; randomisation = mean rank similarity to the maps "
              "of the model with its top layers re-drawn (upper 95 % bound), pass below 0.5; border, background = "
              "mean share of the map's positive relevance in the region / the region's mean area share (density "
              "ratio [95 % bootstrap]; flagged when the interval lies above 2):", "",
              "| model | map | faithful | randomisation | " + " | ".join(SHOWN) + " | border | background | "
              "s / image |", "|---" * (7 + len(SHOWN)) + "|"]  # fmt: skip
    for row in result["rows"]:
        cells = [cell(tuple(v) if v else None, 2) for v in row["metrics"].values()]
        shares = [_share(row["shortcuts"][region]) for region in REGIONS]
        lines.append(f"| {row['model']} | {row['map']} | {row['faithful']} | {row['randomisation']} | "
                     + " | ".join(cells + shares) + f" | {cell(row['s / image'], 2)} |")  # fmt: skip
    compared = result["comparisons"]
    lines += ["", "Paired differences over the audited images (mean [95 % bootstrap]; deletion AUC: < 0 means the "
              "first map is more faithful; insertion AUC: > 0). Deletion and insertion AUC are in units of each "
              "model's own melanoma probability, so the first row compares two models' curves; the second sets each "
              "map against the random map of its own model first:", "", "| difference | " + " | ".join(COMPARED) + " |",
              "|---" * (1 + len(COMPARED)) + "|",
              f"| evidence ({models['bagnet']}) - {best['best']} ({models['resnet']}) | "
              + " | ".join(cell(_tuple(compared["evidence_vs_best"][m])) for m in COMPARED) + " |",
              f"| (evidence - baseline-random) - ({best['best']} - baseline-random), each on its own model | "
              + " | ".join(cell(_tuple(compared["beyond_random"][m])) for m in COMPARED) + " |"]  # fmt: skip
    for name, values in compared["against_baselines"].items():
        lines.append(f"| {name} | " + " | ".join(cell(_tuple(values[m])) for m in COMPARED) + " |")
    lines += ["", "s / image: wall-clock seconds of the whole audit (methods, baselines, randomised model, scores, "
              "shortcut check) per audited image.", "", "Command:", "", f"    {result['command']}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def seeds_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """Across seeds: accuracy, and per model and map the mean over seeds of each shown metric, the seeds that pass
    each verdict and those flagged on a region ("n/a": the region was not checked, e.g. no dark background)."""
    lines = ["Across seeds (mean over seeds of each seed's estimate; verdicts and flags: seeds out of "
             f"{len(results)}):", "", "| model | test AUROC | test balanced accuracy | per seed AUROC |",
             "|---|---|---|---|"]  # fmt: skip
    for model in ("resnet", "bagnet"):
        aurocs = [r["accuracy"][model]["auroc"][0] for r in results]
        balanced = [r["accuracy"][model]["balanced_accuracy"][0] for r in results]
        names = sorted({r["models"][model] for r in results})
        lines.append(f"| {', '.join(names)} | {statistics.mean(aurocs):.3f} | {statistics.mean(balanced):.3f} | "
                     + ", ".join(f"{a:.3f}" for a in aurocs) + " |")  # fmt: skip
    lines += ["", "| model | map | faithful (seeds) | randomisation (seeds) | " + " | ".join(SHOWN)
              + " | border flagged | background flagged |", "|---" * (6 + len(SHOWN)) + "|"]  # fmt: skip
    kinds = {"resnet": {}, "bagnet": {}}
    for result in results:
        for row in result["rows"]:
            model = next(m for m, name in result["models"].items() if name == row["model"])
            kinds[model].setdefault(row["map"], []).append(row)
    for model, maps in kinds.items():
        for name, rows in maps.items():
            means = []
            for metric in SHOWN:
                values = [r["metrics"][metric][0] for r in rows if r["metrics"][metric]]
                means.append(f"{statistics.mean(values):.2f}" if values else "-")
            verdicts = [_passes(rows, key) for key in ("faithful", "randomisation")]
            flags = [str(sum(r["shortcuts"][g]["flagged"] for r in rows if r["shortcuts"][g]))
                     if any(r["shortcuts"][g] for r in rows) else "n/a" for g in REGIONS]  # fmt: skip
            lines.append(f"| {model} | {name} | " + " | ".join(verdicts + means + flags) + " |")
    differences = [r["comparisons"]["evidence_vs_best"]["deletion-auc"] for r in results]
    lines += ["", "Deletion AUC, evidence - the ResNet's best method, per seed: " + "; ".join(
        f"seed {r['seed']} ({r['resnet_best']['best']}) {cell(_tuple(d))}" for r, d in zip(results, differences,
                                                                                           strict=True)) + "."]
    return "\n".join(lines) + "\n"


def _passes(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    if all(r[key] in ("baseline", "-") for r in rows):
        return "-"
    return f"{sum(str(r[key]).startswith('pass') for r in rows)}/{len(rows)}"


def header(args: argparse.Namespace, minutes: float) -> str:
    return (preset_header(args, minutes, PRESETS[args.size]) + f"Intervals: 95 % bootstrap over test images "
            f"({RESAMPLES} resamples). Rows ending{RANDOM_MODEL} are each method's maps on the model with its top "
            "layers re-drawn.\n\n")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return audit_benchmark_main(argv, "derm7pt", __doc__.splitlines()[0], PRESETS, run_seed, markdown, header,
                                seeds_summary)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
