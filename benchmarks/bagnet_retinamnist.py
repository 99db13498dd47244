"""Sparse BagNet vs ResNet-18 on RetinaMNIST (5-grade diabetic retinopathy), CPU, mean of 3 seeds.

Trains with ``medexplain.train`` (the same loop, augmentation, optimiser and schedule for both models) and prints
test ACC / AUROC / quadratic kappa, and the Gini index of the evidence maps, next to MedMNIST v2 (Yang et al.,
Scientific Data 2023): ResNet-18 (28) ACC 0.524 AUC 0.717; best row (Google AutoML Vision) ACC 0.531 AUC 0.750.
``gini`` is the Gini index of |E| over all classes and positions of each test image (E = b + L includes the
per-class bias b), ``gini_local`` that of |E - b|, the evidence computed from the patches (see RESULTS.md).

    .venv/bin/python benchmarks/bagnet_retinamnist.py --work /tmp/bagnet-retina            # main table
    .venv/bin/python benchmarks/bagnet_retinamnist.py --work /tmp/bagnet-retina --curve    # + lambda sweep
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _bagnet_runs import Config, run, single_thread, table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "retinamnist.npz"
REFERENCES = [
    ("MedMNIST v2 ResNet-18 (28)", {"accuracy": 0.524, "auroc": 0.717}),
    ("MedMNIST v2 best: Google AutoML Vision", {"accuracy": 0.531, "auroc": 0.750}),
]


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
    parser.add_argument("--only", choices=["resnet18", "bagnet"], help="train one of the two rows (parallel runs)")
    parser.add_argument("--curve", action="store_true", help="also sweep lambda (seed 0) for the sparsity curve")
    parser.add_argument("--curve-lambdas", type=float, nargs="+", default=[0.0, 0.03, 0.3, 1.0])
    args = parser.parse_args()
    single_thread()

    common = {"epochs": args.epochs, "batch_size": 32, "size": args.size, "optimizer": "adamw", "lr": 1e-3}
    common["progress"] = False

    def bagnet(sparsity_lambda: float, sparsity_on: str, activation: str) -> Config:
        settings = {**common, "model_args": {"evidence_activation": activation, "width": args.width}}
        if sparsity_lambda > 0:
            settings.update(loss="ce+sparsity", sparsity_lambda=sparsity_lambda, sparsity_on=sparsity_on)
            settings.update(sparsity_warmup=args.sparsity_warmup)
        else:
            settings.update(loss="ce")
        name = f"{args.model} w{args.width} {activation} lambda={sparsity_lambda:g} on {sparsity_on}"
        if sparsity_lambda > 0 and args.sparsity_warmup:
            name += f" warmup {args.sparsity_warmup}"
        return Config(name.replace(" ", "_").replace("=", ""), args.model, settings)

    configs = [
        Config(
            f"resnet18_w{args.resnet_width}",
            "resnet18",
            {**common, "model_args": {"small_input": True, "width": args.resnet_width}},
        ),
        bagnet(args.sparsity_lambda, args.sparsity_on, args.evidence_activation),
    ]
    if args.only:
        configs = [configs[0] if args.only == "resnet18" else configs[1]]
    rows = {c.name: [run(c, DATA, args.work, seed) for seed in args.seeds] for c in configs}
    print(f"RetinaMNIST test split, {args.size} px, {args.epochs} epochs, seeds {args.seeds}")
    print(table(rows, REFERENCES))

    if args.curve:
        curve = {}
        for on, activation in (("evidence", "linear"), (args.sparsity_on, args.evidence_activation)):
            for value in args.curve_lambdas:
                config = bagnet(value, on, activation)
                curve[config.name] = [run(config, DATA, args.work, args.seeds[0])]
        print(f"\nAccuracy-sparsity curve (seed {args.seeds[0]})")
        print(table(curve, []))


if __name__ == "__main__":
    main()
