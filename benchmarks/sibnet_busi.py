"""SIBnet vs squeeze-and-excitation vs CBAM vs plain ResNet-18 on BUSI (breast ultrasound, 3 classes), CPU.

Mahapatra, Poellinger, Reyes (Medical Image Analysis 2022) report that SIBnet's Grad-CAM guidance beats SE and CBAM
attention. This trains ResNet-18 with CE, CE + SE blocks, CE + CBAM blocks and CE + SIBnet under the same budget
(``medexplain.train``: same data, augmentation, optimiser, schedule, epochs, seed) and reports on the test split:

- balanced accuracy and AUROC (one-vs-rest macro), with 95 % paired bootstrap intervals over test images;
- AUROC under Gaussian noise (mean 0, sigma 0.005 / 0.01 / 0.05 / 0.1 on images scaled to [0, 1], clipped);
- Grad-CAM (true class, last block) against the lesion masks of benign and malignant images: Dice, HD95 and
  SSIM of the Otsu-binarised map filled to its convex hull (SIBnet's protocol), pointing game, relevance mass;
- saliency-to-segmentation transfer: the classifier frozen, a light decoder trained on the training masks
  (``medexplain.train.transfer``), Dice on the test lesion images.

    .venv/bin/python benchmarks/sibnet_busi.py --work /tmp/sibnet-busi            # CPU budget (minutes)
    .venv/bin/python benchmarks/sibnet_busi.py --work /tmp/sibnet-busi-full --full # 128 px, width 64, 3 seeds

Finished runs in ``--work`` are reused; interrupted ones resume. The markdown table goes to stdout and
``WORK/table.md``; per-run figures to ``WORK/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from _bagnet_runs import Config, run, single_thread
from _headline import bootstrap_statistic, cell, mean_interval
from medexplain.data import collate, load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.data.transforms import Resize
from medexplain.explain.cam import cam_maps
from medexplain.files import write_text
from medexplain.metrics.classification import auroc, balanced_accuracy
from medexplain.metrics.localisation import pointing_game, relevance_mass
from medexplain.metrics.overlap import dice, hd95, ssim
from medexplain.metrics.robustness import auroc_under_noise
from medexplain.models import load
from medexplain.train.transfer import segmentation_dice, train_decoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
SIGMAS = (0.005, 0.01, 0.05, 0.1)
PEAK = 255.0  # BUSI is 8-bit: [0, 1] images are the stored values / 255


class UnitInput(nn.Module):
    """The classifier on [0, 1] images: ``model((PEAK * x - mean) / std)``, the run's own standardisation."""

    def __init__(self, model: nn.Module, intensity: dict[str, list[float]]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(intensity["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(intensity["std"]).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((PEAK * x - self.mean) / self.std)


def split_tensors(data: Path, split: str, transform) -> tuple[Tensor, Tensor, Tensor]:
    dataset = load_dataset(data, split=split, transform=transform)
    batch = collate([dataset[i] for i in range(len(dataset))])
    return batch.image, batch.label, batch.masks["lesion"]


def localisation(model: nn.Module, images: Tensor, labels: Tensor, masks: Tensor, seed: int) -> dict[str, object]:
    """Grad-CAM of the true class vs the lesion mask, on images that have a lesion."""
    has_lesion = masks.flatten(1).any(1)
    x, y, m = images[has_lesion], labels[has_lesion], masks[has_lesion][:, 0]
    chunks = zip(x.split(32), y.split(32), strict=True)
    maps = torch.cat([cam_maps(model.eval(), xs, ys.tolist()).maps for xs, ys in chunks])[:, 0]
    nonzero = maps.flatten(1).amax(1) > 0
    scores = {
        "dice": dice(maps, m, hull=True),
        "hd95": hd95(maps, m, hull=True),
        "ssim": ssim(maps, m, hull=True),
        "pointing": torch.full((len(maps),), math.nan),
        "mass": torch.full((len(maps),), math.nan),
    }
    scores["pointing"][nonzero] = pointing_game(maps[nonzero], m[nonzero])
    scores["mass"][nonzero] = relevance_mass(maps[nonzero], m[nonzero]).float()
    result: dict[str, object] = {name: mean_interval(values.tolist(), seed) for name, values in scores.items()}
    result["zero_maps"] = int((~nonzero).sum())
    result["lesion_images"] = len(maps)
    return result


def evaluate_run(run_dir: Path, data: Path, seed: int, decoder_epochs: int) -> dict[str, object]:
    model, config = load(run_dir)
    model.eval()
    preprocessing = config["preprocessing"]
    standardised = preprocessing_transform(preprocessing)
    images, labels, masks = split_tensors(data, "test", standardised)
    with torch.no_grad():
        probabilities = torch.cat([model(chunk).softmax(1) for chunk in images.split(64)]).double().numpy()
    y = labels.numpy()
    result: dict[str, object] = {
        "balanced_accuracy": bootstrap_statistic(
            lambda t, p: balanced_accuracy(t, p.argmax(1)), y, probabilities, seed=seed
        ),
        "auroc": bootstrap_statistic(auroc, y, probabilities, seed=seed),
    }
    raw, _, _ = split_tensors(data, "test", Resize(preprocessing["size"]))
    if float(raw.max()) > PEAK:
        raise SystemExit(f"{data}: images exceed {PEAK:g}; the [0, 1] scaling assumes 8-bit images")
    noisy = auroc_under_noise(
        UnitInput(model, preprocessing["intensity"]), raw / PEAK, labels, sigmas=SIGMAS, seed=seed, clip=(0.0, 1.0)
    )
    result["auroc_noise"] = {f"{row['sigma']:g}": row["auroc"] for row in noisy}
    result.update(localisation(model, images, labels, masks, seed))
    train_images, _, train_masks = split_tensors(data, "train", standardised)
    segmenter = train_decoder(model, train_images, train_masks, epochs=decoder_epochs, seed=seed)
    has_lesion = masks.flatten(1).any(1)
    transfer = segmentation_dice(segmenter, images[has_lesion], masks[has_lesion])
    result["transfer_dice"] = mean_interval(transfer.tolist(), seed)
    return result


def table(results: dict[str, dict[str, object]]) -> str:
    first = ["balanced acc.", "AUROC", *[f"AUROC s={s:g}" for s in SIGMAS]]
    second = ["Dice (hull)", "HD95 px (hull)", "SSIM (hull)", "pointing game", "relevance mass", "transfer Dice"]
    keys = ["dice", "hd95", "ssim", "pointing", "mass", "transfer_dice"]
    lines = ["| run | " + " | ".join(first) + " |", "|---" * (len(first) + 1) + "|"]
    for name, r in results.items():
        noise = [cell(r["auroc_noise"][f"{s:g}"]) for s in SIGMAS]
        lines.append(f"| {name} | {cell(r['balanced_accuracy'])} | {cell(r['auroc'])} | " + " | ".join(noise) + " |")
    lines += ["", "| run | " + " | ".join(second) + " | all-zero maps |", "|---" * (len(second) + 2) + "|"]
    for name, r in results.items():
        zero = f"{r['zero_maps']} / {r['lesion_images']}"
        lines.append(f"| {name} | " + " | ".join(cell(r[k], 2 if k == "hd95" else 3) for k in keys) + f" | {zero} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for run folders and results (reused)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--full", action="store_true", help="128 px, width 64, 30 epochs, seeds 0 1 2")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--width", type=int, default=32, help="ResNet-18 width (64 as published)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--decoder-epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=["CE", "CE+SE", "CE+CBAM", "CE+SIBnet"])
    args = parser.parse_args()
    if args.full:
        args.size, args.width, args.epochs, args.decoder_epochs, args.seeds = 128, 64, 30, 60, [0, 1, 2]
    single_thread()
    common = {"epochs": args.epochs, "batch_size": 32, "size": args.size, "optimizer": "adamw", "lr": 1e-3}
    model_args = {"width": args.width}
    configs = {
        "CE": Config(f"ce-w{args.width}-s{args.size}-e{args.epochs}", "resnet18",
                     {**common, "loss": "ce", "model_args": model_args}),
        "CE+SE": Config(f"se-w{args.width}-s{args.size}-e{args.epochs}", "resnet18",
                        {**common, "loss": "ce", "model_args": {**model_args, "attention": "se"}}),
        "CE+CBAM": Config(f"cbam-w{args.width}-s{args.size}-e{args.epochs}", "resnet18",
                          {**common, "loss": "ce", "model_args": {**model_args, "attention": "cbam"}}),
        "CE+SIBnet": Config(f"sibnet-w{args.width}-s{args.size}-e{args.epochs}", "resnet18",
                            {**common, "loss": "ce+sibnet", "model_args": model_args}),
    }  # fmt: skip
    saved = args.work / "results.json"
    results: dict[str, dict[str, object]] = json.loads(saved.read_text()) if saved.is_file() else {}
    results = {key: {k: tuple(v) if isinstance(v, list) else v for k, v in r.items()} for key, r in results.items()}
    for seed in args.seeds:
        for row in args.rows:
            name = f"{row} seed {seed}"
            config = configs[row]
            started = time.perf_counter()
            run(config, args.data, args.work / "runs", seed)
            trained = time.perf_counter() - started
            key = f"{config.name}-seed{seed}"
            if key not in results:
                result = evaluate_run(args.work / "runs" / key, args.data, seed, args.decoder_epochs)
                results[key] = {"row": name, **result, "train_seconds_this_call": trained}
                write_text(saved, json.dumps(results, indent=1) + "\n")
            print(f"{name}: done ({trained:.0f} s training in this call)", flush=True)
    chosen = {
        results[f"{configs[row].name}-seed{seed}"]["row"]: results[f"{configs[row].name}-seed{seed}"]
        for seed in args.seeds
        for row in args.rows
    }
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/sibnet_busi.py", *sys.argv[1:]])
    text = (
        f"ResNet-18 width {args.width}, {args.size} px, {args.epochs} epochs, AdamW 1e-3, batch 32, augmentation on; "
        f"decoder {args.decoder_epochs} epochs; {torch.get_num_threads()} CPU thread(s). Command: `{command}`\n\n"
        + table(chosen)
    )
    write_text(args.work / "table.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
