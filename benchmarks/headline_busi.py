"""Headline table on BUSI (breast ultrasound, 3 classes, lesion masks): which explanation can I trust?

Post-hoc explanations of a ResNet-18 (Grad-CAM, LRP epsilon-plus-flat, integrated gradients), the evidence maps of
an inherently interpretable BagNet trained without (lambda 0) and with the sparsity penalty (Djoumessi et al.
2023), and Grad-CAM of a ResNet-18 trained with SIBnet's guidance losses (Mahapatra et al. 2022). All models:
same data, augmentation, AdamW, cosine schedule, balanced class weights, epochs; the run keeps the best
validation-AUROC epoch. Maps explain the predicted class of every test image; localisation metrics use the
lesion mask (normal images have none and are left out of them); Dice / HD95 on Otsu-binarised maps; deletion
AUC: class probability while the most relevant pixels are set to 0 (lower is better).

    medexplain benchmark busi [--size smoke|default|full] [--seed K] [--row ROW] [--device cpu|cuda]
    (or: python benchmarks/headline_busi.py ...; full: 224 px, 40 epochs, for a GPU)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from _bagnet_runs import Config
from _headline import (
    DATA,
    ROOT,
    Benchmark,
    Row,
    Size,
    classification_values,
    compute_rows,
    explain,
    finish,
    parse,
    row_result,
    score,
    strict_pointing_game,
    test_set,
    train_run,
    write_subset,
)
from medexplain.data import load_dataset
from medexplain.files import atomic_file
from medexplain.metrics import relevance_mass
from medexplain.workflows.explanations import load_explanations

SIZES = {
    "smoke": Size({"train": 24, "val": 12, "test": 12}, 32, 1),
    "default": Size(None, 64, 10),
    "full": Size(None, 224, 40),
}
CLASS_NAMES = ("normal", "benign", "malignant")
COLUMNS = (
    "balanced accuracy", "AUROC", "pointing game", "relevance mass", "Dice", "HD95 (px)", "deletion AUC", "Gini",
    "s / image",
)  # fmt: skip
METRICS = {"dice": "Dice", "hd95": "HD95 (px)", "deletion-auc": "deletion AUC", "gini": "Gini"}
CUSTOM = {  # share of |relevance| (signed maps comparable); constant maps refused by both
    "relevance mass": partial(relevance_mass, absolute=True),
    "pointing game": strict_pointing_game,
}


def configs(epochs: int) -> dict[str, Config]:
    """The four trained models of the table."""
    common = {"epochs": epochs, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "class_weights": "balanced"}
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


def rows(size: Size) -> list[Row]:
    """The table's rows at ``size``."""
    models = configs(size.epochs)
    return [
        Row("resnet18-gradcam", "ResNet-18 + Grad-CAM", models["resnet18"], "gradcam"),
        Row("resnet18-lrp", "ResNet-18 + LRP (epsilon-plus-flat)", models["resnet18"], "lrp-epsilon-plus-flat"),
        Row("resnet18-ig", "ResNet-18 + integrated gradients", models["resnet18"], "integrated-gradients"),
        Row("bagnet-dense", "BagNet-17 evidence, dense (lambda 0)", models["bagnet-dense"], "evidence"),
        Row("bagnet-sparse", "sparse BagNet-17 evidence (lambda 0.03)", models["bagnet-sparse"], "evidence"),
        Row("sibnet-gradcam", "SIBnet-trained ResNet-18 + Grad-CAM", models["sibnet"], "gradcam"),
    ]


def compute_row(bench: Benchmark, row: Row, data: Path) -> dict:
    run_dir = train_run(bench, row.config, data)
    model, dataset = test_set(run_dir, data, device=bench.device)
    values = classification_values(bench, model, dataset)
    stored, seconds = explain(bench, row, run_dir, dataset, data=data)
    scores, refused = score(bench, stored, dataset, list(METRICS), run_dir=run_dir, mask="lesion", custom=CUSTOM)
    values.update({column: scores[metric] for metric, column in METRICS.items()})
    values.update({column: scores[column] for column in CUSTOM})
    values["s / image"] = seconds
    return row_result(bench, row, values, refused)


