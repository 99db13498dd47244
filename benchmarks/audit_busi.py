"""BUSI audit (issues 21, 23): a user's own MONAI DenseNet-121, trained with plain PyTorch, audited by the CLI.

What a user does, step by step, and what the script prints:

1. a square copy of BUSI at ``--size``'s side (8-bit PNGs and lesion masks, all images of every split);
2. a MONAI ``DenseNet121(spatial_dims=2, in_channels=1, out_channels=3)`` trained with a plain PyTorch loop (AdamW,
   balanced class weights, horizontal flips), the epoch chosen on the validation split (balanced accuracy, then
   AUROC), saved with ``torch.save(model.state_dict(), ...)``, described by a model card; the same model exported
   with TorchScript and described by a second card;
3. balanced accuracy and AUROC on the whole test split, with 95 % bootstrap intervals;
4. ``medexplain audit`` (the command line) twice on benign and malignant test images (normal ones have no lesion):
   a *localisation* audit (localisation metrics and Gini, every method, the baselines and the randomised model) on
   ``loc_images`` of them, and a *full* audit (every metric: faithfulness, robustness, sanity too) on the first
   ``full_images`` of those, because the model-bound metrics cost far more per image;
5. the verdict table (methods x criteria: "localises" from the localisation audit, "faithful" and
   "randomisation" from the full one), the baselines and randomised-model maps beside, and for every method the
   paired bootstrap interval of its difference with every baseline on every localisation metric;
6. the TorchScript card against the state-dict card: the max |difference| of the maps of every method that runs
   without named layers.

    python benchmarks/audit_busi.py [--size smoke|default|full] [--seeds 0,1,2] [--device cpu|cuda] [--work DIR]
        [--results FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _headline import (
    DATA,
    RESAMPLES,
    Size,
    audit_benchmark_main,
    bootstrap_statistic,
    cell,
    cpu_minutes,
    device_name,
    write_subset,
)
from medexplain.data.writers import write_manifest
from medexplain.files import write_text
from medexplain.metrics.classification import auroc, balanced_accuracy
from medexplain.metrics.summary import bootstrap_interval
from medexplain.models import load
from medexplain.workflows.audit import BASELINES, LOCALISATION, RANDOM_MODEL, applicable_methods, audit_scores
from medexplain.workflows.explain import build_explainers

CLASSES = ("normal", "benign", "malignant")
DIFFERENCE_METRICS = ("mask-auroc", "pointing-game", "relevance-mass", "dice", "iou")
SHOWN = ("mask-auroc", "pointing-game", "relevance-mass", "dice", "deletion-auc", "insertion-auc", "gini")


@dataclass(frozen=True)
class Preset:
    """One size of the benchmark.

    Attributes:
        side: image side in pixels; epochs: training epochs (the best validation epoch is kept).
        per_split: images per split of the copy (None: all).
        loc_images, full_images: lesion test images of the localisation and of the full audit (None: all).
        method_params, metric_params: the audits' parameters (empty: the audit's own defaults).
        compared_images: test images on which the TorchScript card's maps are compared.
        methods: the audited methods (None: every one the model allows).
    """

    side: int
    epochs: int
    per_split: Mapping[str, int] | None
    loc_images: int | None
    full_images: int | None
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    compared_images: int = 4
    methods: tuple[str, ...] | None = None


CHEAP_METHODS = {"integrated-gradients": {"steps": 16}, "smoothgrad": {"samples": 10},
                 "occlusion": {"window": 16, "stride": 16}}  # fmt: skip
CHEAP_METRICS = {"deletion-auc": {"steps": 10}, "insertion-auc": {"steps": 10},
                 "faithfulness-correlation": {"runs": 20}, "max-sensitivity": {"samples": 3},
                 "model-randomisation": {"layers": 3}}  # fmt: skip
BATCH = 4
"""Images per audit batch: integrated gradients and SmoothGrad send steps x batch images through the network at
once, and 16 x 16 DenseNet-121 passes with gradients at 128 px held about 10 GB."""
PRESETS = {
    "smoke": Preset(32, 1, {"train": 24, "val": 12, "test": 12}, 3, 1,
                    {**CHEAP_METHODS, "occlusion": {"window": 8, "stride": 8}},
                    {**CHEAP_METRICS, "model-randomisation": {"layers": 2}}, compared_images=2,
                    methods=("saliency", "integrated-gradients", "gradcam", "lrp-epsilon-plus-flat")),
    "default": Preset(128, 4, None, 24, 4, CHEAP_METHODS, CHEAP_METRICS),
    "full": Preset(224, 40, None, None, 40),
}  # fmt: skip
"""``default`` fits one seed in about 45 min on one core of a shared 2-core CPU; ``full`` is meant for a GPU;
``smoke`` (the tests) audits four methods: one per family (gradient, path integral, CAM, LRP)."""


# ---- a user's model: plain PyTorch ------------------------------------------------------------------------------


def read_split(data: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(N, 1, H, W)`` float32 pixel values 0..255, labels ``(N,)`` and ids of ``split``, read with Pillow."""
    from PIL import Image

    with (data / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    images = np.stack([np.asarray(Image.open(data / r["image"]).convert("L"), dtype=np.float32) for r in rows])
    return images[:, None], np.asarray([int(r["label"]) for r in rows]), [r["id"] for r in rows]


def densenet() -> torch.nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(**ARCHITECTURE)


ARCHITECTURE = {"spatial_dims": 2, "in_channels": 1, "out_channels": len(CLASSES)}


def probabilities(model: torch.nn.Module, images: torch.Tensor, device: str, batch: int = 32) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [model(images[i : i + batch].to(device)).softmax(1).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).double().numpy()


def train(data: Path, out: Path, epochs: int, seed: int, device: str) -> dict[str, Any]:
    """Train, keep the best validation epoch, save ``model.pth`` and ``model.card.json`` (and the TorchScript
    ``model.ts.pt`` with ``torchscript.card.json``) in ``out``; reused when they exist."""
    card = out / "model.card.json"
    if card.is_file() and (out / "training.json").is_file():
        return json.loads((out / "training.json").read_text())
    started = time.perf_counter()
    train_x, train_y, _ = read_split(data, "train")
    val_x, val_y, _ = read_split(data, "val")
    mean, std = float(train_x.mean()), float(train_x.std())
    x, vx = (torch.from_numpy((images - mean) / std) for images in (train_x, val_x))
    y = torch.from_numpy(train_y)
    torch.manual_seed(seed)
    model = densenet().to(device)
    counts = np.bincount(train_y, minlength=len(CLASSES))
    weights = torch.tensor(len(train_y) / (len(CLASSES) * counts), dtype=torch.float32, device=device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    history, best, best_state = [], None, None
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order), 16):
            index = order[start : start + 16]
            batch = x[index]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(-1)
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(batch.to(device)), y[index].to(device), weight=weights)
            loss.backward()
            optimiser.step()
        p = probabilities(model, vx, device)
        score = (balanced_accuracy(val_y, p.argmax(1)), auroc(val_y, p))
        history.append({"epoch": epoch, "val_balanced_accuracy": score[0], "val_auroc": score[1]})
        print(f"epoch {epoch}: validation balanced accuracy {score[0]:.3f}, AUROC {score[1]:.3f}", flush=True)
        if best is None or score > best:
            best, best_state = score, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(best_state, out / "model.pth")
    model = densenet()
    model.load_state_dict(best_state)
    model.eval()
    torch.jit.save(torch.jit.script(model), str(out / "model.ts.pt"))
    common = {"preprocessing": {"intensity": {"mean": [mean], "std": [std]}}, "classes": list(CLASSES),
              "output": "softmax"}  # fmt: skip
    write_text(out / "torchscript.card.json",
               json.dumps({"torchscript": "model.ts.pt", "in_channels": 1, **common}, indent=1) + "\n")  # fmt: skip
    chosen = max(history, key=lambda h: (h["val_balanced_accuracy"], h["val_auroc"]))
    summary = {"epochs": epochs, "chosen_epoch": chosen["epoch"], "history": history, "mean": mean, "std": std,
               "seconds": time.perf_counter() - started}  # fmt: skip
    write_text(out / "training.json", json.dumps(summary, indent=1) + "\n")
    write_text(card, json.dumps({"architecture": "monai:DenseNet121", "arguments": ARCHITECTURE,
                                 "weights": "model.pth", **common}, indent=1) + "\n")  # fmt: skip
    return summary


