"""SIBnet vs squeeze-and-excitation vs CBAM vs plain ResNet-18 on BUSI lesions and chest X-ray lungs (CPU).

Mahapatra, Poellinger, Reyes (Medical Image Analysis 2022) report that SIBnet's Grad-CAM guidance beats SE and CBAM
attention. This trains ResNet-18 with CE, CE + SE blocks, CE + CBAM blocks and CE + SIBnet under the same budget
(``medexplain.train``: same data, augmentation, optimiser, schedule, epochs, seeds) on two data sets with masks:
BUSI (breast ultrasound, 3 classes, lesion masks) and cxr_lung_tb (chest X-ray, TB or not, lung masks: does the
map stay inside the organ?). Two stages:

- ``--stage select``: seed 0, CE and SIBnet formulations (published and the alternatives of
  :mod:`medexplain.train.sibnet`) scored on the *validation* split; the formulation and weights are chosen here.
- ``--stage test``: the chosen settings, seeds 0 1 2, the test split, one table for both data sets.

Columns, each the mean over seeds with a 95 % bootstrap interval over test images (the images resampled, the
statistic averaged over the seeds on each resample): balanced accuracy, AUROC (one-vs-rest macro), AUROC under
Gaussian noise (sigma 0.005 / 0.01 / 0.05 / 0.1 on images scaled to [0, 1], clipped); Grad-CAM of the true class
(last block) against the mask on images that have one: pointing game (an empty map points nowhere: a miss), Dice
and HD95 of the Otsu-binarised map filled to its convex hull (SIBnet's protocol; an empty map has Dice 0 and the
image diagonal as HD95), the share of empty (all-zero) maps, and the class distinctiveness ``L_cd`` of all class
maps (lower: more distinct); the transfer Dice of a light decoder trained on the frozen encoder
(``medexplain.train.transfer``). Baseline rows for the localisation columns: a centred Gaussian (centre prior) and
the mean training mask. Paired differences SIBnet - CE over images (seed-averaged per image) close the table.

    .venv/bin/python benchmarks/sibnet_busi.py --stage select --work /tmp/sibnet-select
    .venv/bin/python benchmarks/sibnet_busi.py --stage test --work /tmp/sibnet-test

Finished runs in ``--work`` are reused (interrupted ones resume); evaluations are cached beside them.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from _bagnet_runs import Config, benchmark_process, run
from _headline import DATA, bootstrap_statistic, cell
from medexplain.data import collate, load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.data.transforms import Resize
from medexplain.explain.cam import cam_maps
from medexplain.files import write_text
from medexplain.metrics import noisy_scores
from medexplain.metrics.classification import auroc, balanced_accuracy
from medexplain.metrics.localisation import pointing_game
from medexplain.metrics.overlap import dice, hd95
from medexplain.models import load
from medexplain.train.sibnet import PUBLISHED, class_distinctiveness
from medexplain.train.transfer import segmentation_dice, train_decoder
from medexplain.workflows.audit import mean_training_mask
from medexplain.workflows.explain import build_explainers

SIGMAS = (0.005, 0.01, 0.05, 0.1)
PEAK = 255.0  # both data sets are 8-bit: [0, 1] images are the stored values / 255


@dataclass(frozen=True)
class Dataset:
    """A data set with masks: its folder and the mask the maps are scored against."""

    name: str
    folder: Path
    mask: str
    what: str


DATASETS = {
    "busi": Dataset("busi", DATA / "busi", "lesion", "BUSI, lesion masks (benign and malignant images)"),
    "cxr": Dataset("cxr", DATA / "cxr_lung_tb", "lung", "cxr_lung_tb, lung masks (every image)"),
}

# SIBnet formulations compared on the validation split (``--stage select``); arguments of ``SIBnetLoss``.
# Every argument is spelled out, so a formulation does not change with the library's defaults.
FORMULATIONS: dict[str, dict[str, Any]] = {
    "published": PUBLISHED,
    "published, L_cd only": {**PUBLISHED, "w_sc": 0.0},
    "published, L_sc only": {**PUBLISHED, "w_cd": 0.0},
    "signed": {**PUBLISHED, "cam": "signed"},
    "signed, unit mass": {**PUBLISHED, "cam": "signed", "mass": "map"},
    "signed, unit mass, floor": {**PUBLISHED, "cam": "signed", "mass": "map", "floor": 1.0},
    "gradcam, unit mass, floor": {**PUBLISHED, "mass": "map", "floor": 1.0},
    "published, weights / 4": {**PUBLISHED, "w_cd": 0.3, "w_sc": 0.225},
    "signed, unit mass, weights / 4": {**PUBLISHED, "cam": "signed", "mass": "map", "w_cd": 0.3, "w_sc": 0.225},
    "gradcam, signed mass, floor": {**PUBLISHED, "mass": "signed", "floor": 1.0},
    "gradcam, signed mass, floor, w_sc / 4": {**PUBLISHED, "mass": "signed", "floor": 1.0, "w_sc": 0.225},
}


class UnitInput(nn.Module):
    """The classifier on [0, 1] images: ``model((PEAK * x - mean) / std)``, the run's own standardisation."""

    def __init__(self, model: nn.Module, intensity: dict[str, list[float]]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(intensity["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(intensity["std"]).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((PEAK * x - self.mean) / self.std)


def split_tensors(dataset: Dataset, split: str, transform) -> tuple[Tensor, Tensor, Tensor]:
    """``(images (N, C, H, W), labels (N,), masks (N, 1, H, W))`` of one split."""
    items = load_dataset(dataset.folder, split=split, transform=transform)
    batch = collate([items[i] for i in range(len(items))])
    return batch.image, batch.label, batch.masks[dataset.mask]


def gradcam(model: nn.Module, images: Tensor, classes: Tensor, device: torch.device) -> Tensor:
    """Grad-CAM ``(N, H, W)`` of ``classes`` (N,) at the last block, as the registered explainer computes it."""
    chunks = zip(images.split(32), classes.split(32), strict=True)
    return torch.cat([cam_maps(model, x.to(device), c.tolist()).maps[:, 0].cpu() for x, c in chunks])


def distinctiveness(model: nn.Module, images: Tensor, device: torch.device) -> np.ndarray:
    """``L_cd`` of the Grad-CAM maps of all classes, per image ``(N,)``."""
    values = []
    for x in images.split(32):
        maps = cam_maps(model, x.to(device), "all").maps.cpu().double()
        values += [float(class_distinctiveness(m[None])) for m in maps]
    return np.asarray(values)


def border_mass(maps: Tensor) -> Tensor:
    """Share of each map's mass ``(N, H, W)`` within an eighth of the side from the image border (N,); NaN if empty.
    A map spread evenly puts 44 % there."""
    inner = torch.zeros(maps.shape[1:], dtype=torch.bool)
    band = [n // 8 for n in maps.shape[1:]]
    inner[band[0] : maps.shape[1] - band[0], band[1] : maps.shape[2] - band[1]] = True
    total = maps.flatten(1).sum(1)
    return torch.where(total > 0, (maps * ~inner).flatten(1).sum(1) / total, math.nan)


def localisation(maps: Tensor, masks: Tensor) -> dict[str, np.ndarray]:
    """Per image ``(N,)``: pointing game (empty map: 0), Dice and HD95 of the hull-filled Otsu map, empty, the
    share of the map near the border."""
    empty = maps.flatten(1).amax(1) <= 0
    pointing = torch.zeros(len(maps))
    pointing[~empty] = pointing_game(maps[~empty], masks[~empty])
    return {
        "border": border_mass(maps).numpy(),
        "pointing": pointing.numpy(),
        "dice": dice(maps, masks, hull=True).numpy(),
        "hd95": hd95(maps, masks, hull=True).numpy(),
        "empty": empty.double().numpy(),
    }


def evaluate(run_dir: Path, dataset: Dataset, split: str, device: torch.device, decoder_epochs: int) -> dict:
    """Every per-image quantity of one trained run on ``split`` (noise and transfer on "test" only)."""
    model, config = load(run_dir)
    model = model.to(device).eval()
    preprocessing = config["preprocessing"]
    standardised = preprocessing_transform(preprocessing)
    images, labels, masks = split_tensors(dataset, split, standardised)
    with torch.no_grad():
        probabilities = torch.cat([model(x.to(device)).softmax(1).cpu() for x in images.split(64)])
    has_mask = masks.flatten(1).any(1)
    maps = gradcam(model, images[has_mask], labels[has_mask], device)
    result: dict[str, Any] = {
        "labels": labels.numpy(),
        "probabilities": probabilities.double().numpy(),
        "distinctiveness": distinctiveness(model, images, device),
        **localisation(maps, masks[has_mask][:, 0]),
    }
    if split == "test":
        raw, _, _ = split_tensors(dataset, split, Resize(preprocessing["size"]))
        if float(raw.max()) > PEAK:
            raise SystemExit(f"{dataset.folder}: images exceed {PEAK:g}; the [0, 1] scaling assumes 8-bit images")
        unit = UnitInput(model, preprocessing["intensity"]).to(device)
        noisy = noisy_scores(unit, (raw / PEAK).to(device), sigmas=SIGMAS, seed=0, clip=(0.0, 1.0))
        result["noisy"] = np.stack([scores.cpu().double().numpy() for _, scores in noisy[1:]])
        train_images, _, train_masks = split_tensors(dataset, "train", standardised)
        segmenter = train_decoder(
            model, train_images.to(device), train_masks.to(device), epochs=decoder_epochs, seed=0, progress=False
        )
        transfer = segmentation_dice(segmenter, images[has_mask].to(device), masks[has_mask].to(device))
        result["transfer"] = transfer.cpu().numpy()
    return result


def cached_evaluation(run_dir: Path, dataset: Dataset, split: str, device: torch.device, decoder_epochs: int) -> dict:
    path = run_dir.parent / f"{run_dir.name}.{split}.npz"
    if not path.is_file():
        result = evaluate(run_dir, dataset, split, device, decoder_epochs)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **result)
        partial.replace(path)
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def prior_maps(dataset: Dataset, run_dir: Path, split: str) -> dict[str, dict[str, np.ndarray]]:
    """Localisation of the registered baselines on the images of ``split`` that have a mask: ``baseline-centre``
    (a centred Gaussian, sd a quarter of each side) and ``baseline-prior`` with the mean training mask, at the input
    size of the run in ``run_dir`` (its model only resolves the explained class)."""
    model, config = load(run_dir)
    images, labels, masks = split_tensors(dataset, split, preprocessing_transform(config["preprocessing"]))
    has_mask = masks.flatten(1).any(1)
    prior = mean_training_mask(config, dataset.folder, dataset.mask, config["preprocessing"]["size"])
    explainers = build_explainers(["baseline-centre", "baseline-prior"], params={"baseline-prior": {"prior": prior}})
    rows = {"centre prior": "baseline-centre", "mean training mask": "baseline-prior"}
    x, classes = images[has_mask], labels[has_mask]
    return {
        row: localisation(explainers[name](model.eval(), x, classes.tolist()).maps[:, 0].float(), masks[has_mask][:, 0])
        for row, name in rows.items()
    }


def seed_mean(statistic: Callable[..., float], *per_seed: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of ``statistic(*arrays of one seed)``, with a 95 % bootstrap interval over the rows (images),
    resampled jointly for every seed. Each array is ``(S, N, ...)``."""
    stacked = [np.moveaxis(a, 0, 1) for a in per_seed]  # (N, S, ...)
    seeds = per_seed[0].shape[0]

    def averaged(*arrays: np.ndarray) -> float:
        return float(np.mean([statistic(*(a[:, s] for a in arrays)) for s in range(seeds)]))

    return bootstrap_statistic(averaged, *stacked, seed=seed)


def nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def summarise(evals: list[dict]) -> dict[str, tuple[float, float, float]]:
    """The table's cells from the evaluations of one row's seeds (same images in each)."""
    labels = np.stack([e["labels"] for e in evals])
    probabilities = np.stack([e["probabilities"] for e in evals])
    cells = {
        "balanced accuracy": seed_mean(lambda y, p: balanced_accuracy(y, p.argmax(1)), labels, probabilities),
        "AUROC": seed_mean(auroc, labels, probabilities),
    }
    if "noisy" in evals[0]:
        for index, sigma in enumerate(SIGMAS):
            noisy = np.stack([e["noisy"][index] for e in evals])
            cells[f"AUROC s={sigma:g}"] = seed_mean(auroc, labels, noisy)
    cells.update(localisation_cells(evals))
    cells["L_cd"] = seed_mean(nanmean, np.stack([e["distinctiveness"] for e in evals]))
    if "transfer" in evals[0]:
        cells["transfer Dice"] = seed_mean(nanmean, np.stack([e["transfer"] for e in evals]))
    return cells


def localisation_cells(evals: list[dict]) -> dict[str, tuple[float, float, float]]:
    names = {"pointing": "pointing game", "dice": "Dice (hull)", "hd95": "HD95 px (hull)", "empty": "empty maps",
             "border": "border mass"}  # fmt: skip
    return {label: seed_mean(nanmean, np.stack([e[key] for e in evals])) for key, label in names.items()}


def paired(evals: list[dict], reference: list[dict], key: str) -> tuple[float, float, float]:
    """Mean over images of (seed-averaged value - the reference's), with a paired bootstrap interval."""
    ours = np.nanmean(np.stack([e[key] for e in evals]), 0)
    theirs = np.nanmean(np.stack([e[key] for e in reference]), 0)
    return bootstrap_statistic(lambda a, b: nanmean(a - b), ours, theirs, seed=0)


def markdown(columns: list[str], rows: list[tuple[str, dict, str]]) -> str:
    lines = ["| data | row | " + " | ".join(columns) + " | command |", "|---" * (len(columns) + 3) + "|"]
    for data, cells, command in rows:
        values = [cell(cells.get(c), 2 if c.startswith("HD95") else 3) for c in columns]
        lines.append(f"| {data} | " + " | ".join(values) + f" | {command} |")
    return "\n".join(lines)


def first_iterations(dataset: Dataset, size: int, width: int, batches: int = 8) -> str:
    """At initialisation (seed 0), over the first ``batches`` training batches of 32: each SIBnet term's value
    (mean and coefficient of variation over batches: how arbitrary a one-batch first-iteration scale is) and the
    norm of its weighted, first-iteration-scaled gradient relative to the cross-entropy's."""
    from medexplain.models.registry import create_model
    from medexplain.train.data import read_split, standardisation, standardise
    from medexplain.train.losses import Objective

    split = read_split(dataset.folder, "train", size=size, task="ce")
    split = standardise(split, standardisation(split.images))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[: 32 * batches]
    lines = ["| data | formulation | L_cd: mean (CV) | L_sc: mean (CV) | |grad| ratio to CE: cd, sc | empty maps |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, arguments in FORMULATIONS.items():
        torch.manual_seed(0)
        model = create_model("resnet18", in_channels=1, num_classes=3, spatial_dims=2, width=width)
        objective = Objective.parse("ce+sibnet", sparsity_lambda=None, class_weights=None, sibnet=arguments)
        loss = objective.sibnet
        values: dict[str, list[float]] = {"distinctiveness": [], "coherence": [], "empty_maps": []}
        ratios: dict[str, list[float]] = {"cd": [], "sc": []}
        for chosen in order.split(32):
            x, y = split.images[chosen], split.targets[chosen]
            loss.cd_scale = loss.sc_scale = None  # every batch as if it were the first
            _, logits, parts = loss(model, x, y)
            for key in values:
                values[key].append(float(parts[key].detach()))
            terms = {"ce": objective.task_loss(logits, y), "cd": loss.w_cd * parts["distinctiveness"] / loss.cd_scale,
                     "sc": loss.w_sc * parts["coherence"] / loss.sc_scale}  # fmt: skip
            norms = {}
            for key, term in terms.items():
                grads = torch.autograd.grad(term, list(model.parameters()), retain_graph=True, allow_unused=True)
                norms[key] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
            for key in ratios:
                ratios[key].append(norms[key] / norms["ce"])

        def spread(v: list[float]) -> str:
            return f"{np.mean(v):.3g} ({np.std(v) / abs(np.mean(v)):.2f})"

        ratio = ", ".join(f"{np.mean(ratios[k]):.2f}" for k in ratios)
        lines.append(f"| {dataset.name} | {name} | {spread(values['distinctiveness'])} | "
                     f"{spread(values['coherence'])} | {ratio} | {np.mean(values['empty_maps']):.2f} |")  # fmt: skip
    return "\n".join(lines)


def training_curve(run_dir: Path) -> str:
    """``empty maps first -> last epoch, map energy first -> last`` from a SIBnet run's metrics.csv."""
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    if "train_empty_maps" not in rows[0]:
        return "-"
    empty = [float(r["train_empty_maps"]) for r in rows]
    energy = [float(r["train_map_energy"]) for r in rows]
    return f"{empty[0]:.2f} -> {empty[-1]:.2f}; {energy[0]:.2g} -> {energy[-1]:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["select", "test"], required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for run folders and evaluations (reused)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32, help="ResNet-18 width (64 as published)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--decoder-epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--formulations", nargs="+", choices=list(FORMULATIONS), default=list(FORMULATIONS))
    parser.add_argument("--sibnet", default="gradcam, signed mass, floor, w_sc / 4", choices=list(FORMULATIONS),
                        help="the formulation of the CE+SIBnet row of the test stage")  # fmt: skip
    parser.add_argument("--rows", nargs="+", help="only these rows (default: all of the stage)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    benchmark_process()
    device = torch.device(args.device)
    common = {"epochs": args.epochs, "batch_size": 32, "size": args.size, "optimizer": "adamw", "lr": 1e-3,
              "class_weights": "balanced"}  # fmt: skip
    tag = f"w{args.width}-s{args.size}-e{args.epochs}"

    def resnet(name: str, **settings: Any) -> Config:
        attention = settings.pop("attention", None)
        model_args = {"width": args.width, **({"attention": attention} if attention else {})}
        return Config(f"{name}-{tag}", "resnet18", {**common, "model_args": model_args, **settings})

    def sibnet(formulation: str) -> Config:
        slug = "".join(c if c.isalnum() else "-" for c in formulation)
        return resnet(f"sibnet-{slug}", loss="ce+sibnet", sibnet=FORMULATIONS[formulation])

    if args.stage == "select":
        configs = {"CE": resnet("ce", loss="ce"), **{f"SIBnet {f}": sibnet(f) for f in args.formulations}}
        seeds, split = [0], "val"
    else:
        configs = {
            "CE": resnet("ce", loss="ce"),
            "CE+SE": resnet("se", loss="ce", attention="se"),
            "CE+CBAM": resnet("cbam", loss="ce", attention="cbam"),
            "CE+SIBnet": sibnet(args.sibnet),
        }
        seeds, split = args.seeds, "test"
    configs = {row: config for row, config in configs.items() if not args.rows or row in args.rows}
    script = "benchmarks/sibnet_busi.py"
    shared = f"--stage {args.stage} --size {args.size} --width {args.width} --epochs {args.epochs}"
    shared += f" --decoder-epochs {args.decoder_epochs}"
    table_rows, differences, curves = [], [], []
    started = time.perf_counter()
    for name in args.datasets:
        dataset = DATASETS[name]
        evaluations: dict[str, list[dict]] = {}
        for row, config in configs.items():
            evaluations[row] = []
            for seed in seeds:
                run(config, dataset.folder, args.work / "runs" / name, seed, progress=False, device=args.device)
                run_dir = args.work / "runs" / name / f"{config.name}-seed{seed}"
                evaluations[row].append(cached_evaluation(run_dir, dataset, split, device, args.decoder_epochs))
                if seed == seeds[0]:
                    curves.append(f"| {name} | {row} | {training_curve(run_dir)} |")
                print(f"{name} {row} seed {seed}: done, {time.perf_counter() - started:.0f} s so far", flush=True)
            which = f"--rows {shlex.quote(row)}"
            if row == "CE+SIBnet":
                which += f" --sibnet {shlex.quote(args.sibnet)}"
            command = f"`python {script} {shared} --datasets {name} --seeds {' '.join(map(str, seeds))} {which}`"
            table_rows.append((f"{name} | {row}", summarise(evaluations[row]), command))
        reference_run = args.work / "runs" / name / f"{next(iter(configs.values())).name}-seed{seeds[0]}"
        for prior, scores in prior_maps(dataset, reference_run, split).items():
            table_rows.append((f"{name} | {prior}", localisation_cells([scores]), "(baseline)"))
        for row in evaluations:
            if row != "CE" and "CE" in evaluations:
                for key in ("pointing", "dice", "hd95"):
                    differences.append((f"{name} | {row} - CE", key, paired(evaluations[row], evaluations["CE"], key)))
    columns = ["balanced accuracy", "AUROC"]
    if args.stage == "test":
        columns += [f"AUROC s={s:g}" for s in SIGMAS]
    columns += ["pointing game", "Dice (hull)", "HD95 px (hull)", "empty maps", "L_cd", "border mass"]
    if args.stage == "test":
        columns.append("transfer Dice")
    lines = ["| data | paired difference | pointing game | Dice (hull) | HD95 px (hull) |", "|---|---|---|---|---|"]
    grouped: dict[str, dict[str, tuple[float, float, float]]] = {}
    for label, key, value in differences:
        grouped.setdefault(label, {})[key] = value
    for label, values in grouped.items():
        lines.append(f"| {label} | " + " | ".join(cell(values[k], 3) for k in ("pointing", "dice", "hd95")) + " |")
    command = "python " + " ".join(shlex.quote(a) for a in [script, *sys.argv[1:]])
    text = (
        f"ResNet-18 width {args.width}, {args.size} px, {args.epochs} epochs, AdamW 1e-3, batch 32, balanced class "
        f"weights, augmentation on; decoder {args.decoder_epochs} epochs; split {split}, seeds {seeds}; "
        f"{torch.get_num_threads()} CPU thread(s), device {args.device}; this call "
        f"{time.perf_counter() - started:.0f} s wall-clock, {time.process_time():.0f} s CPU (runs reused from --work "
        "are not retrained). "
        f"Command: `{command}`\n\n"
        + markdown(columns, table_rows)
        + "\n\n"
        + "\n".join(lines)
        + "\n\n| data | row | SIBnet training: empty maps first -> last epoch; map energy |\n|---|---|---|\n"
        + "\n".join(curves)
    )
    if args.stage == "select":
        text += "\n\n" + "\n\n".join(first_iterations(DATASETS[n], args.size, args.width) for n in args.datasets)
    write_text(args.work / f"{args.stage}.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
