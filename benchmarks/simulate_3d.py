"""Counterfactual simulators (Liu et al., IPMI 2021) on synthetic 3D atrophy volumes.

Writes ``medexplain.data.synth.write_deformation`` volumes (class 1: local atrophy of the left hippocampus,
mask ``atrophy``), trains a small 3D CNN classifier (``--classifier small``) or a registered model through
``medexplain.train`` (``--classifier resnet18``), then a simulator, and applies it in both directions to the
test split. Prints flip rate, logit shift, folding rate, smoothness, the localisation AUROC of
``-d log det J`` against the atrophy mask and the share of the ``|log det J|`` mass inside it, next to the same
for a gradient saliency map of the same classifier (|d logit / d x|, Simonyan et al. 2014) computed in the same
run and the share for the true atrophy. The simulator is trained with a minimal-change penalty
(``--displacement-weight``, default 0.5: without it the 3D maps localised in one seed of two, see
benchmarks/RESULTS.md). Example slices go to ``OUT/slices.png``.
One torch thread by default: on a shared 2-core machine two threads made each simulator step 5-8x slower.

    .venv/bin/python benchmarks/simulate_3d.py --out /tmp/simulate_3d
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
from torch import nn
from torch.utils.data import TensorDataset

from medexplain.data import load_dataset
from medexplain.data.synth import write_deformation
from medexplain.data.transforms import ScaleIntensity
from medexplain.metrics.localisation import mask_auroc
from medexplain.simulate import SimulatorConfig, TrainingConfig, disease_logit, train_simulator
from medexplain.simulate.apply import apply_simulator
from medexplain.simulate.runs import load_classifier, open_data

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def small_cnn(dims: int, size: int) -> nn.Module:
    """Three conv-BN-ReLU blocks, two 2x poolings and a linear head on the flattened map (position-aware)."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [CONV[dims](c_in, c_out, 3, padding=1), NORM[dims](c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, 8), POOL[dims](2), *block(8, 16), POOL[dims](2), *block(16, 16),
        nn.Flatten(), nn.Linear(16 * (size // 4) ** dims, 2),
    )


def add_simulator_options(parser: argparse.ArgumentParser, epochs: int, displacement_weight: float) -> None:
    """The simulator's training options shared by the simulator benchmarks, and ``--seed`` / ``--threads``."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--margin", type=float, default=5.0)
    parser.add_argument("--max-displacement", type=float, default=1.5, help="magnitude bound (voxels)")
    parser.add_argument("--smoothness", type=float, default=0.04)
    parser.add_argument("--displacement-weight", type=float, default=displacement_weight,
                        help="minimal-change penalty: weight of the mean displacement length (voxels)")
    parser.add_argument("--channels", default="8,16,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)


def simulator_settings(args: argparse.Namespace, dims: int) -> tuple[SimulatorConfig, TrainingConfig]:
    """The network and training settings that :func:`add_simulator_options` parsed, for images of ``dims``."""
    config = SimulatorConfig(dims, 1, channels=tuple(int(c) for c in args.channels.split(",")))
    settings = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                              margin=args.margin, magnitude_bound=args.max_displacement,
                              smoothness_weight=args.smoothness, displacement_weight=args.displacement_weight,
                              seed=args.seed)
    return config, settings


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or ``n/a`` for an undefined value (e.g. a flip rate with no eligible image)."""
    return "n/a" if value is None else format(value, spec)


def fit(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, class_weight: torch.Tensor | None = None
) -> nn.Module:
    """Adam 3e-3, batches of 16, (optionally class-weighted) cross-entropy; returns the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in track(range(epochs), "classifier"):
        model.train()
        order = torch.randperm(len(images))
        for start in range(0, len(images), 16):
            batch = order[start : start + 16]
            loss = F.cross_entropy(model(images[batch]), labels[batch], weight=class_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def saliency_baseline(model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """|d disease logit / d x| against the masks (the saliency baseline): mean AUROC, mean share of its mass inside."""
    x = images.clone().requires_grad_(True)
    disease_logit(model(x)).sum().backward()
    saliency, inside = x.grad.abs()[:, 0], masks[:, 0] > 0.5
    share = (saliency * inside).flatten(1).sum(1) / saliency.flatten(1).sum(1).clamp_min(1e-12)
    return float(mask_auroc(saliency, inside).nanmean()), float(share.mean())


def applied_items(folder: Path) -> list[dict]:
    """The items of an ``apply_simulator`` output folder, as its ``index.json`` lists them."""
    return json.loads((folder / "index.json").read_text())["items"]


def log_jacobian(folder: Path, item: dict, floor: float) -> np.ndarray:
    """``log det J`` ``(1, *spatial)`` of one applied item, the determinant clipped below at ``floor``."""
    return np.log(np.clip(np.load(folder / item["jacobians"]), floor, None))


def log_jacobian_panel(
    fig, ax, log_det: np.ndarray, outline: np.ndarray, limit: float, title: str, line: float, **text
) -> None:
    """``log det J`` of one slice in a blue-white-red map over [-limit, limit], the region outlined, a colour bar."""
    shown = ax.imshow(log_det, cmap="bwr", vmin=-limit, vmax=limit)
    ax.contour(outline, levels=[0.5], colors="k", linewidths=line)
    ax.set_title(title, **text)
    fig.colorbar(shown, ax=ax, fraction=0.046)


def save_figure(fig, axes: np.ndarray, path: Path, dpi: int) -> None:
    """Save a grid of image panels ``axes``, their axes hidden."""
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


def share_in_mask(log_det: np.ndarray, mask: np.ndarray) -> float:
    """Share of the ``|log det J|`` mass (the whole deformation's volume change) that lies inside ``mask``."""
    magnitude = np.abs(log_det)
    return float(magnitude[mask].sum() / max(magnitude.sum(), 1e-12))


def target_class(folder: Path, dataset, label: int) -> dict[str, float]:
    """Over the test images of one true class (read back from disk): mean AUROC, mean log det J in the mask and
    mean share of the |log det J| mass in the mask."""
    items = applied_items(folder)
    chosen = [i for i, item in enumerate(items) if item["label"] == label]
    log_dets = {i: log_jacobian(folder, items[i], 1e-6)[0] for i in chosen}
    masks = {i: dataset[i].masks["atrophy"][0].numpy() > 0.5 for i in chosen}
    return {
        "auroc_atrophy_target_class": float(np.mean([items[i]["localisation_auroc"]["atrophy"] for i in chosen])),
        "log_det_in_mask": float(np.mean([log_dets[i][masks[i]].mean() for i in chosen])),
        "share_in_mask": float(np.mean([share_in_mask(log_dets[i], masks[i]) for i in chosen])),
    }


def true_share_in_mask(dataset) -> float:
    """The same share for the true atrophy (the generator's det J, stored per phantom) of the atrophied images."""
    shares = []
    for i in range(len(dataset)):
        sample = dataset[i]
        if sample.label == 1:
            log_det = np.log(np.load(Path(dataset.source) / sample.meta["jacobian"], allow_pickle=False))
            shares.append(share_in_mask(log_det, sample.masks["atrophy"][0].numpy() > 0.5))
    return float(np.mean(shares))


def slices(out: Path, dataset, folders: dict[str, Path], count: int = 4) -> None:
    """Axial slices through the mask centre: image, simulated image and log det J per direction."""
    fig, axes = plt.subplots(2 * len(folders), count, figsize=(3 * count, 6 * len(folders)), squeeze=False)
    for row, (direction, folder) in enumerate(folders.items()):
        items = applied_items(folder)
        for col in range(count):
            mask = dataset[col].masks["atrophy"][0].numpy()
            plane = (int(np.argwhere(mask).mean(0)[0].round()),) if mask.ndim == 3 else ()
            image = np.load(folder / items[col]["images"])[0][plane]
            log_det = log_jacobian(folder, items[col], 1e-3)[0][plane]
            mask = mask[plane]
            axes[2 * row, col].imshow(image, cmap="gray")
            axes[2 * row, col].set_title(f"{direction} label {items[col]['label']}: "
                                         f"{items[col]['logit_before']:.1f} -> {items[col]['logit_after']:.1f}")
            log_jacobian_panel(fig, axes[2 * row + 1, col], log_det, mask, 0.5, "log det J (blue: shrink)", 0.8)
    save_figure(fig, axes, out / "slices.png", dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", type=int, default=3)
    parser.add_argument("--n", type=int, default=400,
                        help="phantoms (70/15/15 train/val/test split; 160 left the CNN inaccurate at 32^3)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classifier", choices=("small", "resnet18"), default="small")
    parser.add_argument("--classifier-epochs", type=int, default=25)
    parser.add_argument("--relative-margin", type=float, default=None,
                        help="set the margin to this multiple of the mean |disease logit| of the training images "
                             "(instead of --margin)")
    add_simulator_options(parser, epochs=5, displacement_weight=0.5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}

    start = time.perf_counter()
    data = write_deformation(args.out / "data", args.n, args.dims, args.size, seed=args.seed, overwrite=True)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    if args.classifier == "small":
        scale = ScaleIntensity((0, 255))
        train, test = load_dataset(data, "train", transform=scale), load_dataset(data, "test", transform=scale)
        images = torch.stack([train[i].image for i in range(len(train))])
        classifier = fit(small_cnn(args.dims, args.size), images, train.labels, args.classifier_epochs)
    else:
        from medexplain.train import TrainConfig
        from medexplain.train import train as train_model

        config = TrainConfig("resnet18", model_args={"width": 8}, epochs=args.classifier_epochs, batch_size=16,
                             lr=3e-3, augment=False, monitor="loss", seed=args.seed)  # fmt: skip
        train_model(config, data, args.out / "run", device="cpu")
        classifier, config = load_classifier(args.out / "run")
        train, test = open_data(data, config, "train"), open_data(data, config, "test")
        images = torch.stack([train[i].image for i in range(len(train))])
    timings["classifier"] = time.perf_counter() - start
    test_images = torch.stack([test[i].image for i in range(len(test))])
    test_masks = torch.stack([test[i].masks["atrophy"] for i in range(len(test))])
    with torch.no_grad():
        accuracy = float((classifier(test_images).argmax(1) == test.labels).float().mean())

    if args.relative_margin is not None:
        with torch.no_grad():
            args.margin = args.relative_margin * float(disease_logit(classifier(images)).abs().mean())

    start = time.perf_counter()
    config, settings = simulator_settings(args, args.dims)
    simulator, history = train_simulator(classifier, TensorDataset(images), config, settings)
    timings["simulator"] = time.perf_counter() - start

    folders, rows = {}, []
    for direction in ("inject", "remove"):
        folders[direction] = args.out / direction
        rows.append(apply_simulator(simulator, classifier, test, direction, folders[direction], overwrite=True))
        # the images the direction is meant for: healthy ones get atrophy injected, atrophied ones lose it
        rows[-1].update(target_class(folders[direction], test, int(direction == "remove")))
    saliency, saliency_share = saliency_baseline(classifier, test_images, test_masks)
    truth_share = true_share_in_mask(test)

    print(f"\n{args.dims}D synthetic atrophy, {args.size}^{args.dims}, n={args.n} (train {len(train)}, "
          f"test {len(test)}), classifier {args.classifier} test accuracy {accuracy:.3f}, margin {args.margin:.2f}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    header = ("direction", "eligible", "flip rate", "logit shift", "AUROC -d log detJ", "AUROC, target class",
              "log detJ in mask, target class", "share of mass in mask, target class", "folding", "smoothness", "|u|")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(f"| {row['direction']} | {row['eligible']} | {fmt(row['flip_rate'], '.3f')} | "
              f"{row['logit_shift']:+.2f} | "
              f"{row['auroc_atrophy']:.3f} | {row['auroc_atrophy_target_class']:.3f} | {row['log_det_in_mask']:+.3f} | "
              f"{row['share_in_mask']:.3f} | {row['folding_rate']:.2e} | "
              f"{row['smoothness']:.4f} | "
              f"{row['mean_displacement']:.3f} |")
    print(f"| gradient saliency baseline | | | | {saliency:.3f} | | | {saliency_share:.3f} | | | |")
    print(f"| true atrophy (atrophied images) | | | | | | | {truth_share:.3f} | | | |")
    (args.out / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "accuracy": accuracy, "timings": timings,
         "summaries": rows, "saliency_auroc": saliency,
         "saliency_share_in_mask": saliency_share, "true_share_in_mask": truth_share, "history": history}, indent=2))
    slices(args.out, test, folders)


if __name__ == "__main__":
    main()
