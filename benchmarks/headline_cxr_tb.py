"""Headline shortcut check on chest X-rays (Shenzhen + Montgomery TB): is the attribution inside the lungs?

A ResNet-18 trained with cross-entropy and one trained with SIBnet's guidance losses (Mahapatra et al. 2022),
each explained with Grad-CAM, LRP (epsilon-plus-flat) and integrated gradients; for every test image the share of
the map's |relevance| inside the lung mask (an organ mask, not a lesion: relevance outside the lungs points to
shortcuts such as markers, text or collimation) and whether the map's maximum lies in the lungs. The first row is
the chance level: a uniform map puts the lung area fraction inside the lungs.

    medexplain benchmark cxr-tb [--size smoke|default|full] [--seed K] [--row ROW] [--device cpu|cuda]
    (or: python benchmarks/headline_cxr_tb.py ...; full: 224 px, 30 epochs, for a GPU)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from _bagnet_runs import Config
from _headline import (
    DATA,
    Benchmark,
    Row,
    Size,
    classification_values,
    compute_rows,
    explain,
    finish,
    mean_interval,
    parse,
    row_result,
    score,
    strict_pointing_game,
    test_set,
    train_run,
    write_subset,
)
from medexplain.data import load_dataset
from medexplain.metrics import relevance_mass

SIZES = {
    "smoke": Size({"train": 24, "val": 12, "test": 12}, 32, 1),
    "default": Size(None, 64, 8),
    "full": Size(None, 224, 30),
}
COLUMNS = ("balanced accuracy", "AUROC", "abs. relevance in lungs", "maximum inside lungs", "s / image")
CUSTOM = {"abs. relevance in lungs": partial(relevance_mass, absolute=True),
          "maximum inside lungs": strict_pointing_game}  # fmt: skip
METHODS = {"gradcam": "Grad-CAM", "lrp": "LRP (epsilon-plus-flat)", "ig": "integrated gradients"}
EXPLAINERS = {"gradcam": "gradcam", "lrp": "lrp-epsilon-plus-flat", "ig": "integrated-gradients"}


def rows(size: Size) -> list[Row]:
    """Chance level, then each model (CE, CE + SIBnet) with each method."""
    common = {"epochs": size.epochs, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "class_weights": "balanced"}
    models = {
        "resnet18": ("ResNet-18", Config("resnet18", "resnet18", common)),
        "sibnet": ("SIBnet-trained ResNet-18", Config("resnet18-sibnet", "resnet18", {**common, "loss": "ce+sibnet"})),
    }
    table = [Row("uniform", "uniform map (lung area fraction = chance)", models["resnet18"][1], None)]
    for key, (label, config) in models.items():
        table += [Row(f"{key}-{m}", f"{label} + {name}", config, EXPLAINERS[m]) for m, name in METHODS.items()]
    return table


def compute_row(bench: Benchmark, row: Row, data: Path) -> dict:
    if row.method is None:
        dataset = load_dataset(data, split="test")
        fractions = [float(dataset[i].masks["lung"].mean()) for i in range(len(dataset))]
        return row_result(bench, row, {"abs. relevance in lungs": mean_interval(fractions, bench.seed)})
    run_dir = train_run(bench, row.config, data)
    model, dataset = test_set(run_dir, data, device=bench.device)
    values = classification_values(bench, model, dataset)
    stored, seconds = explain(bench, row, run_dir, dataset, data=data)
    scores, refused = score(bench, stored, dataset, [], mask="lung", custom=CUSTOM)
    values.update({column: scores[column] for column in CUSTOM})
    values["s / image"] = seconds
    return row_result(bench, row, values, refused)


def main() -> None:
    bench = parse("cxr-tb", __doc__.splitlines()[0], SIZES, rows)
    data = write_subset(DATA / "cxr_lung_tb", bench.work / f"data-{bench.size.side}px", bench.size, bench.seed,
                        masks=["lung"], extra_columns=["source"])  # fmt: skip
    torch.manual_seed(bench.seed)
    results = compute_rows(bench, lambda row: compute_row(bench, row, data))
    notes = """
Test split of cxr_lung_tb as shipped (72 normal, 68 TB; Shenzhen and Montgomery mixed, so the hospital itself is a
possible shortcut). Maps explain the predicted class of every test image. "abs. relevance in lungs" is the share
of the map's absolute relevance inside the lung mask (relevance mass with absolute values), to be read against the
chance row; "maximum inside lungs" is the pointing game against the lung mask. Both refuse constant (all-zero) maps,
which are counted below and left out.
"""
    finish(bench, "cxr-tb: is the attribution inside the lungs? (shortcut check)", [(COLUMNS, results)], notes)


if __name__ == "__main__":
    main()
