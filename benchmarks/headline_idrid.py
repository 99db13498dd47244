"""Headline weakly supervised lesion localisation on IDRiD fundus images (haemorrhages and hard exudates).

Each 1024 x 680 fundus image of ``idrid_seg20`` is cut into square tiles (the bottom remainder is dropped), each
tile resized (area average; masks: any lesion pixel survives) and labelled 1 when it contains a haemorrhage (HE) or
hard exudate (EX) pixel. Classifiers see only these tile labels; cross-validation is grouped by image (every
fold's test tiles come from images none of whose tiles were trained on; up to three further images are the
validation split). Reported: tile AUROC of the pooled out-of-fold predictions, and the pixel-level localisation of each
method's map of the lesion class on the positive test tiles against the HE + EX mask (pixel AUROC of the map as a
lesion detector, pointing game).

    medexplain benchmark idrid [--size smoke|default|full] [--seed K] [--row ROW] [--device cpu|cuda]
    (or: python benchmarks/headline_idrid.py ...; full: 128-pixel tiles at native resolution, for a GPU)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    mask_scores,
    mean_interval,
    metric_rows,
    parse,
    predict,
    row_result,
    strict_pointing_game,
    summarise_rows,
    test_set,
    train_run,
)
from medexplain.data import load_dataset
from medexplain.data.sample import Sample
from medexplain.data.transforms import Resize
from medexplain.data.writers import png_bytes, write_file, write_manifest
from medexplain.metrics.classification import binary_auroc

SOURCE = DATA / "idrid_seg20"
LESIONS = ("HE", "EX")
SIZES = {"smoke": Size(None, 32, 1), "default": Size(None, 64, 8), "full": Size(None, 128, 30)}
SETUP = {  # per size: images used, tile side in source pixels, folds, ResNet width
    "smoke": {"images": 6, "tile": 256, "folds": 2, "width": 8},
    "default": {"images": 20, "tile": 128, "folds": 4, "width": 16},
    "full": {"images": 20, "tile": 128, "folds": 5, "width": 64},
}
COLUMNS = ("tile AUROC", "pixel AUROC", "pointing game", "positive test tiles", "s / tile")


def setup_of(size: Size) -> dict[str, int]:
    return SETUP[next(name for name, s in SIZES.items() if s == size)]


def rows(size: Size) -> list[Row]:
    """ResNet-18 with three post-hoc methods, and the sparse BagNet's own evidence."""
    common = {"epochs": size.epochs, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "class_weights": "balanced"}
    width = setup_of(size)["width"]
    resnet = Config(f"resnet18-w{width}", "resnet18", {**common, "model_args": {"small_input": True, "width": width}})
    bagnet = Config("sparse-bagnet17-light", "sparse-bagnet17-light", {
        **common, "model_args": {"evidence_activation": "relu"}, "loss": "ce+sparsity", "sparsity_lambda": 0.03,
        "sparsity_on": "local"})  # fmt: skip
    return [
        Row("resnet18-gradcam", "ResNet-18 + Grad-CAM", resnet, "gradcam"),
        Row("resnet18-lrp", "ResNet-18 + LRP (epsilon-plus-flat)", resnet, "lrp-epsilon-plus-flat"),
        Row("resnet18-ig", "ResNet-18 + integrated gradients", resnet, "integrated-gradients"),
        Row("bagnet-sparse", "sparse BagNet-17 evidence (lambda 0.03)", bagnet, "evidence"),
    ]


def tiles(bench: Benchmark) -> list[dict[str, Any]]:
    """Every tile of the benchmark's size (see :func:`cut_tiles`)."""
    setup = setup_of(bench.size)
    return cut_tiles(setup["images"], setup["tile"], bench.size.side)


def cut_tiles(images: int | None, side: int, out_side: int) -> list[dict[str, Any]]:
    """Every ``side`` x ``side`` tile of the first ``images`` images (None: all) resized to ``out_side`` (equal:
    native resolution), as ``{"image": (3, s, s) uint8 array, "mask": (s, s) bool, "group": image id, "id"}``."""
    dataset = load_dataset(SOURCE)
    resize = Resize(out_side, mode="area", mask_mode="any")
    result = []
    for index in range(len(dataset) if images is None else min(images, len(dataset))):
        sample = dataset[index]
        lesion = torch.clamp(sum(sample.masks[name] for name in LESIONS), max=1)
        height, width = sample.image.shape[1:]
        for top in range(0, height - side + 1, side):
            for left in range(0, width - side + 1, side):
                window = (slice(None), slice(top, top + side), slice(left, left + side))
                tile = resize(Sample(sample.image[window], masks={"lesion": lesion[window]}))
                result.append({
                    "image": tile.image.clamp(0, 255).round().to(torch.uint8).numpy(),
                    "mask": tile.masks["lesion"][0].numpy() > 0.5,
                    "group": sample.meta["id"],
                    "id": f"{sample.meta['id']}_y{top}_x{left}",
                })  # fmt: skip
    return result


