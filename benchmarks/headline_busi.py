"""Headline table on BUSI (breast ultrasound, 3 classes, lesion masks): which explanation can I trust?

Post-hoc explanations of a ResNet-18 (Grad-CAM, LRP epsilon-plus-flat, integrated gradients), the evidence maps of
an inherently interpretable BagNet trained without (lambda 0) and with the sparsity penalty (Djoumessi et al.
2023), and Grad-CAM of a ResNet-18 trained with SIBnet's guidance losses (Mahapatra et al. 2022). All models:
same data, augmentation, AdamW, cosine schedule, balanced class weights, epochs; the run keeps the best
validation-AUROC epoch. Maps explain the predicted class of every test image; localisation metrics use the
lesion mask (normal images have none and are left out of them); Dice / HD95 on Otsu-binarised maps; deletion
AUC: class probability while the most relevant pixels are set to 0 (lower is better).

    medexplain benchmark busi [--full] [--seed K] [--row ROW]      (or: python benchmarks/headline_busi.py ...)
"""

from __future__ import annotations

from functools import partial

import numpy as np

from _bagnet_runs import Config
from _headline import (
    DATA,
    Benchmark,
    Row,
    Size,
    bootstrap_statistic,
    explain,
    finish,
    parse,
    predict,
    progress_rows,
    row_result,
    score,
    test_set,
    train_run,
    write_subset,
)
from medexplain.metrics import relevance_mass
from medexplain.metrics.classification import auroc, balanced_accuracy

SIZES = {
    "smoke": Size({"train": 24, "val": 12, "test": 12}, 32, 1),
    "default": Size(None, 64, 10),
    "full": Size(None, 128, 40),
}
COLUMNS = (
    "balanced accuracy", "AUROC", "pointing game", "relevance mass", "Dice", "HD95 (px)", "deletion AUC", "Gini",
    "s / image",
)  # fmt: skip
METRICS = {"pointing-game": "pointing game", "dice": "Dice", "hd95": "HD95 (px)", "deletion-auc": "deletion AUC",
           "gini": "Gini"}  # fmt: skip
CUSTOM = {"relevance mass": partial(relevance_mass, absolute=True)}  # share of |relevance|: signed maps comparable


def configs(epochs: int) -> dict[str, Config]:
    """The four trained models of the table."""
    common = {"epochs": epochs, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "class_weights": "balanced",
              "progress": False}  # fmt: skip
    bagnet = {**common, "model_args": {"evidence_activation": "relu"}}
    return {
        "resnet18": Config("resnet18", "resnet18", common),
        "bagnet-dense": Config("bagnet17-light-dense", "bagnet17-light", {**bagnet, "loss": "ce"}),
        "bagnet-sparse": Config(
            "sparse-bagnet17-light", "sparse-bagnet17-light",
            {**bagnet, "loss": "ce+sparsity", "sparsity_lambda": 0.03, "sparsity_on": "local"},
        ),
        "sibnet": Config("resnet18-sibnet", "resnet18", {**common, "loss": "ce+sibnet"}),
    }  # fmt: skip


def rows(epochs: int) -> list[Row]:
    models = configs(epochs)
    return [
        Row("resnet18-gradcam", "ResNet-18 + Grad-CAM", models["resnet18"], "gradcam"),
        Row("resnet18-lrp", "ResNet-18 + LRP (epsilon-plus-flat)", models["resnet18"], "lrp-epsilon-plus-flat"),
        Row("resnet18-ig", "ResNet-18 + integrated gradients", models["resnet18"], "integrated-gradients"),
        Row("bagnet-dense", "BagNet-17 evidence, dense (lambda 0)", models["bagnet-dense"], "evidence"),
        Row("bagnet-sparse", "sparse BagNet-17 evidence (lambda 0.03)", models["bagnet-sparse"], "evidence"),
        Row("sibnet-gradcam", "SIBnet-trained ResNet-18 + Grad-CAM", models["sibnet"], "gradcam"),
    ]


def compute_row(bench: Benchmark, row: Row, data) -> dict:
    run_dir = train_run(bench, row.config, data)
    model, dataset = test_set(run_dir, data)
    labels = dataset.labels.numpy()
    logits = predict(model, dataset)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    values = {
        "balanced accuracy": bootstrap_statistic(
            lambda y, p: balanced_accuracy(y, p.argmax(1)), labels, probabilities, seed=bench.seed
        ),
        "AUROC": bootstrap_statistic(auroc, labels, probabilities, seed=bench.seed),
    }
    stored, seconds = explain(bench, row, run_dir, dataset, data=data)
    scores, refused = score(bench, stored, dataset, list(METRICS), run_dir=run_dir, mask="lesion", custom=CUSTOM)
    values.update({column: scores[metric] for metric, column in METRICS.items()})
    values["relevance mass"] = scores["relevance mass"]
    values["s / image"] = seconds
    return row_result(bench, row, values, refused)


def main() -> None:
    sizes_rows = rows(SIZES["default"].epochs)
    bench = parse("busi", __doc__.splitlines()[0], SIZES, sizes_rows)
    bench.rows = [r for r in rows(bench.size.epochs) if r.name in {s.name for s in bench.rows}]
    data = write_subset(DATA / "busi", bench.work / f"data-{bench.size.side}px", bench.size, bench.seed,
                        masks=["lesion"])  # fmt: skip
    bar, task = progress_rows(bench)
    results = []
    with bar:
        for row in bench.rows:
            results.append(compute_row(bench, row, data))
            bar.advance(task)
    notes = """
Test split of BUSI as shipped (27 normal, 87 benign, 42 malignant). Localisation columns are over the benign and
malignant test images only (normal ones have no lesion); relevance mass is the share of |relevance| inside the
lesion (so signed maps compare with non-negative ones); pointing game counts a hit when any of several tied
maxima falls in the lesion (an all-zero map "hits" whenever a lesion exists); HD95 is in pixels at the table's
image size. Higher is better except HD95 and deletion AUC. "s / image" is wall-clock time to explain one test
image on one CPU thread (including writing the map), a single measurement, not bootstrapped.
"""
    finish(bench, "busi: breast ultrasound, 3 classes, lesion masks", COLUMNS, results, notes)


if __name__ == "__main__":
    main()
