"""Headline multi-label chest X-rays (NIH ChestX-ray14 subset, 14 findings, 64 px): LRP vs Grad-CAM per label.

After Alam, Baldvinsson & Wang (IEEE CBMS 2022), quantified: a multi-label (sigmoid, BCE) ResNet-18 on the 14
findings of ``nih_cxr1000``; per-label Grad-CAM and LRP (epsilon-plus-flat) maps of every test image. Granularity
of the maps of the findings present in each image (entropy of |map|, share of |relevance| in the top 1 % of pixels,
number of connected blobs of the Otsu-binarised map) and, for the test images with a bounding box, localisation
of the map of the boxed finding (pointing game, share of |relevance| inside the box). Per-label AUROC with
bootstrap intervals in a second table. The ResNet-18 keeps the input resolution in its stem (``small_input``) so
that Grad-CAM has an 8 x 8 grid at 64 px; its width is reduced to fit a CPU.

    medexplain benchmark nih-multilabel [--size smoke|default|full] [--seed K] [--row ROW] [--device cpu|cuda]
    (or: python benchmarks/headline_nih.py ...; full: 64 px, the only size the subset ships, 60 epochs, width 64)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from _bagnet_runs import Config
from _headline import (
    DATA,
    Benchmark,
    Row,
    Size,
    bootstrap_statistic,
    compute_rows,
    explain,
    finish,
    mean_interval,
    parse,
    predict,
    row_result,
    strict_pointing_game,
    test_set,
    train_run,
    write_subset,
)
from medexplain.data.writers import png_bytes, write_file
from medexplain.errors import MedexplainError
from medexplain.metrics import binarise, entropy, relevance_mass, top_k_mass
from medexplain.metrics.classification import binary_auroc

SOURCE = DATA / "nih_cxr1000"
BOX_FINDINGS = {"Infiltrate": "Infiltration"}  # box file name -> label name, where they differ
SIZES = {
    "smoke": Size({"train": 32, "val": 12, "test": 16}, 32, 1),
    "default": Size(None, 64, 12),
    "full": Size(None, 64, 60),
}
WIDTHS = {"smoke": 8, "default": 16, "full": 64}
MAP_COLUMNS = ("entropy (nats)", "top-1 % mass", "blobs", "box: pointing game", "box: abs. relevance in box",
               "s / image")  # fmt: skip
AUROC_COLUMNS = ("test positives", "AUROC")


def rows(size: Size) -> list[Row]:
    """Per-label AUROC of the classifier, then its Grad-CAM and LRP maps."""
    width = next(WIDTHS[name] for name, s in SIZES.items() if s == size)
    settings = {"epochs": size.epochs, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "loss": "bce",
                "model_args": {"small_input": True, "width": width}}  # fmt: skip
    config = Config(f"resnet18-w{width}-bce", "resnet18", settings)
    return [
        Row("auroc", "per-label AUROC", config, None),
        Row("resnet18-gradcam", "ResNet-18 + Grad-CAM", config, "gradcam"),
        Row("resnet18-lrp", "ResNet-18 + LRP (epsilon-plus-flat)", config, "lrp-epsilon-plus-flat"),
    ]


def boxes(side: int) -> dict[str, tuple[str, float, float, float, float]]:
    """Image id -> (finding label name, x, y, w, h) scaled from 64 px to ``side``."""
    scale = side / 64
    with (SOURCE / "boxes_64px.csv").open(newline="") as handle:
        return {
            Path(r["image"]).stem: (BOX_FINDINGS.get(r["finding"], r["finding"]),
                                    *(float(r[k]) * scale for k in ("x", "y", "w", "h")))
            for r in csv.DictReader(handle)
        }  # fmt: skip


def box_mask_writer(side: int):
    """``write_subset`` hook: a ``box`` mask (empty without a box) and the boxed finding of each image."""
    table = boxes(side)

    def decorate(out: Path, sample: Any, row: dict[str, object]) -> None:
        item = str(sample.meta["id"])
        mask = np.zeros(sample.image.shape[1:], dtype=bool)
        finding = ""
        if item in table:
            finding, x, y, w, h = table[item]
            mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        row["mask_box"] = write_file(out, f"masks/box/{item}.png", png_bytes(mask))
        row["box_finding"] = finding

    return decorate


def blobs(one: torch.Tensor) -> float:
    """Connected components (8-connected in 2D) of the Otsu-binarised map ``(*spatial)``."""
    binary = binarise(one[None], "otsu")[0].numpy()
    return float(ndimage.label(binary, structure=np.ones((3,) * binary.ndim))[1])


def label_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of one label's ``(N,)`` 0/1 targets and scores (NaN without positives or negatives)."""
    return binary_auroc(targets > 0.5, scores)


