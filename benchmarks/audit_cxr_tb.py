"""CXR-TB through the audit (issue 23): does a ResNet-18's relevance for tuberculosis lie inside the lungs, better
than the baselines, and is there relevance outside the lungs out of proportion to their area (a shortcut)?

1. ``cxr_lung_tb`` (Shenzhen + Montgomery chest X-rays, label 1 = TB) resized to the preset's side, splits as
   shipped; its ``lung`` masks are an organ, not a lesion: "localises" here means "inside the lungs";
2. a ResNet-18 (registered ``resnet18``, small width) trained with ``medexplain.train``; the epoch is chosen on
   validation AUROC;
3. test accuracy and AUROC (95 % bootstrap over test images);
4. ``medexplain.workflows.audit.audit_run`` on the TB-positive test images, maps of the TB class (1) whatever the
   prediction: Grad-CAM, LRP (epsilon-plus-flat), integrated gradients and saliency; localisation metrics against
   the lung mask and Gini, the audit's baselines (constant, random, centre, prior = mean training lung mask,
   edges) and every method on the randomised model; the verdict (localises: better than the best reference map on
   most localisation metrics, paired Wilcoxon, Holm);
5. the audit's shortcut check with the lungs as the field of view: the share of each map's positive relevance
   outside the lungs against the area outside them (density ratio, flagged when its 95 % interval lies above 2),
   and the image border.

    python benchmarks/audit_cxr_tb.py [--size smoke|default|full] [--seeds 0] [--device cpu|cuda] [--work DIR]
        [--results FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _bagnet_runs import Config
from _headline import (
    DATA,
    RESAMPLES,
    Size,
    audit_benchmark_main,
    binary_test_accuracy,
    cell,
    estimate,
    mean_interval,
    over_seeds,
    preset_header,
    test_set,
    write_subset,
)
from audit_busi import _shortcuts, audit_data
from audit_idrid import BATCH, SHOWN, audit, rows_of, trained
from medexplain.workflows.explanations import load_explanations
from medexplain.workflows.shortcuts import relevance_share

TB_CLASS = 1
METHODS = ("gradcam", "lrp-epsilon-plus-flat", "integrated-gradients", "saliency")
FIELD = "lung"
OUTSIDE = f"outside {FIELD}"


@dataclass(frozen=True)
class Preset:
    """One size of the benchmark.

    Attributes:
        per_split: images per split (stratified, seeded 0; None: all 704).
        side: image side in pixels.
        epochs: training epochs (the best validation epoch is kept).
        width: the ResNet-18's width (64: the published one).
        audited_tiles: TB-positive test images audited (None: all).
        ig_steps: integrated gradients' steps.
    """

    per_split: Mapping[str, int] | None
    side: int
    epochs: int
    width: int
    audited_tiles: int | None
    ig_steps: int


PRESETS = {
    "smoke": Preset({"train": 24, "val": 12, "test": 12}, 32, 1, 8, None, 4),
    "default": Preset(None, 224, 30, 16, None, 16),
    "full": Preset(None, 224, 60, 64, None, 32),
}
"""``default`` fits one seed in about 5 min on one core of a shared 2-core CPU (at 128 px and 16 epochs it took
1.4 min); ``full`` (the published width) is meant for a GPU; ``smoke`` (the tests) runs in seconds."""


def config(preset: Preset) -> Config:
    settings = {"epochs": preset.epochs, "batch_size": BATCH, "optimizer": "adamw", "lr": 1e-3,
                "class_weights": "balanced", "monitor": "auroc", "model_args": {"width": preset.width}}  # fmt: skip
    return Config(f"resnet18-w{preset.width}", "resnet18", settings)


def outside_lungs(document: Mapping[str, Any], folder: Path, run_dir: Path, data: Path,
                  seed: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per map the shortcut check's entry for the region outside the lungs, the regions it flags, and the mean
    share of positive relevance outside the lungs with its bootstrap interval over images (``share_ci``; maps
    without positive relevance left out, as in the check)."""
    _, dataset = test_set(run_dir, data)
    stored = load_explanations(folder / "explanations")
    checked = document["shortcuts"][OUTSIDE]
    shares: dict[str, list[float]] = {name: [] for name in checked}
    for item in stored.items:
        outside = dataset[item.index].masks[FIELD][0] < 0.5
        for name in checked:
            shares[name].append(relevance_share(stored.load(item, name)[0], outside))
    return {name: {**entry, "flags": _shortcuts(document, name), "share_ci": mean_interval(shares[name], seed)}
            for name, entry in checked.items()}  # fmt: skip


def subset(preset: Preset, work: Path) -> Path:
    """The CXR-TB copy at the preset's size in ``work`` (lung masks and the hospital kept; reused when there)."""
    return write_subset(DATA / "cxr_lung_tb", work / f"data-{preset.side}px", Size(preset.per_split, preset.side,
                        preset.epochs), 0, masks=[FIELD], extra_columns=["source"])  # fmt: skip