def accuracy(data: Path, model_dir: Path, seed: int, device: str) -> dict[str, tuple[float, float, float]]:
    """Balanced accuracy and macro one-vs-rest AUROC of the saved model (on ``device``) on the whole test split, with
    intervals; the images go through the card's preprocessing as the audit reads it (checked against the training's)."""
    from medexplain.models import run_dataset

    network, config = load(model_dir / "model.card.json", device)
    dataset = run_dataset(config, data, "test")
    images, labels, _ = read_split(data, "test")
    training = json.loads((model_dir / "training.json").read_text())
    mine = torch.from_numpy((images - training["mean"]) / training["std"])
    theirs = torch.stack([dataset[i].image for i in range(len(dataset))])
    if not torch.allclose(mine, theirs, atol=1e-5):
        raise SystemExit(f"the card's preprocessing differs from training: {float((mine - theirs).abs().max())}")
    p = probabilities(network, mine, device)
    return {"balanced accuracy": bootstrap_statistic(lambda t, q: balanced_accuracy(t, q.argmax(1)), labels, p,
                                                     seed=seed),
            "AUROC": bootstrap_statistic(auroc, labels, p, seed=seed)}  # fmt: skip


# ---- the audits: the command line ------------------------------------------------------------------------------


def audit_data(data: Path, out: Path, count: int | None, seed: int, masks: Sequence[str] = ("mask_lesion",),
               column: str = "label", split: str = "test") -> tuple[Path, int]:  # fmt: skip
    """A copy of ``data``'s training split (for the mean-mask prior) and of ``count`` images of ``split`` whose
    ``column`` is positive (benign or malignant; a seeded permutation, class proportions kept; all when None), with
    their ``masks`` columns; returns it and its images of ``split``."""
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lesions = [r for r in rows if r["split"] == split and int(r[column]) > 0]
    order = [lesions[i] for i in np.random.default_rng(seed).permutation(len(lesions))]
    if count is not None:
        share = {k: round(count * sum(int(r[column]) == k for r in lesions) / len(lesions)) for k in (1, 2)}
        taken = dict.fromkeys(share, 0)
        picked = []
        for row in order:
            if taken[int(row[column])] < share[int(row[column])]:
                taken[int(row[column])] += 1
                picked.append(row)
        order = picked[:count]
    if not (out / "manifest.csv").is_file():
        chosen = [r for r in rows if r["split"] == "train"] + order
        for row in chosen:
            for column in ("image", *masks):
                (out / row[column]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data / row[column], out / row[column])
        write_manifest(out, chosen)
    return out, len(order)