def tile_row(out: Path, tile: dict[str, Any], split: str) -> dict[str, Any]:
    """Write ``tile``'s image and lesion mask as PNGs under ``out``; its manifest row in ``split``."""
    return {
        "image": write_file(out, f"images/{tile['id']}.png", png_bytes(np.moveaxis(tile["image"], 0, -1))),
        "split": split,
        "label": int(tile["mask"].any()),
        "mask_lesion": write_file(out, f"masks/{tile['id']}.png", png_bytes(tile["mask"])),
        "group": tile["group"],
        "id": tile["id"],
    }


def write_folds(bench: Benchmark, all_tiles: list[dict[str, Any]]) -> list[Path]:
    """One dataset folder per fold (train / val / test tiles grouped by image); reused when present."""
    setup = setup_of(bench.size)
    groups = sorted({t["group"] for t in all_tiles})
    order = [groups[i] for i in np.random.default_rng(bench.seed).permutation(len(groups))]
    folds = np.array_split(np.array(order), setup["folds"])
    folders = []
    for k, test_groups in enumerate(folds):
        out = bench.work / f"tiles-{setup['tile']}px-{bench.size.side}-fold{k}"
        folders.append(out)
        if (out / "manifest.csv").is_file():
            continue
        rest = [g for g in order if g not in set(test_groups)]
        val_groups = set(rest[: max(1, min(3, len(rest) // 4))])
        rows = []
        for t in all_tiles:
            split = "test" if t["group"] in set(test_groups) else "val" if t["group"] in val_groups else "train"
            rows.append(tile_row(out, t, split))
        write_manifest(out, rows)
    return folders


def compute_row(bench: Benchmark, row: Row, folders: list[Path]) -> dict:
    labels, scores, per_map, pointing, seconds, positives = [], [], [], [], [], 0
    refused: dict[str, int] = {}
    for k, data in enumerate(folders):
        fold = Config(f"{row.config.name}-fold{k}", row.config.model, row.config.settings)
        run_dir = train_run(bench, fold, data)
        model, dataset = test_set(run_dir, data, device=bench.device)
        labels.append(dataset.labels.numpy())
        scores.append(torch.from_numpy(predict(model, dataset)).softmax(1)[:, 1].numpy())
        fold_row = Row(f"{row.name}-fold{k}", row.label, fold, row.method)
        stored, per_tile = explain(bench, fold_row, run_dir, dataset, target=1, data=data)
        rows_k, refused_k = metric_rows(stored, dataset, ["mask-auroc"], model, "lesion", bench.device)
        hits, refused_k["pointing game"] = mask_scores(stored, dataset, strict_pointing_game, "lesion")
        per_map += rows_k
        pointing += hits
        refused = {m: refused.get(m, 0) + n for m, n in refused_k.items()}
        seconds.append(per_tile)
        positives += int(labels[-1].sum())
    summary = summarise_rows(bench, per_map)
    values = {
        "tile AUROC": bootstrap_statistic(
            lambda y, s: binary_auroc(y == 1, s), np.concatenate(labels), np.concatenate(scores), seed=bench.seed
        ),
        "pixel AUROC": summary["mask-auroc"],
        "pointing game": mean_interval(pointing, bench.seed),
        "positive test tiles": str(positives),
        "s / tile": float(np.mean(seconds)),
    }
    return row_result(bench, row, values, refused)


def main() -> None:
    bench = parse("idrid", __doc__.splitlines()[0], SIZES, rows)
    folders = write_folds(bench, tiles(bench))
    results = compute_rows(bench, lambda row: compute_row(bench, row, folders))
    setup = setup_of(bench.size)
    notes = f"""
Tiles of {setup['tile']} x {setup['tile']} source pixels resized to {bench.size.side} px, from {setup['images']}
images, {setup['folds']} folds grouped by image; every tile is a test tile exactly once. Maps explain the lesion
class (1) of every test tile; pixel AUROC and pointing game are over the positive test tiles (the others have an
empty mask); the pointing game refuses constant maps (counted below). Tile AUROC pools the out-of-fold
predictions; its interval resamples tiles (tiles of one image are not independent, so it is optimistic). Tiles
outside the fundus disc are black and easy negatives. "s / tile": seconds to explain one tile, mean over folds.
"""
    finish(bench, "idrid: weakly supervised lesion localisation (HE + EX) from tile labels", [(COLUMNS, results)],
           notes)  # fmt: skip


if __name__ == "__main__":
    main()