def gallery(bench: Benchmark, data: Path, per_class: int = 2) -> Path:
    """``benchmarks/figures/busi_gallery.png``: benign and malignant test images (lesion outlined), every row's map.

    Images are drawn with the benchmark's seed; each map is scaled to its own maximum |value|, signed maps in a
    diverging colour map, so the picture compares where, not how much.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows(bench.size)
    stored = {row.name: load_explanations(bench.work / "explanations" / row.name) for row in table}
    _, dataset = test_set(bench.work / "runs" / f"{table[0].config.name}-seed{bench.seed}", data)
    raw = load_dataset(data, split="test")
    rng = np.random.default_rng(bench.seed)
    labels = dataset.labels.numpy()
    chosen = [int(i) for k in (1, 2) for i in rng.permutation(np.flatnonzero(labels == k))[:per_class]]
    figure, axes = plt.subplots(len(chosen), len(table) + 1, figsize=(1.25 * (len(table) + 1), 1.35 * len(chosen)))
    for r, index in enumerate(chosen):
        sample = raw[index]
        axes[r, 0].imshow(sample.image[0], cmap="gray")
        axes[r, 0].contour(sample.masks["lesion"][0], levels=[0.5], colors="lime", linewidths=0.8)
        axes[r, 0].set_ylabel(CLASS_NAMES[sample.label], fontsize=7)
        for c, row in enumerate(table, start=1):
            item = next(i for i in stored[row.name].items if i.index == index)
            heat = stored[row.name].load(item, row.method)[0].numpy()
            limit = float(np.abs(heat).max()) or 1.0
            signed = bool((heat < 0).any())
            axes[r, c].imshow(heat, cmap="bwr" if signed else "inferno", vmin=-limit if signed else 0, vmax=limit)
            axes[r, c].contour(sample.masks["lesion"][0], levels=[0.5], colors="lime", linewidths=0.5)
            if r == 0:
                axes[r, c].set_title(row.label.replace(" + ", "\n").replace(" evidence", "\nevidence"), fontsize=5.5)
    axes[0, 0].set_title("image, lesion", fontsize=6)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout(pad=0.3)
    out = ROOT / "benchmarks" / "figures" / "busi_gallery.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        figure.savefig(tmp, format="png", dpi=75)
        tmp.chmod(0o644)
    plt.close(figure)
    return out


def main() -> None:
    bench = parse("busi", __doc__.splitlines()[0], SIZES, rows)
    data = write_subset(DATA / "busi", bench.work / f"data-{bench.size.side}px", bench.size, bench.seed,
                        masks=["lesion"])  # fmt: skip
    results = compute_rows(bench, lambda row: compute_row(bench, row, data))
    notes = """
Test split of BUSI as shipped (27 normal, 87 benign, 42 malignant). Localisation columns are over the benign and
malignant test images only (normal ones have no lesion). Relevance mass is the share of |relevance| inside the
lesion (so signed maps compare with non-negative ones). Pointing game and relevance mass refuse constant maps (an
all-zero Grad-CAM has no mass and no maximum): they are counted below and left out of those two columns, while
Dice / HD95 / deletion AUC / Gini score them as they are (an empty binarised map has Dice 0). HD95 is in pixels at
the table's image size. Higher is better except HD95 and deletion AUC. "s / image" is wall-clock time to explain
one test image on one CPU thread (including writing the map), a single measurement, not bootstrapped.
"""
    finish(bench, "busi: breast ultrasound, 3 classes, lesion masks", [(COLUMNS, results)], notes)
    if bench.size_name != "smoke" and len(results) == len(rows(bench.size)):
        gallery(bench, data)


if __name__ == "__main__":
    main()