def audit_command(card: Path, data: Path, out: Path, preset: Preset, seed: int, device: str, full: bool) -> list[str]:
    """``medexplain audit ...`` arguments (without the program name)."""
    arguments = ["audit", "--model", str(card), "--data", str(data), "--mask", "lesion", "--out", str(out),
                 "--seed", str(seed), "--device", device, "--batch-size", str(BATCH), "--no-progress"]  # fmt: skip
    if preset.methods:
        arguments += ["--methods", ",".join(preset.methods)]
    if not full:
        arguments += ["--metrics", ",".join([*LOCALISATION, "gini"])]
    if preset.method_params:
        arguments += ["--method-params", json.dumps(preset.method_params, separators=(",", ":"))]
    metric_params = {k: v for k, v in preset.metric_params.items() if full}
    if metric_params:
        arguments += ["--metric-params", json.dumps(metric_params, separators=(",", ":"))]
    return arguments


def run_audit(arguments: list[str], out: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The audit's verdict document and the wall-clock seconds of the command and its phases (those recorded
    when it ran, if it was already done)."""
    timing = out.with_name(out.name + ".seconds.json")
    if (out / "verdict.json").is_file():
        recorded = json.loads(timing.read_text()) if timing.is_file() else {}
        return json.loads((out / "verdict.json").read_text()), recorded
    started = time.time()
    # the audit runs on as many threads as this benchmark (one): thread counts change float rounding, hence maps
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    code = subprocess.run([sys.executable, "-m", "medexplain", *arguments], env={**os.environ, **threads},
                          check=False).returncode  # fmt: skip
    if code != 0:
        raise SystemExit(f"medexplain {' '.join(arguments)} exited with {code}")
    seconds = {"total": time.time() - started, **phases(out, started)}
    write_text(timing, json.dumps(seconds, indent=1) + "\n")
    return json.loads((out / "verdict.json").read_text()), seconds


PHASES = {"set-up (methods tried, prior)": "explanations/.medexplain.lock",
          "explain (methods, baselines)": "explanations/index.json",
          "explain (randomised model)": "randomised/index.json",
          "score (methods, baselines)": "scores/summary.json",
          "score (randomised model)": "scores-randomised/summary.json", "verdict": "verdict.json"}  # fmt: skip


def phases(out: Path, started: float) -> dict[str, float]:
    """Seconds of each phase of a finished audit, from the times its files were written."""
    seconds, previous = {}, started
    for phase, file in PHASES.items():
        if (out / file).exists():
            finished = (out / file).stat().st_mtime
            seconds[phase], previous = finished - previous, finished
    return seconds


def paired_differences(document: Mapping[str, Any], folder: Path, seed: int) -> dict[str, dict[str, Any]]:
    """Per method and localisation metric: the paired bootstrap interval of (method - reference) over images for
    every reference map (baselines and the randomised model's maps but the method's own), and the smallest lower
    bound (oriented so that > 0 means the method is better)."""
    from medexplain.metrics.registry import metric_info

    scores = audit_scores(folder)
    methods = [row["method"] for row in document["verdict"]]
    result: dict[str, dict[str, Any]] = {}
    for method in methods:
        for metric in (m for m in DIFFERENCE_METRICS if m in scores and method in scores[m]):
            sign = 1.0 if metric_info(metric).higher_is_better else -1.0
            references = [r for r in document["baselines"] if r in scores[metric] and r != method + RANDOM_MODEL]
            intervals = {}
            for reference in references:
                ids = [i for i in scores[metric][method] if i in scores[metric][reference]]
                differences = [sign * (scores[metric][method][i] - scores[metric][reference][i]) for i in ids]
                differences = [d for d in differences if not math.isnan(d)]
                intervals[reference] = bootstrap_interval(differences, resamples=RESAMPLES, seed=seed)
            worst = min(intervals, key=lambda r: intervals[r][1]) if intervals else None
            result.setdefault(method, {})[metric] = {
                "worst_reference": worst, "interval": intervals.get(worst),
                "beats_every_reference": bool(intervals) and all(v[1] > 0 for v in intervals.values()),
            }  # fmt: skip
    return result


# ---- TorchScript -----------------------------------------------------------------------------------------------


def torchscript_differences(model_dir: Path, data: Path, methods: Sequence[str], preset: Preset) -> dict[str, Any]:
    """Max |map(state-dict card) - map(TorchScript card)| per method that runs on the TorchScript model, on the
    first ``preset.compared_images`` audited images (on the CPU, whatever ``--device``: a few images, and the same
    kernels for both); the others with the reason they do not run."""
    from medexplain.models import run_dataset

    eager, config = load(model_dir / "model.card.json")
    scripted, _ = load(model_dir / "torchscript.card.json")
    dataset = run_dataset(config, data, "test")
    x = torch.stack([dataset[i].image for i in range(min(preset.compared_images, len(dataset)))])
    usable, skipped = applicable_methods(scripted, x[:1], methods, None, preset.method_params)
    differences, scales = {}, {}
    for name, explainer in usable.items():
        reference = build_explainers([name], params={name: preset.method_params[name]}
                                     if name in preset.method_params else None)[name]  # fmt: skip
        ours, theirs = reference(eager, x, "predicted").maps, explainer(scripted, x, "predicted").maps
        differences[name], scales[name] = float((ours - theirs).abs().max()), float(ours.abs().max())
    return {"max_abs_difference": differences, "max_abs_map": scales, "not_applicable": skipped, "images": len(x)}


# ---- tables ----------------------------------------------------------------------------------------------------


def verdict_table(localisation: Mapping[str, Any], full: Mapping[str, Any],
                  shown: Sequence[str] = SHOWN) -> list[dict[str, Any]]:  # fmt: skip
    """One row per method (the localisation audit's ranking), criteria and the ``shown`` metrics; then one per
    reference map."""
    rows_loc = {r["method"]: r for r in localisation["verdict"]}
    rows_full = {r["method"]: r for r in full["verdict"]}
    rows = []
    for method in localisation["ranking"]:
        metrics = {**rows_full.get(method, {}).get("metrics", {}), **rows_loc[method]["metrics"]}
        rows.append({"map": method, "localises": _criterion(rows_loc[method]["localises"]),
                     "faithful": _criterion(rows_full.get(method, {}).get("faithful")),
                     "randomisation": _randomisation(rows_full.get(method, {}).get("randomisation")),
                     "shortcuts": _shortcuts(localisation, method),
                     "metrics": {m: _interval(metrics.get(m)) for m in shown}})  # fmt: skip
    for reference, metrics_loc in localisation["baselines"].items():
        metrics = {**full["baselines"].get(reference, {}), **metrics_loc}
        rows.append({"map": reference, "localises": "baseline", "faithful": "baseline", "randomisation": "baseline",
                     "shortcuts": _shortcuts(localisation, reference),
                     "metrics": {m: _interval(metrics.get(m)) for m in shown}})  # fmt: skip
    return rows


def _shortcuts(document: Mapping[str, Any], name: str) -> str:
    """The regions the audit's shortcut check flags for the map ``name`` ("n/a": not checked)."""
    checked = {region: per[name] for region, per in document.get("shortcuts", {}).items() if name in per}
    if not checked:
        return "n/a"
    return ", ".join(region for region, entry in checked.items() if entry["flagged"]) or "none"


def _criterion(row: Mapping[str, Any] | None) -> str:
    if not row:
        return "n/a"
    if row["verdict"] == "n/a":
        return "n/a"
    return f"{row['verdict']} ({len(row['better_on'])}/{len(row['of'])})"


def _randomisation(row: Mapping[str, Any] | None) -> str:
    if not row or row["verdict"] == "n/a":
        return "n/a"
    return f"{row['verdict']} ({row['similarity']:.2f}, upper {row['ci_high']:.2f})"


def _interval(summary: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    if not summary or summary.get("mean") is None:
        return None
    return (summary["mean"], summary["ci_low"], summary["ci_high"])


def markdown(result: Mapping[str, Any]) -> str:
    """The seed's tables: verdict, paired differences, TorchScript, accuracy, time, commands."""
    preset = result["preset"]
    lines = [f"#### seed {result['seed']}", "",
             f"Accuracy on the whole test split ({result['test_images']} images), chosen epoch "
             f"{result['training']['chosen_epoch']} of {result['training']['epochs']} (validation balanced accuracy):"
             f" balanced accuracy {cell(tuple(result['accuracy']['balanced accuracy']))}, macro AUROC "
             f"{cell(tuple(result['accuracy']['AUROC']))}.", "",
             f"Verdict: localises from the localisation audit ({result['images']['localisation']} lesion images), "
             f"faithful and randomisation from the full audit ({result['images']['full']} lesion images); "
             "(k/n) = metrics on which the method is significantly better than the best baseline (localises) or "
             "the random map (faithful); randomisation = mean rank similarity after re-drawing the top layers and "
             "its upper 95 % bound (pass below 0.5); shortcuts = regions (image border, background) where the map's "
             "relevance is out of proportion to the region's area (the audit's shortcut check).", "",
             "| map | localises | faithful | randomisation | shortcuts | " + " | ".join(SHOWN) + " |",
             "|---" * (5 + len(SHOWN)) + "|"]  # fmt: skip
    for row in result["verdict_table"]:
        cells = [cell(tuple(v) if v else None, 2) for v in row["metrics"].values()]
        lines.append(f"| {row['map']} | {row['localises']} | {row['faithful']} | {row['randomisation']} | "
                     f"{row['shortcuts']} | " + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "Paired differences (method - reference, oriented so > 0 is better; 95 % bootstrap over images) "
              "against the reference map with the lowest lower bound; **yes** = the interval is above zero against "
              "every baseline and every other method's randomised-model map:", "",
              "| method | " + " | ".join(DIFFERENCE_METRICS) + " |", "|---" * (1 + len(DIFFERENCE_METRICS)) + "|"]
    for method, metrics in result["differences"].items():
        cells = []
        for metric in DIFFERENCE_METRICS:
            entry = metrics.get(metric)
            if not entry or not entry["interval"]:
                cells.append("-")
                continue
            mark = "**yes**" if entry["beats_every_reference"] else "no"
            cells.append(f"{mark} {cell(tuple(entry['interval']), 3)} vs {entry['worst_reference']}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    winners = result["beats_every_baseline"]
    lines += ["", "Methods whose paired interval is above zero against every reference map on at least one "
              "localisation metric: " + (", ".join(f"{m} ({', '.join(v)})" for m, v in winners.items()) or "none")
              + ".", "", "TorchScript card vs state-dict card, max |map difference| on "
              f"{result['torchscript']['images']} images: "
              + ", ".join(f"{m} {d:.3g} (max |map| {result['torchscript']['max_abs_map'][m]:.3g})"
                          for m, d in result["torchscript"]["max_abs_difference"].items())
              + "; not applicable to TorchScript: "
              + (", ".join(sorted(result["torchscript"]["not_applicable"])) or "none") + ".", ""]  # fmt: skip
    timing = result["seconds"]
    lines.append(f"Time (wall-clock, this run): training {timing['training'] / 60:.1f} min.")
    for kind in ("localisation", "full"):
        if not timing[kind]:
            lines.append(f"{kind} audit: reused from the work folder (no time recorded).")
            continue
        per_image = timing[kind]["total"] / result["images"][kind]
        parts = ", ".join(f"{p} {v:.0f} s" for p, v in timing[kind].items() if p != "total")
        lines.append(f"{kind} audit: {timing[kind]['total'] / 60:.1f} min = {per_image:.1f} s / image ({parts}).")
    lines += ["", "Commands:", "",
              f"    {result['command']}", f"    {result['commands']['localisation']}",
              f"    {result['commands']['full']}", "",
              f"Preset `{result['size']}`: {preset['side']} px, {preset['epochs']} epochs, method parameters "
              f"{json.dumps(preset['method_params']) or '{}'}, metric parameters "
              f"{json.dumps(preset['metric_params']) or '{}'} (empty: the audit's defaults)."]  # fmt: skip
    return "\n".join(lines) + "\n"


SUMMARISED = ("mask-auroc", "pointing-game")


def seeds_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """The seeds side by side: per method and baseline map, the mean over seeds of each ``SUMMARISED`` metric's
    estimate with the per-seed estimates, and the verdict of every seed; methods by mean mask AUROC."""
    seeds = [r["seed"] for r in results]
    tables = [{row["map"]: row for row in r["verdict_table"] if not row["map"].endswith(RANDOM_MODEL)}
              for r in results]  # fmt: skip
    maps = [m for m in tables[0] if all(m in t for t in tables)]
    estimates = {m: {metric: [_estimate(t[m]["metrics"].get(metric)) for t in tables] for metric in SUMMARISED}
                 for m in maps}  # fmt: skip
    methods = sorted((m for m in maps if not m.startswith("baseline-")),
                     key=lambda m: -_mean(estimates[m][SUMMARISED[0]]))  # fmt: skip
    per_seed = "seed " + " / ".join(str(s) for s in seeds)
    lines = [f"#### {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean over seeds ({per_seed})", "",
             "Accuracy on the whole test split, " + per_seed + ": balanced accuracy "
             + " / ".join(f"{r['accuracy']['balanced accuracy'][0]:.3f}" for r in results) + ", macro AUROC "
             + " / ".join(f"{r['accuracy']['AUROC'][0]:.3f}" for r in results) + ". Methods whose paired interval "
             "is above zero against every reference map on some localisation metric, " + per_seed + ": "
             + " / ".join(", ".join(r["beats_every_baseline"]) or "none" for r in results) + ".", "",
             "| map | " + " | ".join(f"{m} mean ({per_seed})" for m in SUMMARISED)
             + f" | localises ({per_seed}) | faithful ({per_seed}) | randomisation ({per_seed}) |",
             "|---" * (4 + len(SUMMARISED)) + "|"]  # fmt: skip
    for m in [*methods, *(m for m in maps if m.startswith("baseline-"))]:
        cells = [f"{_mean(v):.2f} ({' / '.join(f'{x:.2f}' for x in v)})" for v in estimates[m].values()]
        verdicts = [" / ".join(t[m][criterion] for t in tables) for criterion in ("localises", "faithful")]
        verdicts.append(" / ".join(t[m]["randomisation"].split(" (")[0] for t in tables))
        lines.append(f"| {m} | " + " | ".join([*cells, *(["-"] * 3 if m.startswith("baseline-") else verdicts)]) + " |")
    return "\n".join(lines) + "\n"


def _estimate(interval: Sequence[float] | None) -> float:
    return math.nan if interval is None else float(interval[0])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def shell(arguments: Sequence[str]) -> str:
    return "medexplain " + " ".join(shlex.quote(a) for a in arguments)


# ---- one seed ----------------------------------------------------------------------------------------------------


def run_seed(size_name: str, preset: Preset, seed: int, device: str, work: Path) -> dict[str, Any]:
    data = write_subset(DATA / "busi", work / f"data-{preset.side}px", Size(preset.per_split, preset.side,
                        preset.epochs), 0, masks=["lesion"])  # fmt: skip
    model_dir = work / f"model-seed{seed}"
    training = train(data, model_dir, preset.epochs, seed, device)
    card = model_dir / "model.card.json"
    folders, counts = {}, {}
    for kind, count in (("localisation", preset.loc_images), ("full", preset.full_images)):
        folders[kind], counts[kind] = audit_data(data, work / f"audit-{kind}-seed{seed}", count, seed)
    documents, seconds, commands = {}, {"training": training["seconds"]}, {}
    for kind, folder in folders.items():
        out = work / f"out-{kind}-seed{seed}"
        arguments = audit_command(card, folder, out, preset, seed, device, full=kind == "full")
        commands[kind] = shell(arguments)
        print(commands[kind], flush=True)
        documents[kind], seconds[kind] = run_audit(arguments, out)
    differences = paired_differences(documents["localisation"], work / f"out-localisation-seed{seed}", seed)
    winners = {m: [k for k, v in metrics.items() if v["beats_every_reference"]] for m, metrics in differences.items()}
    methods = [r["method"] for r in documents["localisation"]["verdict"]]
    test_images = len(read_split(data, "test")[1])
    return {
        "seed": seed, "size": size_name, "preset": asdict(preset), "training": training,
        "accuracy": accuracy(data, model_dir, seed, device), "test_images": test_images, "images": counts,
        "verdict_table": verdict_table(documents["localisation"], documents["full"]),
        "differences": differences, "beats_every_baseline": {m: v for m, v in winners.items() if v},
        "torchscript": torchscript_differences(model_dir, folders["full"], methods, preset),
        "seconds": seconds, "commands": commands,
        "command": f"python benchmarks/audit_busi.py --size {size_name} --seeds {seed} --device {device}",
        "not_applicable": documents["localisation"]["not_applicable"],
        "cam_layer": documents["localisation"]["cam_layer"],
    }  # fmt: skip


def header(args: argparse.Namespace, minutes: float) -> str:
    return (f"Preset `{args.size}`, seeds {args.seeds}{device_name(args.device) or ', device cpu'}, "
            f"{torch.get_num_threads()} torch thread(s), {cpu_minutes():.1f} min CPU time (this run and its audit "
            f"commands; work reused from the folder not counted); baselines {', '.join(BASELINES)} and every "
            "method's maps on the randomised model.\n\n")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return audit_benchmark_main(argv, "busi", __doc__.splitlines()[0], PRESETS, run_seed, markdown, header,
                                seeds_summary)


if __name__ == "__main__":
    sys.exit(main())
