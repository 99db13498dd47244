"""Sparse BagNet vs ResNet-18 on RetinaMNIST (5-grade diabetic retinopathy), CPU, mean of 3 seeds.

Trains with ``medexplain.train`` (the same loop, augmentation, optimiser and schedule for both models) and prints
test ACC / AUROC / quadratic kappa, and the Gini index of the evidence maps, next to MedMNIST v2 (Yang et al.,
Scientific Data 2023): ResNet-18 (28) ACC 0.524 AUC 0.717; best row (Google AutoML Vision) ACC 0.531 AUC 0.750.
``gini`` is the Gini index of |E| over all classes and positions of each test image (E = b + L includes the
per-class bias b), ``gini_local`` that of |E - b|, the evidence computed from the patches (see RESULTS.md).
A logistic regression on each image's mean colour is printed beside them: it shows how much of this task is a
global colour shift, which no map of sparse local evidence can express.

    .venv/bin/python benchmarks/bagnet_retinamnist.py --work /tmp/bagnet-retina            # main table
    .venv/bin/python benchmarks/bagnet_retinamnist.py --work /tmp/bagnet-retina --curve    # + lambda sweep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from _bagnet_runs import Config, benchmark_process, run, table
from medexplain.metrics.classification import classification_summary

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "retinamnist.npz"
REFERENCES = [
    ("MedMNIST v2 ResNet-18 (28)", {"accuracy": 0.524, "auroc": 0.717}),
    ("MedMNIST v2 best: Google AutoML Vision", {"accuracy": 0.531, "auroc": 0.750}),
]


def colour_baseline(data: Path, split: str = "test") -> dict[str, float]:
    """Multinomial logistic regression on each image's mean colour (3 numbers per image), standardised on the
    training split: how far global colour alone goes, with no spatial information at all."""
    started = time.process_time()
    with np.load(data, allow_pickle=False) as archive:
        means = {name: archive[f"{name}_images"].mean(axis=(1, 2)) for name in ("train", split)}
        labels = {name: archive[f"{name}_labels"].ravel() for name in ("train", split)}
    centre, scale = means["train"].mean(0), means["train"].std(0)
    model = LogisticRegression(max_iter=5000).fit((means["train"] - centre) / scale, labels["train"])
    metrics = classification_summary(labels[split], model.predict_proba((means[split] - centre) / scale))
    return {**metrics, "cpu_seconds": time.process_time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the run folders (reused if present)")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--resnet-width", type=int, default=16, help="ResNet-18 width (64 as published)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="sparse-bagnet9-light")
    parser.add_argument("--width", type=int, default=16, help="BagNet width (16 = the registered light layout)")
    parser.add_argument("--lambda", dest="sparsity_lambda", type=float, default=0.03)
    parser.add_argument("--sparsity-on", default="local")
    parser.add_argument("--sparsity-warmup", type=int, default=3)
    parser.add_argument("--evidence-activation", default="relu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, help="evaluate and save an EMA of the weights (both models)")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="(both models)")
    parser.add_argument("--class-weights", choices=["balanced"], help="(both models)")
    parser.add_argument("--ordinal-sigma", type=float, default=0.0, help="Gaussian soft grade targets (both models)")
    parser.add_argument("--monitor", default="auroc", help="validation metric choosing the epoch")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation (both models)")
    parser.add_argument("--tta-flip-axes", type=int, nargs="+", help="test-time flips, BagNet only (evidence maps)")
    parser.add_argument("--only", choices=["resnet18", "bagnet"], help="train one of the two rows (parallel runs)")
    parser.add_argument("--curve", action="store_true", help="also sweep lambda for the accuracy-sparsity curve")
    parser.add_argument("--curve-seeds", type=int, nargs="+", help="seeds of the curve (default: the first seed)")
    parser.add_argument(
        "--curve-heads",
        nargs="+",
        choices=["linear", "chosen"],
        default=["linear", "chosen"],
        help="curve of the published linear head on E, and/or of the chosen head and target",
    )
    parser.add_argument("--curve-lambdas", type=float, nargs="+", default=[0.0, 0.03, 0.3, 1.0])
    args = parser.parse_args()
    benchmark_process()

    common = {"epochs": args.epochs, "batch_size": args.batch_size, "size": args.size, "optimizer": "adamw"}
    common.update(lr=args.lr, progress=False, ema_decay=args.ema_decay, label_smoothing=args.label_smoothing)
    common.update(class_weights=args.class_weights, ordinal_sigma=args.ordinal_sigma, monitor=args.monitor)
    common["augment"] = not args.no_augment
    # Options away from the original protocol name the run folders; the original names stay as they were.
    suffix = "".join(
        f"_{label}{value:g}" if isinstance(value, float) else f"_{label}{value}"
        for label, value, default in (
            ("size", args.size, 28),
            ("ep", args.epochs, 10),
            ("bs", args.batch_size, 32),
            ("lr", args.lr, 1e-3),
            ("ema", args.ema_decay, None),
            ("ls", args.label_smoothing, 0.0),
            ("cw", args.class_weights, None),
            ("os", args.ordinal_sigma, 0.0),
            ("monitor-", args.monitor, "auroc"),
            ("noaug", "" if args.no_augment else None, None),
        )
        if value != default
    )

    def bagnet(sparsity_lambda: float, sparsity_on: str, activation: str) -> Config:
        settings = {**common, "model_args": {"evidence_activation": activation, "width": args.width}}
        settings["tta_flip_axes"] = args.tta_flip_axes
        if sparsity_lambda > 0:
            settings.update(loss="ce+sparsity", sparsity_lambda=sparsity_lambda, sparsity_on=sparsity_on)
            settings.update(sparsity_warmup=args.sparsity_warmup)
        else:
            settings.update(loss="ce")
        name = f"{args.model} w{args.width} {activation} lambda={sparsity_lambda:g} on {sparsity_on}"
        if sparsity_lambda > 0 and args.sparsity_warmup:
            name += f" warmup {args.sparsity_warmup}"
        if args.tta_flip_axes:
            name += " tta" + "".join(map(str, args.tta_flip_axes))
        return Config(name.replace(" ", "_").replace("=", "") + suffix, args.model, settings)

    configs = [
        Config(
            f"resnet18_w{args.resnet_width}{suffix}",
            "resnet18",
            {**common, "model_args": {"small_input": True, "width": args.resnet_width}},
        ),
        bagnet(args.sparsity_lambda, args.sparsity_on, args.evidence_activation),
    ]
    if args.only:
        configs = [configs[0] if args.only == "resnet18" else configs[1]]
    rows = {c.name: [run(c, DATA, args.work, seed) for seed in args.seeds] for c in configs}
    baseline = "mean colour + logistic regression"
    rows[baseline] = [colour_baseline(DATA)]
    validation = {c.name: [run(c, DATA, args.work, seed, "val") for seed in args.seeds] for c in configs}
    validation[baseline] = [colour_baseline(DATA, "val")]
    print(f"RetinaMNIST validation split (settings are chosen on it), chosen epoch, seeds {args.seeds}")
    print(table(validation, []))
    print(f"\nRetinaMNIST test split, {args.size} px, {args.epochs} epochs, seeds {args.seeds}")
    print(table(rows, REFERENCES))

    if args.curve:
        heads = {"linear": ("evidence", "linear"), "chosen": (args.sparsity_on, args.evidence_activation)}
        seeds = args.curve_seeds or args.seeds[:1]
        curve, curve_val = {}, {}
        for head in args.curve_heads:
            on, activation = heads[head]
            for value in args.curve_lambdas:
                config = bagnet(value, on, activation)
                curve[config.name] = [run(config, DATA, args.work, seed) for seed in seeds]
                curve_val[config.name] = [run(config, DATA, args.work, seed, "val") for seed in seeds]
        print(f"\nAccuracy-sparsity curve, validation split (seeds {seeds})")
        print(table(curve_val, []))
        print(f"\nAccuracy-sparsity curve, test split (seeds {seeds})")
        print(table(curve, []))


if __name__ == "__main__":
    main()
