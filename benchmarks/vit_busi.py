"""A small vision transformer on BUSI (breast ultrasound, 3 classes, lesion masks), explained beside baselines.

Issue 19: a ViT trained from scratch on the same 64-pixel BUSI subset as the CNN headline table (``headline_busi.py``,
same seed, same split), its settings chosen on the validation split among a few candidates (model size, patch
size, learning rate; AdamW, cosine schedule, balanced class weights, augmentation, best validation-AUROC epoch),
then scored once on the test split. Its maps (attention rollout, gradient-weighted attention, AttnLRP, token
Grad-CAM) explain the predicted class of every test image and are scored like the CNN table (strict pointing game
and share of |relevance| in the lesion, mask AUROC, deletion AUC) beside the registered baseline maps that know
nothing of the model: a centred Gaussian prior (sigma a quarter of the side), uniform noise (seeded per image) and
the image's edge magnitude.

    python benchmarks/vit_busi.py [--size smoke|default] [--seed K] [--row ROW] [--device cpu|cuda]
    (or: medexplain benchmark vit-busi ...)
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from _bagnet_runs import Config, run
from _headline import (
    DATA,
    Benchmark,
    Row,
    Size,
    cell,
    classification_values,
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
from medexplain.metrics import relevance_mass

SIZES = {
    "smoke": Size({"train": 24, "val": 12, "test": 12}, 32, 1),
    "default": Size(None, 64, 40),
}
COLUMNS = ("balanced accuracy", "AUROC", "pointing game", "relevance mass", "mask AUROC", "deletion AUC", "s / image")
METRICS = {"mask-auroc": "mask AUROC", "deletion-auc": "deletion AUC"}
CUSTOM = {"relevance mass": partial(relevance_mass, absolute=True), "pointing game": strict_pointing_game}
SELECTED = Config("vit-selected", "vit-tiny")
"""Stands for the candidate chosen on validation (every ViT row uses it)."""


def candidates(size: Size) -> dict[str, Config]:
    """The configurations compared on the validation split."""
    common = {"epochs": size.epochs, "batch_size": 16, "optimizer": "adamw", "class_weights": "balanced"}
    patch = size.side // 8
    return {
        name: Config(name, model, {**common, "lr": lr, "model_args": {"img_size": size.side, "patch_size": p}})
        for name, model, lr, p in (
            ("vit-tiny-p8-lr1e-3", "vit-tiny", 1e-3, patch),
            ("vit-tiny-p8-lr3e-4", "vit-tiny", 3e-4, patch),
            ("vit-tiny-p16-lr1e-3", "vit-tiny", 1e-3, 2 * patch),
            ("vit-small-p8-lr3e-4", "vit-small", 3e-4, patch),
        )
    }


def rows(size: Size) -> list[Row]:
    return [
        Row("vit-rollout", "ViT + attention rollout", SELECTED, "attention-rollout"),
        Row("vit-attention-gradient", "ViT + gradient-weighted attention", SELECTED, "attention-gradient"),
        Row("vit-attnlrp", "ViT + AttnLRP", SELECTED, "attnlrp"),
        Row("vit-gradcam", "ViT + token Grad-CAM", SELECTED, "gradcam"),
        Row("centre-prior", "centred Gaussian prior (no model)", SELECTED, "baseline-centre"),
        Row("random", "uniform noise (no model)", SELECTED, "baseline-random"),
        Row("edges", "image edge magnitude (no model)", SELECTED, "baseline-edges"),
    ]


def select(bench: Benchmark, data: Path) -> tuple[Config, list[tuple[str, dict]]]:
    """Train every candidate (reused when done) and keep the best validation AUROC of its chosen epoch."""
    scored = [(name, run(config, data, bench.work / "runs", bench.seed, split="val", progress=False,
                         device=bench.device)) for name, config in candidates(bench.size).items()]  # fmt: skip
    best = max(scored, key=lambda item: item[1]["auroc"])[0]
    return candidates(bench.size)[best], scored


def compute_row(bench: Benchmark, row: Row, data: Path, chosen: Config) -> dict:
    run_dir = train_run(bench, chosen, data)
    model, dataset = test_set(run_dir, data, device=bench.device)
    values = classification_values(bench, model, dataset)
    stored, seconds = explain(bench, row, run_dir, dataset, data=data)
    scores, refused = score(bench, stored, dataset, list(METRICS), run_dir=run_dir, mask="lesion", custom=CUSTOM)
    values.update({column: scores[metric] for metric, column in METRICS.items()})
    values.update({column: scores[column] for column in CUSTOM})
    values["s / image"] = seconds
    return row_result(bench, row, values, refused)


def main() -> None:
    bench = parse("vit-busi", __doc__.splitlines()[0], SIZES, rows)
    data = write_subset(DATA / "busi", bench.work / f"data-{bench.size.side}px", bench.size, bench.seed,
                        masks=["lesion"])  # fmt: skip
    chosen, scored = select(bench, data)
    results = [compute_row(bench, row, data, chosen) for row in bench.rows]
    selection = "\n".join(
        f"| {name} | {cell(m['auroc'])} | {cell(m.get('balanced_accuracy', math.nan))} | {m['cpu_seconds']:.0f} |"
        for name, m in scored
    )
    notes = f"""
Validation split (settings chosen here, before any test number was computed; chosen: `{chosen.name}`):

| candidate | val AUROC | val balanced accuracy | CPU s (training) |
|---|---|---|---|
{selection}

All ViT rows explain the chosen model; the baseline rows score maps that ignore the model (their accuracy
columns repeat the ViT's; their deletion AUC is measured on the ViT). Test split of BUSI as shipped (27 normal,
87 benign, 42 malignant), 64 px as in the CNN table (`medexplain benchmark busi`, same subset and seed);
localisation columns over benign and malignant images only; relevance mass is the share of |relevance| in the
lesion; deletion AUC over all test images (lower is better). A ViT trained from scratch on about 500 ultrasound
images has no inductive bias for locality and little data to learn one: compare its accuracy with the CNN table
before reading its maps.
"""
    finish(bench, "vit-busi: a ViT from scratch on BUSI, explained beside baselines", [(COLUMNS, results)], notes)


if __name__ == "__main__":
    main()
