"""Counterfactual simulators (Liu et al., IPMI 2021) on AdrenalMNIST3D: normal vs adrenal hyperplasia.

Reads ``adrenalmnist3d_64.npz`` (MedMNIST v2, official splits; each volume is a binary shape of an adrenal
gland segmented from CT) with ``medexplain.data.load_dataset``, resizes it to ``--size`` voxels per side (area
averaging), trains the small 3D CNN of ``simulate_3d.py`` (class-weighted cross-entropy; 22 % hyperplasia),
then a simulator on a class-balanced subset of the training split, and applies it in both directions to the
test split. Prints flip rate, logit shift, folding rate and smoothness per direction. There is no ground-truth
mask of the disease, so there is no AUROC; instead the table says where the deformation is: the mean
``log det J`` inside the gland (``> 0``: the gland grows) and the share of ``|log det J|`` within two voxels
of the gland's surface or inside it. Example slices of the Jacobian maps go to ``OUT/slices.png``.

    .venv/bin/python benchmarks/simulate_adrenal.py --out /tmp/simulate_adrenal
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch.utils.data import TensorDataset

from medexplain.data import load_dataset
from medexplain.data.transforms import Resize
from medexplain.simulate import disease_logit, train_simulator
from medexplain.simulate.apply import apply_simulator
from simulate_3d import (
    add_simulator_options,
    applied_items,
    fit,
    fmt,
    log_jacobian,
    log_jacobian_panel,
    save_figure,
    simulator_settings,
    small_cnn,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "adrenalmnist3d_64.npz"


def stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images ``(N, 1, *spatial)`` and labels ``(N,)`` of a dataset, decoded once."""
    images = [dataset[i].image for i in track(range(len(dataset)), "loading")]
    return torch.stack(images), dataset.labels.clone()


def balanced_subset(labels: torch.Tensor, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``per_class`` random images of each class (fewer when a class is smaller)."""
    chosen = []
    for label in (0, 1):
        members = (labels == label).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)


def where_it_deforms(folder: Path, images: torch.Tensor) -> dict[str, float]:
    """Mean log det J inside the gland and the share of |log det J| in or near it (2-voxel band)."""
    log_det = torch.stack([torch.from_numpy(log_jacobian(folder, item, 1e-6)) for item in applied_items(folder)])
    gland = images > 0.5
    near = F.max_pool3d(gland.float(), 5, stride=1, padding=2) > 0
    magnitude = log_det.abs()
    return {
        "log_det_in_gland": float(log_det[gland].mean()),
        "share_near_gland": float((magnitude * near).sum() / magnitude.sum().clamp(min=1e-12)),
        "volume_near_gland": float(near.float().mean()),
    }


def slices(out: Path, images: torch.Tensor, labels: torch.Tensor, folders: dict[str, Path], count: int = 4) -> None:
    """For each direction, ``count`` test volumes of the class it applies to: the axial slice through the gland's
    centre of the input (gland outline in black), the simulated image and log det J (red: growth)."""
    fig, axes = plt.subplots(3 * len(folders), count, figsize=(2.6 * count, 7.2 * len(folders)), squeeze=False)
    for block, (direction, folder) in enumerate(folders.items()):
        items = applied_items(folder)
        chosen = [i for i in range(len(items)) if items[i]["label"] == int(direction == "remove")][:count]
        for col, index in enumerate(chosen):
            gland = images[index, 0].numpy() > 0.5
            plane = int(np.argwhere(gland).mean(0)[0].round())
            simulated = np.load(folder / items[index]["images"])[0, plane]
            log_det = log_jacobian(folder, items[index], 1e-3)[0, plane]
            title = f"{items[index]['logit_before']:.1f} -> {items[index]['logit_after']:.1f}"
            axes[3 * block, col].imshow(images[index, 0, plane].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[3 * block, col].set_title(f"{direction}, label {items[index]['label']}", fontsize=9)
            axes[3 * block + 1, col].imshow(simulated, cmap="gray", vmin=0, vmax=1)
            axes[3 * block + 1, col].contour(gland[plane], levels=[0.5], colors="r", linewidths=0.6)
            axes[3 * block + 1, col].set_title(f"simulated, logit {title}", fontsize=9)
            log_jacobian_panel(fig, axes[3 * block + 2, col], log_det, gland[plane], 0.4, "log det J (red: growth)",
                               0.6, fontsize=9)  # fmt: skip
    save_figure(fig, axes, out / "slices.png", dpi=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--size", type=int, default=32, help="voxels per side after resizing (64: no resizing)")
    parser.add_argument("--classifier-epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=160, help="training images per class for the simulator")
    add_simulator_options(parser, epochs=4, displacement_weight=0.0)  # 0: as the recorded run, before the penalty
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}

    start = time.perf_counter()
    resize = Resize(args.size, mode="area")
    train_images, train_labels = stack(load_dataset(args.data, "train", transform=resize))
    test = load_dataset(args.data, "test", transform=resize)
    test_images, test_labels = stack(test)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    counts = torch.bincount(train_labels, minlength=2).float()
    classifier = fit(small_cnn(3, args.size), train_images, train_labels, args.classifier_epochs,
                     class_weight=counts.sum() / (2 * counts))
    timings["classifier"] = time.perf_counter() - start
    with torch.no_grad():
        logits = disease_logit(classifier(test_images))
    predicted = (logits > 0).long()
    quality = {
        "accuracy": float((predicted == test_labels).float().mean()),
        "balanced_accuracy": float(balanced_accuracy_score(test_labels, predicted)),
        "auroc": float(roc_auc_score(test_labels, logits)),
    }

    start = time.perf_counter()
    subset = balanced_subset(train_labels, args.per_class, torch.Generator().manual_seed(args.seed))
    config, settings = simulator_settings(args, 3)
    simulator, history = train_simulator(classifier, TensorDataset(train_images[subset]), config, settings)
    timings["simulator"] = time.perf_counter() - start

    start = time.perf_counter()
    folders, rows = {}, []
    for direction in ("inject", "remove"):
        folders[direction] = args.out / direction
        row = apply_simulator(simulator, classifier, test, direction, folders[direction], overwrite=True)
        rows.append({**row, **where_it_deforms(folders[direction], test_images)})
    timings["apply"] = time.perf_counter() - start

    print(f"\nAdrenalMNIST3D at {args.size}^3: train {len(train_images)} (simulator: {len(subset)} balanced), "
          f"test {len(test_images)} ({int(test_labels.sum())} hyperplasia); classifier test accuracy "
          f"{quality['accuracy']:.3f}, balanced {quality['balanced_accuracy']:.3f}, AUROC {quality['auroc']:.3f}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    header = ("direction", "eligible", "flip rate", "logit shift", "folding", "smoothness", "|u|",
              "mean log detJ in gland", "share of |log detJ| near gland")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(f"| {row['direction']} | {row['eligible']} | {fmt(row['flip_rate'], '.3f')} | "
              f"{row['logit_shift']:+.2f} | "
              f"{row['folding_rate']:.2e} | {row['smoothness']:.4f} | {row['mean_displacement']:.3f} | "
              f"{row['log_det_in_gland']:+.3f} | {row['share_near_gland']:.3f} (band: {row['volume_near_gland']:.3f} "
              "of the volume) |")
    (args.out / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "classifier": quality, "timings": timings,
         "summaries": rows, "history": history}, indent=2))
    slices(args.out, test_images, test_labels, folders)


if __name__ == "__main__":
    main()
