"""IDRiD at native resolution through the audit (issue 23): does the sparse BagNet's evidence localise
haemorrhages and hard exudates at least as well as the best post-hoc method of a ResNet of comparable accuracy,
and do either beat the baselines?

1. every 128 x 128 tile of the 1024 x 680 ``idrid_seg20`` fundus images at 128 px (no downsampling; the bottom
   40 rows are dropped), labelled 1 when it holds a haemorrhage (HE) or hard exudate (EX) pixel, its mask the union
   of both; the images (not the tiles) are split into train / validation / test by a permutation seeded 0, the same
   for every seed;
2. a ResNet-18 (registered ``resnet18``, small width) and the sparse BagNet-17 (``sparse-bagnet17-light``, ReLU
   evidence, sparsity on the local evidence) for each lambda of a small sweep, trained with ``medexplain.train``
   from the tile labels only; the epoch of each run and the lambda are chosen on validation AUROC (tiles);
3. tile AUROC of both chosen models on every test tile (95 % bootstrap over tiles);
4. ``medexplain.workflows.audit.audit_run`` on the positive test tiles, maps of the lesion class (1) whatever the
   prediction: the ResNet with Grad-CAM, LRP, integrated gradients and saliency, the BagNet with its evidence and
   Grad-CAM; localisation metrics and Gini, the audit's baselines (constant, random, centre, prior = mean training
   mask, edges) and every method on the randomised model; the verdict (localises: better than the best reference
   map on most localisation metrics, paired Wilcoxon, Holm);
5. the paired difference BagNet evidence - the ResNet's best post-hoc method (highest mean mask AUROC on these
   test tiles) on mask AUROC and pointing game, 95 % bootstrap over tiles; and each model's best map against each
   baseline.

    python benchmarks/audit_idrid.py [--size smoke|default|full] [--seeds 0] [--device cpu|cuda] [--work DIR]
        [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _bagnet_runs import Config, run
from _headline import RESAMPLES, audit_benchmark_main, bootstrap_statistic, cell, predict, preset_header, test_set
from audit_busi import audit_data
from headline_idrid import cut_tiles, tile_row
from medexplain.data.writers import write_manifest
from medexplain.explain.targets import Target
from medexplain.files import write_text
from medexplain.metrics.classification import binary_auroc
from medexplain.metrics.summary import bootstrap_interval
from medexplain.workflows.audit import (
    AFFORDABLE,
    BASELINES,
    LABELS_FORMAT,
    LOCALISATION,
    VERDICT_FILE,
    AuditSettings,
    audit_run,
    audit_scores,
)

TILE = 128
LESION_CLASS = 1
RESNET_METHODS = ("gradcam", "lrp-epsilon-plus-flat", "integrated-gradients", "saliency")
BAGNET_METHODS = ("evidence", "gradcam")
SHOWN = (*LOCALISATION, "gini")
COMPARED = ("mask-auroc", "pointing-game")


@dataclass(frozen=True)
class Preset:
    """One size of the benchmark.

    Attributes:
        images: the first ``images`` images of ``idrid_seg20`` are tiled (None: all 20).
        val_images, test_images: images of the validation and test splits (the rest train).
        resnet_epochs, bagnet_epochs: training epochs (the best validation epoch is kept).
        width: the ResNet-18's width (64: the published one).
        lambdas: the sparse BagNet's sparsity weights tried (chosen on validation AUROC).
        audited_tiles: positive test tiles audited (None: all).
        ig_steps: integrated gradients' steps.
    """

    images: int | None
    val_images: int
    test_images: int
    resnet_epochs: int
    bagnet_epochs: int
    width: int
    lambdas: tuple[float, ...]
    audited_tiles: int | None
    ig_steps: int


PRESETS = {
    "smoke": Preset(3, 1, 1, 1, 1, 8, (0.03,), 4, 4),
    "default": Preset(None, 4, 6, 16, 8, 16, (0.01, 0.03, 0.1), None, 16),
    "full": Preset(None, 4, 6, 60, 40, 64, (0.003, 0.01, 0.03, 0.1, 0.3), None, 32),
}
"""``default`` fits one seed in about 45 min on one core of a shared 2-core CPU (the BagNet-17 costs eight times
the width-16 ResNet per tile); ``full`` is meant for a GPU; ``smoke`` (the tests) runs in about a minute."""
BATCH = 16


# ---- data --------------------------------------------------------------------------------------------------------


def split_images(groups: Sequence[str], preset: Preset) -> dict[str, list[str]]:
    """Image ids per split: a permutation seeded 0 of the sorted ids, test first, then validation."""
    order = [sorted(groups)[i] for i in np.random.default_rng(0).permutation(len(groups))]
    test, val = order[: preset.test_images], order[preset.test_images : preset.test_images + preset.val_images]
    return {"train": sorted(set(order) - set(test) - set(val)), "val": sorted(val), "test": sorted(test)}


def write_tiles(preset: Preset, out: Path) -> tuple[Path, dict[str, list[str]]]:
    """The tiles as a medexplain dataset folder (``manifest.csv`` with ``mask_lesion``; reused when present) and
    the image ids of each split."""
    tiles = cut_tiles(preset.images, TILE, TILE)
    splits = split_images(sorted({t["group"] for t in tiles}), preset)
    if not (out / "manifest.csv").is_file():
        split_of = {image: split for split, images in splits.items() for image in images}
        write_manifest(out, [tile_row(out, tile, split_of[tile["group"]]) for tile in tiles])
    return out, splits


# ---- models ------------------------------------------------------------------------------------------------------


def configs(preset: Any, bagnet_args: Mapping[str, Any] | None = None) -> tuple[Config, list[Config]]:
    """The ResNet-18 and one sparse BagNet-17 per lambda (``preset``: any object with ``width``, ``resnet_epochs``,
    ``bagnet_epochs`` and ``lambdas``); ``bagnet_args``: more BagNet arguments."""
    common = {"batch_size": BATCH, "optimizer": "adamw", "lr": 1e-3, "class_weights": "balanced", "monitor": "auroc"}
    resnet = Config(f"resnet18-w{preset.width}", "resnet18",
                    {**common, "epochs": preset.resnet_epochs, "model_args": {"width": preset.width}})  # fmt: skip
    bagnet = {**common, "epochs": preset.bagnet_epochs, "model_args": {"evidence_activation": "relu",
              **(bagnet_args or {})}, "loss": "ce+sparsity", "sparsity_on": "local"}  # fmt: skip
    width = f"-w{bagnet_args['width']}" if bagnet_args and "width" in bagnet_args else ""
    bagnets = [Config(f"sparse-bagnet17-light{width}-lambda{value:g}", "sparse-bagnet17-light",
                      {**bagnet, "sparsity_lambda": value}) for value in preset.lambdas]  # fmt: skip
    return resnet, bagnets


def train_all(preset: Preset, data: Path, work: Path, seed: int, device: str) -> dict[str, Any]:
    """Train every configuration (reused when finished); the validation metrics of each and the chosen BagNet."""
    resnet, bagnets = configs(preset)
    validation = validate((resnet, *bagnets), data, work, seed, device)
    return {"resnet": resnet, "bagnet": choose_bagnet(bagnets, validation), "validation": validation}


def validate(runs: Sequence[Config], data: Path, work: Path, seed: int, device: str) -> dict[str, dict[str, Any]]:
    """Train each of ``runs`` for ``seed`` (reused when finished); per run its validation AUROC, accuracy, balanced
    accuracy and Gini at the chosen epoch, the epoch, and the seconds it took here."""
    validation = {}
    for config in runs:
        started = time.perf_counter()
        _, metrics = trained(config, data, work, seed, device)
        best_epoch = metrics["best_epoch"]
        validation[config.name] = {"auroc": metrics["auroc"], "accuracy": metrics.get("accuracy"),
                                   "balanced_accuracy": metrics.get("balanced_accuracy"), "gini": metrics.get("gini"),
                                   "best_epoch": best_epoch, "seconds": time.perf_counter() - started}  # fmt: skip
        print(f"{config.name} seed {seed}: validation AUROC {metrics['auroc']:.3f} (epoch {best_epoch})", flush=True)
    return validation


def choose_bagnet(bagnets: Sequence[Config], validation: Mapping[str, Mapping[str, Any]]) -> Config:
    """The BagNet with the highest validation AUROC (ties: the largest lambda, the sparsest)."""
    return max(bagnets, key=lambda c: (_finite(validation[c.name]["auroc"]), c.settings["sparsity_lambda"]))


def trained(config: Config, data: Path, work: Path, seed: int, device: str) -> tuple[Path, dict[str, Any]]:
    """Train one seed of ``config`` (reused when finished): its run folder and the validation metrics of the epoch
    chosen on validation AUROC, with ``best_epoch``."""
    metrics = run(config, data, work / "runs", seed, split="val", progress=False, device=device)
    run_dir = run_folder(work, config, seed)
    best_epoch = json.loads((run_dir / "config.json").read_text())["metrics"]["best_epoch"]
    return run_dir, {**metrics, "best_epoch": best_epoch}


def run_folder(work: Path, config: Config, seed: int) -> Path:
    return work / "runs" / f"{config.name}-seed{seed}"


def tile_auroc(run_dir: Path, data: Path, seed: int) -> dict[str, Any]:
    """Test tile AUROC with its bootstrap interval (over tiles), and the lesion probability of every test tile."""
    model, dataset = test_set(run_dir, data)
    labels = dataset.labels.numpy()
    probability = torch.from_numpy(predict(model, dataset)).softmax(1)[:, LESION_CLASS].numpy()
    interval = bootstrap_statistic(lambda y, s: binary_auroc(y == LESION_CLASS, s), labels, probability, seed=seed)
    ids = [dataset[i].meta["id"] for i in range(len(dataset))]
    return {"auroc": interval, "tiles": len(labels), "positive": int(labels.sum()),
            "probability": dict(zip(ids, probability.tolist(), strict=True))}  # fmt: skip


# ---- audits ------------------------------------------------------------------------------------------------------


def audit(run_dir: Path, data: Path, out: Path, methods: Sequence[str], preset: Preset, seed: int, device: str,
          mask: str | None = "lesion", field_mask: str | None = None, metrics: Sequence[str] = SHOWN,
          metric_params: Mapping[str, Mapping[str, Any]] | None = None,
          target: Target = LESION_CLASS, split: str = "test") -> tuple[dict[str, Any], float]:  # fmt: skip
    """The audit's verdict document of the model in ``run_dir`` on ``data``'s test split (maps of ``target``, the
    lesion class, scored with ``metrics``, against the ``mask`` masks (None: a dataset without masks);
    ``field_mask``: the shortcut check's field of view; ``metric_params`` over the audit's own), and seconds per
    tile (recorded in ``OUT.seconds.json`` when it ran, so that a rerun reusing the finished audit reports them).
    A multi-label model (``target="predicted"``) is audited for the label ``mask``: the document is that label's.
    ``preset``: any object with ``ig_steps`` and ``audited_tiles``; ``split``: the split audited."""
    params = {"metric_params": {**AFFORDABLE, **metric_params}} if metric_params else {}
    settings = AuditSettings(methods=tuple(methods), metrics=tuple(metrics), seed=seed, resamples=RESAMPLES,
                             method_params={"integrated-gradients": {"steps": preset.ig_steps}},
                             field_mask=field_mask, **params)  # fmt: skip
    timing = out.with_name(out.name + ".seconds.json")
    started = time.perf_counter()
    document = audit_run(run_dir, data, out, mask=mask, split=split, target=target, settings=settings,
                         max_items=preset.audited_tiles, batch_size=BATCH, device=device, progress=False)  # fmt: skip
    if document["format"] == LABELS_FORMAT:
        out = out / document["labels"][mask]["folder"]
        document = json.loads((out / VERDICT_FILE).read_text())
    if not timing.is_file():
        tiles = len(next(iter(audit_scores(out)[metrics[0]].values())))
        write_text(timing, json.dumps({"seconds_per_tile": (time.perf_counter() - started) / tiles}) + "\n")
    return document, json.loads(timing.read_text())["seconds_per_tile"]


def paired(scores: Mapping[str, Mapping[str, Mapping[str, float]]], ours: str, theirs: str, metric: str,
           seed: int) -> tuple[float, float, float] | None:  # fmt: skip
    """Mean of ``ours - theirs`` on ``metric`` over the tiles both scored, with its 95 % bootstrap interval."""
    if ours not in scores[metric] or theirs not in scores[metric]:
        return None
    ids = [i for i in scores[metric][ours] if i in scores[metric][theirs]]
    differences = [scores[metric][ours][i] - scores[metric][theirs][i] for i in ids]
    finite = [d for d in differences if not math.isnan(d)]
    return bootstrap_interval(finite, resamples=RESAMPLES, seed=seed) if finite else None


def rows_of(model: str, document: Mapping[str, Any], seconds: float) -> list[dict[str, Any]]:
    """Table rows of one audit: each method (verdict, metrics), then each reference map."""
    rows = []
    for entry in document["verdict"]:
        localises = entry["localises"]
        verdict = localises["verdict"] if localises["verdict"] == "n/a" else \
            f"{localises['verdict']} ({len(localises['better_on'])}/{len(localises['of'])})"  # fmt: skip
        rows.append({"model": model, "map": entry["method"], "localises": verdict, "s / tile": seconds,
                     "metrics": {m: _triple(entry["metrics"].get(m)) for m in SHOWN}})  # fmt: skip
    for reference, metrics in document["baselines"].items():
        rows.append({"model": model, "map": reference, "localises": "baseline", "s / tile": None,
                     "metrics": {m: _triple(metrics.get(m)) for m in SHOWN}})  # fmt: skip
    return rows


def _triple(summary: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    if not summary or summary.get("mean") is None:
        return None
    return (summary["mean"], summary["ci_low"], summary["ci_high"])


def _finite(value: float | None) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def best_map(document: Mapping[str, Any], methods: Sequence[str]) -> str:
    """Of ``methods``, the one with the highest mean mask AUROC in the audit (chosen on the test tiles)."""
    means = {row["method"]: _finite(row["metrics"].get("mask-auroc", {}).get("mean")) for row in document["verdict"]}
    return max((m for m in methods if m in means), key=lambda m: means[m])


def comparisons(folders: Mapping[str, Path], documents: Mapping[str, Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """BagNet evidence - the ResNet's best post-hoc method, and each model's best map - each baseline."""
    scores = {model: audit_scores(folder) for model, folder in folders.items()}
    best = best_map(documents["resnet"], RESNET_METHODS)
    both = {metric: {"evidence": scores["bagnet"][metric].get("evidence", {}), best: scores["resnet"][metric][best]}
            for metric in COMPARED}  # fmt: skip
    result: dict[str, Any] = {"resnet_best": best, "evidence_vs_best": {
        metric: paired(both, "evidence", best, metric, seed) for metric in COMPARED}}  # fmt: skip
    against = {}
    for model, method in (("bagnet", "evidence"), ("resnet", best)):
        for reference in BASELINES:
            against[f"{method} - {reference}"] = {
                metric: paired(scores[model], method, reference, metric, seed) for metric in COMPARED}
    result["against_baselines"] = against
    return result


# ---- one seed ----------------------------------------------------------------------------------------------------


def run_seed(size_name: str, preset: Preset, seed: int, device: str, work: Path) -> dict[str, Any]:
    data, splits = write_tiles(preset, work / f"tiles-{TILE}px")
    trained = train_all(preset, data, work, seed, device)
    audited, _ = audit_data(data, work / f"audit-data-seed{seed}", None, seed)
    models = {"resnet": (trained["resnet"], RESNET_METHODS), "bagnet": (trained["bagnet"], BAGNET_METHODS)}
    accuracy, documents, folders, seconds, rows = {}, {}, {}, {}, []
    for model, (config, methods) in models.items():
        run_dir = run_folder(work, config, seed)
        accuracy[model] = tile_auroc(run_dir, data, seed)
        folders[model] = work / f"audit-{config.name}-seed{seed}"
        documents[model], seconds[model] = audit(run_dir, audited, folders[model], methods, preset, seed, device)
        rows += rows_of(config.name, documents[model], seconds[model])
    audited_ids = list(next(iter(audit_scores(folders["resnet"])["mask-auroc"].values())))
    detected = {model: float(np.mean([accuracy[model]["probability"][i] > 0.5 for i in audited_ids]))
                for model in models}  # fmt: skip
    for model in models:
        del accuracy[model]["probability"]
    return {
        "seed": seed, "size": size_name, "preset": asdict(preset), "splits": splits,
        "models": {m: c.name for m, (c, _) in models.items()}, "validation": trained["validation"],
        "accuracy": accuracy, "audited_tiles": len(audited_ids), "predicted_positive": detected,
        "rows": rows, "comparisons": comparisons(folders, documents, seed), "seconds_per_tile": seconds,
        "command": f"python benchmarks/audit_idrid.py --size {size_name} --seeds {seed} --device {device}",
    }  # fmt: skip


# ---- table -------------------------------------------------------------------------------------------------------


def markdown(result: Mapping[str, Any]) -> str:
    """One seed's tables: validation sweep, accuracy, audit, paired differences, time, command."""
    models, accuracy = result["models"], result["accuracy"]
    lines = [f"#### seed {result['seed']}", "", "Images per split (seeded permutation 0): " + "; ".join(
        f"{split} {', '.join(ids)}" for split, ids in result["splits"].items()) + ".", "",
        "Chosen on the validation split (AUROC over validation tiles; each run's epoch likewise):", "",
        "| run | validation AUROC | chosen epoch | validation Gini (evidence) | chosen |",
        "|---|---|---|---|---|"]  # fmt: skip
    for name, entry in result["validation"].items():
        chosen = "yes" if name in models.values() else ""
        lines.append(f"| {name} | {entry['auroc']:.3f} | {entry['best_epoch']} | {cell(entry['gini'])} | {chosen} |")
    lines += ["", "| model | test tiles (positive) | test tile AUROC | audited positive tiles predicted positive |",
              "|---|---|---|---|"]
    for model, name in models.items():
        entry = accuracy[model]
        lines.append(f"| {name} | {entry['tiles']} ({entry['positive']}) | {cell(tuple(entry['auroc']))} | "
                     f"{result['predicted_positive'][model]:.2f} |")  # fmt: skip
    lines += ["", f"Audit on {result['audited_tiles']} positive test tiles (maps of the lesion class); localises = "
              "significantly better than the best reference map (baselines and the other methods' maps on the "
              "randomised model) on k of n localisation metrics, pass when k > n/2:", "",
              "| model | map | localises | " + " | ".join(SHOWN) + " | s / tile |", "|---" * (4 + len(SHOWN)) + "|"]
    for row in result["rows"]:
        cells = [cell(tuple(v) if v else None, 2) for v in row["metrics"].values()]
        lines.append(f"| {row['model']} | {row['map']} | {row['localises']} | " + " | ".join(cells)
                     + f" | {cell(row['s / tile'], 2)} |")  # fmt: skip
    compared = result["comparisons"]
    lines += ["", f"Paired differences over the audited tiles (mean [95 % bootstrap]; > 0: the first map is "
              f"better); the ResNet's best post-hoc method ({compared['resnet_best']}) has the highest mean mask "
              "AUROC on these test tiles:", "", "| difference | " + " | ".join(COMPARED) + " |",
              "|---" * (1 + len(COMPARED)) + "|",
              f"| evidence ({models['bagnet']}) - {compared['resnet_best']} ({models['resnet']}) | "
              + " | ".join(cell(_tuple(compared["evidence_vs_best"][m])) for m in COMPARED) + " |"]  # fmt: skip
    for name, values in compared["against_baselines"].items():
        lines.append(f"| {name} | " + " | ".join(cell(_tuple(values[m])) for m in COMPARED) + " |")
    lines += ["", "s / tile: wall-clock seconds of the whole audit (methods, baselines, randomised model, scores) "
              "per audited tile.", "", "Command:", "", f"    {result['command']}"]
    return "\n".join(lines) + "\n"


def _tuple(value: Sequence[float] | None) -> tuple[float, float, float] | None:
    return tuple(value) if value is not None else None  # type: ignore[return-value]


def header(args: argparse.Namespace, minutes: float) -> str:
    return (preset_header(args, minutes, PRESETS[args.size])
            + f"Intervals: 95 % bootstrap over tiles ({RESAMPLES} resamples; tiles of one image are not independent, "
            "so the intervals are optimistic).\n\n")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return audit_benchmark_main(argv, "idrid", __doc__.splitlines()[0], PRESETS, run_seed, markdown, header)


if __name__ == "__main__":
    sys.exit(main())