def run_seed(size_name: str, preset: Preset, seed: int, device: str, work: Path) -> dict[str, Any]:
    data = subset(preset, work)
    chosen = config(preset)
    run_dir, validation = trained(chosen, data, work, seed, device)
    audited, count = audit_data(data, work / f"audit-data-seed{seed}", None, seed, masks=(f"mask_{FIELD}",))
    folder = work / f"audit-{chosen.name}-seed{seed}"
    document, seconds = audit(run_dir, audited, folder, METHODS, preset, seed, device, mask=FIELD, field_mask=FIELD)
    return {
        "seed": seed, "size": size_name, "preset": asdict(preset), "model": chosen.name,
        "validation": {"auroc": validation["auroc"], "best_epoch": validation["best_epoch"], "epochs": preset.epochs},
        "accuracy": binary_test_accuracy(run_dir, data, seed, TB_CLASS), "audited_images": count,
        "rows": rows_of(chosen.name, document, seconds),
        "outside_lungs": outside_lungs(document, folder, run_dir, audited, seed),
        "command": f"python benchmarks/audit_cxr_tb.py --size {size_name} --seeds {seed} --device {device}",
    }  # fmt: skip


def markdown(result: Mapping[str, Any]) -> str:
    """One seed's tables: accuracy, the audit with the share of relevance outside the lungs, the command."""
    validation, accuracy, outside = result["validation"], result["accuracy"], result["outside_lungs"]
    lines = [f"#### seed {result['seed']}", "",
             f"Chosen on the validation split: epoch {validation['best_epoch']} of {validation['epochs']} (validation "
             f"AUROC {validation['auroc']:.3f}).", "",
             "| model | test images (TB) | test accuracy | test AUROC |", "|---|---|---|---|",
             f"| {result['model']} | {accuracy['images']} ({accuracy['positive']}) | "
             f"{cell(tuple(accuracy['accuracy']))} | {cell(tuple(accuracy['auroc']))} |", "",
             f"Audit on {result['audited_images']} TB-positive test images (maps of the TB class) against the lung "
             "mask; localises = significantly better than the best reference map (baselines and the methods' maps "
             "on the randomised model) on k of n localisation metrics, pass when k > n/2; outside lungs: mean "
             "share of the map's positive relevance outside the lungs [95 % bootstrap] / mean area outside them, "
             "density ratio [95 % bootstrap]; flagged: the regions the shortcut check flags (ratio interval above "
             "2):", "",
             "| map | localises | " + " | ".join(SHOWN) + " | relevance outside lungs / area | density ratio | "
             "flagged | s / image |", "|---" * (6 + len(SHOWN)) + "|"]  # fmt: skip
    for row in result["rows"]:
        cells = [cell(tuple(v) if v else None, 2) for v in row["metrics"].values()]
        entry = outside.get(row["map"])
        share = f"{cell(tuple(entry['share_ci']), 2)} / {entry['area_share']:.2f}" if entry else "n/a"
        ratio = cell((entry["ratio"], *entry["ratio_ci"]), 2) if entry else "n/a"
        lines.append(f"| {row['map']} | {row['localises']} | " + " | ".join(cells) + f" | {share} | {ratio} | "
                     f"{entry['flags'] if entry else 'n/a'} | {cell(row['s / tile'], 2)} |")  # fmt: skip
    lines += ["", "s / image: wall-clock seconds of the whole audit (methods, baselines, randomised model, scores, "
              "shortcut check) per audited image.", "", "Command:", "", f"    {result['command']}"]
    return "\n".join(lines) + "\n"


SUMMARISED = ("mask-auroc", "relevance-mass", "pointing-game")


def seeds_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """The seeds side by side: per map the mean over seeds of each ``SUMMARISED`` metric's estimate and of the
    share of relevance outside the lungs and its density ratio, with the per-seed values, and every seed's verdict
    and flags; methods, then the baselines, then the randomised model's maps (no shortcut check)."""
    seeds = [r["seed"] for r in results]
    per_seed = "seed " + " / ".join(str(s) for s in seeds)
    tables = [{row["map"]: row for row in r["rows"]} for r in results]
    maps = [m for m in tables[0] if all(m in t for t in tables)]
    lines = [f"#### {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean over seeds ({per_seed})", "",
             "Test accuracy " + " / ".join(f"{r['accuracy']['accuracy'][0]:.3f}" for r in results) + ", AUROC "
             + " / ".join(f"{r['accuracy']['auroc'][0]:.3f}" for r in results) + f" ({per_seed}).", "",
             "| map | " + " | ".join(f"{m} mean ({per_seed})" for m in SUMMARISED)
             + f" | relevance outside lungs mean ({per_seed}) | density ratio mean ({per_seed}) | localises "
             f"({per_seed}) | flagged ({per_seed}) |", "|---" * (5 + len(SUMMARISED)) + "|"]  # fmt: skip
    for m in maps:
        cells = [over_seeds([estimate(t[m]["metrics"].get(metric)) for t in tables]) for metric in SUMMARISED]
        outside = [r["outside_lungs"].get(m) for r in results]
        cells += [over_seeds([o["relevance_share"] if o else None for o in outside]),
                  over_seeds([o["ratio"] if o else None for o in outside]),
                  " / ".join(t[m]["localises"] for t in tables),
                  " / ".join(o["flags"] if o else "n/a" for o in outside)]  # fmt: skip
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def header(args: argparse.Namespace, minutes: float) -> str:
    return (preset_header(args, minutes, PRESETS[args.size])
            + f"Intervals: 95 % bootstrap over test images ({RESAMPLES} resamples).\n\n")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return audit_benchmark_main(argv, "cxr-tb", __doc__.splitlines()[0], PRESETS, run_seed, markdown, header,
                                seeds_summary)


if __name__ == "__main__":
    sys.exit(main())