def auroc_rows(bench: Benchmark, row: Row, data: Path) -> list[dict]:
    run_dir = train_run(bench, row.config, data)
    model, dataset = test_set(run_dir, data, device=bench.device)
    targets = torch.stack([dataset[i].labels for i in range(len(dataset))]).numpy()
    scores = torch.from_numpy(predict(model, dataset)).sigmoid().numpy()
    results = []
    for k, name in enumerate(dataset.label_names):
        interval = bootstrap_statistic(label_auroc, targets[:, k], scores[:, k], seed=bench.seed)
        values = {"test positives": str(int(targets[:, k].sum())), "AUROC": interval}
        results.append({**row_result(bench, row, values), "label": name})
    mean = bootstrap_statistic(
        lambda t, s: float(np.nanmean([label_auroc(t[:, j], s[:, j]) for j in range(t.shape[1])])),
        targets, scores, seed=bench.seed,
    )  # fmt: skip
    results.append({**row_result(bench, row, {"AUROC": mean}), "label": "mean over labels (unweighted)"})
    return results


def map_row(bench: Benchmark, row: Row, data: Path) -> dict:
    run_dir = train_run(bench, row.config, data)
    _, dataset = test_set(run_dir, data, device=bench.device)
    stored, seconds = explain(bench, row, run_dir, dataset, target="all", data=data)
    granularity: dict[str, list[float]] = {"entropy (nats)": [], "top-1 % mass": [], "blobs": []}
    located: dict[str, list[float]] = {"box: pointing game": [], "box: abs. relevance in box": []}
    refused = {"constant maps of present findings": 0, "box: constant maps": 0}
    for item in stored.items:
        sample = dataset[item.index]
        maps = stored.load(item, row.method)
        for k in torch.nonzero(sample.labels > 0.5).flatten().tolist():
            one = maps[item.targets.index(k)][None]
            refused["constant maps of present findings"] += int(one.max() == one.min())
            granularity["entropy (nats)"].append(float(entropy(one)))
            granularity["top-1 % mass"].append(float(top_k_mass(one, fraction=0.01)))
            granularity["blobs"].append(blobs(one[0]))
        finding = sample.meta.get("box_finding", "")
        if finding:
            one, box = maps[item.targets.index(dataset.label_names.index(finding))][None], sample.masks["box"]
            try:
                located["box: pointing game"].append(float(strict_pointing_game(one, box)))
                located["box: abs. relevance in box"].append(float(relevance_mass(one, box, absolute=True)))
            except MedexplainError:  # a constant (all-zero) map: no maximum, no mass
                refused["box: constant maps"] += 1
    values: dict[str, Any] = {name: mean_interval(v, bench.seed) for name, v in {**granularity, **located}.items()}
    values["s / image"] = seconds
    return row_result(bench, row, values, refused)


def main() -> None:
    bench = parse("nih-multilabel", __doc__.splitlines()[0], SIZES, rows)
    data = write_subset(SOURCE, bench.work / f"data-{bench.size.side}px", bench.size, bench.seed,
                        extra_columns=["patient_id"], decorate=box_mask_writer(bench.size.side))  # fmt: skip
    torch.manual_seed(bench.seed)
    computed = compute_rows(bench, lambda row: auroc_rows(bench, row, data) if row.method is None
                            else [map_row(bench, row, data)])  # fmt: skip
    flat = [r for rows_of_one in computed for r in rows_of_one]
    maps = [r for r in flat if r["row"] != "auroc"]
    aurocs = [r for r in flat if r["row"] == "auroc"]
    notes = """
Test split of nih_cxr1000 as shipped (268 images, grouped by patient). Granularity is over the maps of the
findings present in each test image (n = positive image-label pairs); a lower entropy, a higher top-1 % mass and
fewer blobs mean a more concentrated map (an all-zero map counts as uniform, with 0 blobs; such maps are counted
below). Box localisation uses the test images with a box in boxes_64px.csv (7, findings Atelectasis,
Infiltration, Pneumonia; "Infiltrate" boxes are matched to the Infiltration label) and the map of the boxed
finding (constant maps left out and counted); with n <= 7 its intervals are wide. Rare labels have few or no test
positives (AUROC n/a when none).
"""
    finish(bench, "nih-multilabel: per-label Grad-CAM vs LRP on a multi-label chest X-ray classifier",
           [(MAP_COLUMNS, maps), (AUROC_COLUMNS, aurocs)], notes)  # fmt: skip


if __name__ == "__main__":
    main()
