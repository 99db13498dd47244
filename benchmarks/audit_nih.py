"""NIH ChestX-ray14 at 64 px through the audit (issue 23): with no masks to localise against, are a ResNet-18's maps
of "any finding" faithful beyond a random map, do they depend on the trained weights, and does their relevance sit
on the image border or the background (corner text, laterality letters) out of proportion to the area?

1. ``nih_cxr1000`` (1000 grey chest X-rays at 64 px, the only size the subset ships; patient-grouped splits as
   shipped), label 1 = any of the 14 findings; its boxes cover 9 images, too few to localise against, so the audit
   runs without masks;
2. a ResNet-18 (registered ``resnet18``, small width, ``small_input``: the stem keeps 64 px, so that Grad-CAM has
   an 8 x 8 grid) trained with ``medexplain.train``; the epoch is chosen on validation AUROC;
3. test accuracy, balanced accuracy and AUROC (95 % bootstrap over test images);
4. ``medexplain.workflows.audit.audit_run`` without masks on finding-positive test images, maps of the finding class
   (1) whatever the prediction: Grad-CAM, LRP (epsilon-plus-flat), integrated gradients and saliency; faithfulness
   (deletion and insertion AUC, faithfulness correlation), robustness (max-sensitivity), Gini and model
   randomisation; the baselines (constant, random, centre, edges; the mean-mask prior needs masks) and every method
   on the randomised model; the verdict (faithful: better than the random map on most faithfulness metrics, paired
   Wilcoxon, Holm; randomisation: the maps keep less than half of their ranking once the top layers are re-drawn);
5. the audit's shortcut check: per map the share of positive relevance on the image border (outer 10 % of every
   side) and on the background (the darkest pixels) against their area (density ratio, flagged when its 95 %
   interval lies above 2).

    python benchmarks/audit_nih.py [--size smoke|default|full] [--seeds 0,1,2] [--device cpu|cuda] [--work DIR]
        [--results FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from _bagnet_runs import Config
from _headline import (
    DATA,
    RESAMPLES,
    Size,
    audit_benchmark_main,
    binary_test_accuracy,
    bootstrap_statistic,
    cell,
    estimate,
    over_seeds,
    predict,
    preset_header,
    test_set,
    write_subset,
)
from audit_busi import audit_data, verdict_table
from audit_idrid import BATCH, audit, trained
from headline_nih import label_auroc
from medexplain.workflows.audit import FAITHFULNESS, OTHERS, RANDOM_MODEL

SOURCE = DATA / "nih_cxr1000"
FINDING_CLASS = 1
METHODS = ("gradcam", "lrp-epsilon-plus-flat", "integrated-gradients", "saliency")
METRICS = (*FAITHFULNESS, *OTHERS)
SHOWN = ("deletion-auc", "insertion-auc", "faithfulness-correlation", "max-sensitivity", "gini")
SUMMARISED = ("deletion-auc", "insertion-auc", "gini")
REGIONS = ("border", "background")
BOXED_IMAGES = 9
LABELS = ("Effusion", "Infiltration")
"""The multi-label audit's findings: the two most frequent in the subset (170 and 162 of 1000 images; 46 and 47 test
positives), the only ones with test AUROC clearly above chance in the earlier nih-multilabel headline (0.69, 0.75)."""


@dataclass(frozen=True)
class Preset:
    """One size of the benchmark.

    Attributes:
        per_split: images per split (stratified, seeded 0; None: all 1000).
        side: image side in pixels (64: the subset's own).
        epochs: training epochs (the best validation epoch is kept).
        width: the ResNet-18's width (64: the published one).
        audited_tiles: finding-positive test images audited (a seeded draw; None: all 138).
        ig_steps: integrated gradients' steps.
        metric_params: the audit's metric parameters, over its own defaults.
        labels: findings whose maps the multi-label model's audit explains, each on test images with that finding.
        label_images: test images audited per label (a seeded draw; None: all with the finding).
    """

    per_split: Mapping[str, int] | None
    side: int
    epochs: int
    width: int
    audited_tiles: int | None
    ig_steps: int
    metric_params: Mapping[str, Mapping[str, Any]]
    labels: tuple[str, ...] = LABELS
    label_images: int | None = None


CHEAP_METRICS = {"deletion-auc": {"steps": 10}, "insertion-auc": {"steps": 10},
                 "faithfulness-correlation": {"runs": 20}, "max-sensitivity": {"samples": 3},
                 "model-randomisation": {"layers": 3}}  # fmt: skip
PRESETS = {
    "smoke": Preset({"train": 24, "val": 12, "test": 12}, 32, 1, 8, 4, 4,
                    {**CHEAP_METRICS, "faithfulness-correlation": {"runs": 10}, "max-sensitivity": {"samples": 2},
                     "model-randomisation": {"layers": 2}}, label_images=2),
    "default": Preset(None, 64, 20, 16, 48, 16, CHEAP_METRICS, label_images=24),
    "full": Preset(None, 64, 60, 64, None, 32, {}),
}  # fmt: skip
"""``default`` fits one seed in about 12 CPU min (16 min wall-clock on one core of a shared 2-core CPU); ``full``
(the published width, every positive test image, the audit's own metric parameters) is meant for a GPU; ``smoke``
(the tests) runs in seconds at 32 px."""


def config(preset: Preset, multi_label: bool = False) -> Config:
    """The single-label ResNet-18 (any finding, cross-entropy, balanced class weights) or the multi-label one (14
    findings, sigmoid and binary cross-entropy); the epoch chosen on validation AUROC (mean over labels)."""
    settings = {"epochs": preset.epochs, "batch_size": BATCH, "optimizer": "adamw", "lr": 1e-3, "monitor": "auroc",
                "model_args": {"width": preset.width, "small_input": True}}  # fmt: skip
    if multi_label:
        return Config(f"resnet18-w{preset.width}-bce", "resnet18", {**settings, "loss": "bce"})
    return Config(f"resnet18-w{preset.width}", "resnet18", {**settings, "class_weights": "balanced"})


def shortcut_entries(document: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{map: {region: entry}}`` of the audit's shortcut check for the regions it checked (border; background when
    it covers enough of the images)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for region, per_map in document["shortcuts"].items():
        for name, entry in per_map.items():
            result.setdefault(name, {})[region] = entry
    return result


def audit_record(document: Mapping[str, Any], seconds: float, count: int) -> dict[str, Any]:
    """What the tables show of one audit."""
    return {"audited_images": count, "rows": verdict_table(document, document, SHOWN),
            "shortcuts": shortcut_entries(document), "not_applicable": document["not_applicable"],
            "ranking": document["ranking"], "seconds_per_image": seconds}  # fmt: skip


def _trained(chosen: Config, data: Path, work: Path, seed: int, device: str) -> tuple[Path, dict[str, Any]]:
    run_dir, metrics = trained(chosen, data, work, seed, device)
    return run_dir, {"auroc": metrics["auroc"], "best_epoch": metrics["best_epoch"]}


def multi_label_seed(preset: Preset, data: Path, seed: int, device: str, work: Path) -> dict[str, Any]:
    """The multi-label model's test AUROC of each of ``preset.labels`` and its audit per label, on test images
    with that finding, maps of that label's logit."""
    chosen = config(preset, multi_label=True)
    run_dir, validation = _trained(chosen, data, work, seed, device)
    model, dataset = test_set(run_dir, data)
    targets = torch.stack([dataset[i].labels for i in range(len(dataset))]).numpy()
    scores = torch.from_numpy(predict(model, dataset)).sigmoid().numpy()
    labels = {}
    for label in preset.labels:
        k = dataset.label_names.index(label)
        audited, count = audit_data(data, work / f"audit-data-{label}-seed{seed}", preset.label_images, seed,
                                    masks=(), column=f"label_{label}")  # fmt: skip
        document, seconds = audit(run_dir, audited, work / f"audit-{chosen.name}-{label}-seed{seed}", METHODS, preset,
                                  seed, device, mask=label, metrics=METRICS, metric_params=preset.metric_params,
                                  target="predicted")  # fmt: skip
        auroc = bootstrap_statistic(label_auroc, targets[:, k], scores[:, k], seed=seed)
        labels[label] = {"auroc": auroc, "test_positives": int(targets[:, k].sum()),
                         **audit_record(document, seconds, count)}  # fmt: skip
    return {"model": chosen.name, "validation": {**validation, "epochs": preset.epochs}, "labels": labels}


def run_seed(size_name: str, preset: Preset, seed: int, device: str, work: Path) -> dict[str, Any]:
    data = write_subset(SOURCE, work / f"data-{preset.side}px", Size(preset.per_split, preset.side, preset.epochs), 0,
                        extra_columns=["patient_id"])  # fmt: skip
    chosen = config(preset)
    run_dir, validation = _trained(chosen, data, work, seed, device)
    audited, count = audit_data(data, work / f"audit-data-seed{seed}", preset.audited_tiles, seed, masks=())
    document, seconds = audit(run_dir, audited, work / f"audit-{chosen.name}-seed{seed}", METHODS, preset, seed,
                              device, mask=None, metrics=METRICS, metric_params=preset.metric_params)  # fmt: skip
    return {
        "seed": seed, "size": size_name, "preset": asdict(preset), "model": chosen.name,
        "validation": {**validation, "epochs": preset.epochs},
        "accuracy": binary_test_accuracy(run_dir, data, seed, FINDING_CLASS), **audit_record(document, seconds, count),
        "multi_label": multi_label_seed(preset, data, seed, device, work),
        "command": f"python benchmarks/audit_nih.py --size {size_name} --seeds {seed} --device {device}",
    }  # fmt: skip


def _region_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    ratio = cell((entry["ratio"], *entry["ratio_ci"]), 2)
    return f"{cell(entry['relevance_share'], 2)} / {entry['area_share']:.2f}, {ratio}"


AUDIT_LEGEND = ("localisation not applicable (no masks: boxes exist for 9 images only); faithful = significantly "
                "better than the random map on k of n faithfulness metrics (pass when k > n/2); randomisation = mean "
                "rank similarity of the maps after re-drawing the top layers and its upper 95 % bound (pass below "
                "0.5); per region: mean share of the map's positive relevance / mean area share, density ratio [95 % "
                "bootstrap] (n/a: not checked; the background only where it covers at least 1 % of the images); "
                "flagged: the regions whose ratio interval lies above 2; s / image: wall-clock seconds of the whole "
                "audit (methods, baselines, randomised model, scores, shortcut check) per audited image")  # fmt: skip


def audit_table(record: Mapping[str, Any]) -> list[str]:
    """Lines of one audit's table (``audit_record``), its ranking and what was not applicable."""
    regions = REGIONS
    lines = ["| map | faithful | randomisation | " + " | ".join(SHOWN) + " | "
             + " | ".join(f"{r}: relevance / area, ratio" for r in regions) + " | flagged | s / image |",
             "|---" * (5 + len(SHOWN) + len(regions)) + "|"]  # fmt: skip
    for row in record["rows"]:
        cells = [cell(tuple(v) if v else None, 2) for v in row["metrics"].values()]
        per_region = record["shortcuts"].get(row["map"], {})
        shares = [_region_cell(per_region.get(r)) for r in regions]
        seconds = cell(record["seconds_per_image"], 2) if row["faithful"] != "baseline" else "-"
        lines.append(f"| {row['map']} | {row['faithful']} | {row['randomisation']} | " + " | ".join(cells + shares)
                     + f" | {row['shortcuts']} | {seconds} |")  # fmt: skip
    return [*lines, "", f"Ranking (deletion AUC): {', '.join(record['ranking'])}. Not applicable: "
            + "; ".join(f"{k} ({v})" for k, v in record["not_applicable"].items()) + "."]  # fmt: skip


def markdown(result: Mapping[str, Any]) -> str:
    """One seed's tables: accuracy, the audit with the shortcut check's shares; the multi-label model's AUROC and
    audit per label; the command."""
    validation, accuracy, multi = result["validation"], result["accuracy"], result["multi_label"]
    lines = [f"#### seed {result['seed']}", "",
             f"Chosen on the validation split: epoch {validation['best_epoch']} of {validation['epochs']} (validation "
             f"AUROC {validation['auroc']:.3f}).", "",
             "| model | test images (any finding) | test accuracy | test balanced accuracy | test AUROC |",
             "|---|---|---|---|---|",
             f"| {result['model']} | {accuracy['images']} ({accuracy['positive']}) | "
             f"{cell(tuple(accuracy['accuracy']))} | {cell(tuple(accuracy['balanced_accuracy']))} | "
             f"{cell(tuple(accuracy['auroc']))} |", "",
             f"Audit without masks on {result['audited_images']} finding-positive test images (maps of the finding "
             f"class); {AUDIT_LEGEND}:", "", *audit_table(result), "",
             f"Multi-label model {multi['model']} (14 findings, sigmoid), chosen on the validation split: epoch "
             f"{multi['validation']['best_epoch']} of {multi['validation']['epochs']} (validation AUROC, mean over "
             f"labels, {multi['validation']['auroc']:.3f}).", "",
             "| label | test positives | test AUROC |", "|---|---|---|",
             *(f"| {label} | {entry['test_positives']} | {cell(tuple(entry['auroc']))} |"
               for label, entry in multi["labels"].items())]  # fmt: skip
    for label, entry in multi["labels"].items():
        lines += ["", f"Audit of the label {label} without masks on {entry['audited_images']} test images with "
                  f"{label} (maps of its logit; deletion and insertion on its sigmoid):", "", *audit_table(entry)]
    lines += ["", "Command:", "", f"    {result['command']}"]
    return "\n".join(lines) + "\n"


def summary_table(records: Sequence[Mapping[str, Any]], per_seed: str) -> list[str]:
    """Lines of the seeds' audits side by side: per map the mean over seeds of each ``SUMMARISED`` metric's
    estimate and of the border share and ratio, with the per-seed values, and every seed's verdicts and flags;
    methods, then the baselines, then the randomised model's maps."""
    tables = [{row["map"]: row for row in r["rows"]} for r in records]
    maps = [m for m in tables[0] if all(m in t for t in tables)]
    methods = [m for m in maps if not m.startswith("baseline-") and not m.endswith(RANDOM_MODEL)]
    order = [*methods, *(m for m in maps if m.startswith("baseline-")), *(m for m in maps if m.endswith(RANDOM_MODEL))]
    lines = ["| map | " + " | ".join(f"{m} mean ({per_seed})" for m in SUMMARISED)
             + f" | border relevance share mean ({per_seed}) | border ratio mean ({per_seed}) | faithful ({per_seed})"
             f" | randomisation ({per_seed}) | flagged ({per_seed}) |",
             "|---" * (6 + len(SUMMARISED)) + "|"]  # fmt: skip
    for m in order:
        cells = [over_seeds([estimate(t[m]["metrics"].get(metric)) for t in tables]) for metric in SUMMARISED]
        border = [r["shortcuts"].get(m, {}).get("border") for r in records]
        cells += [over_seeds([b["relevance_share"] if b else None for b in border]),
                  over_seeds([b["ratio"] if b else None for b in border]),
                  " / ".join(t[m]["faithful"] for t in tables),
                  " / ".join(t[m]["randomisation"].split(" (")[0] for t in tables),
                  " / ".join(t[m]["shortcuts"] for t in tables)]  # fmt: skip
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def seeds_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """The seeds side by side (``summary_table``): the single-label model's audit, then each label's of the
    multi-label model, with the test accuracies of every seed."""
    seeds = [r["seed"] for r in results]
    per_seed = "seed " + " / ".join(str(s) for s in seeds)
    accuracy = {key: " / ".join(f"{r['accuracy'][key][0]:.3f}" for r in results)
                for key in ("accuracy", "balanced_accuracy", "auroc")}  # fmt: skip
    lines = [f"#### {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean over seeds ({per_seed})", "",
             f"Any finding: test accuracy {accuracy['accuracy']}, balanced accuracy {accuracy['balanced_accuracy']}, "
             f"AUROC {accuracy['auroc']} ({per_seed}).", "", *summary_table(results, per_seed)]  # fmt: skip
    for label in results[0]["multi_label"]["labels"]:
        records = [r["multi_label"]["labels"][label] for r in results]
        lines += ["", f"Multi-label model, label {label}: test AUROC "
                  + " / ".join(f"{r['auroc'][0]:.3f}" for r in records) + f" ({per_seed}).", "",
                  *summary_table(records, per_seed)]  # fmt: skip
    return "\n".join(lines) + "\n"


def header(args: argparse.Namespace, minutes: float) -> str:
    return (preset_header(args, minutes, PRESETS[args.size])
            + f"Intervals: 95 % bootstrap over test images ({RESAMPLES} resamples). Boxes exist for {BOXED_IMAGES} "
            "of the 1000 images (boxes_64px.csv): too few to localise against, so the audit runs without "
            "masks.\n\n")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return audit_benchmark_main(argv, "nih", __doc__.splitlines()[0], PRESETS, run_seed, markdown, header,
                                seeds_summary)


if __name__ == "__main__":
    sys.exit(main())
