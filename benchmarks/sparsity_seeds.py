"""Does the sparsity penalty concentrate a BagNet's evidence at comparable accuracy, seed after seed? (issue 20)

The setting of ``tests/train/test_sparsity.py`` (160 synthetic fundus photographs at 48 px, referable DR,
BagNet-9 light with ReLU local evidence, 12 epochs, AdamW, batch 16), trained dense (lambda 0) and sparse (lambda on
the local evidence, ramped in over 4 epochs) per seed. Prints per seed the validation AUROC, ``gini_local`` and the
mean |E - b| over the validation images of both models.

    .venv/bin/python benchmarks/sparsity_seeds.py [--lr 1e-3] [--sparsity-lambda 0.1] [--seeds 0,1,2,3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from medexplain.data.synth import write_fundus
from medexplain.models import load, run_dataset
from medexplain.train import TrainConfig, train
from medexplain.train.losses import local_part


def local_evidence(run: Path, data: Path) -> float:
    """Mean |E - b| over the validation images, classes and positions."""
    model, config = load(run)
    validation = run_dataset(config, data, "val")
    images = torch.stack([validation[i].image for i in range(len(validation))])
    with torch.no_grad():
        return float(local_part(model, model.evidence_map(images)).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sparsity-lambda", type=float, default=0.1)
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {"epochs": 12, "batch_size": 16, "lr": args.lr, "optimizer": "adamw",
                "model_args": {"evidence_activation": "relu"}}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = write_fundus(root / "data", 160, 48, 0, show_progress=False, label="referable")
        print(f"lr {args.lr}, lambda {args.sparsity_lambda}")
        print("| seed | dense AUROC | dense gini_local | dense mean abs(E - b) | sparse AUROC | sparse gini_local | "
              "sparse mean abs(E - b) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for seed in (int(s) for s in args.seeds.split(",")):
            configs = {
                "dense": TrainConfig("bagnet9-light", loss="ce", seed=seed, **settings),
                "sparse": TrainConfig("sparse-bagnet9-light", loss="ce+sparsity", sparsity_on="local",
                                      sparsity_lambda=args.sparsity_lambda, sparsity_warmup=4, seed=seed, **settings),
            }  # fmt: skip
            cells = []
            for name, config in configs.items():
                validation = train(config, data, root / f"{name}{seed}", progress=False)["metrics"]["val"]
                cells += [validation["auroc"], validation["gini_local"], local_evidence(root / f"{name}{seed}", data)]
            print(f"| {seed} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


if __name__ == "__main__":
    main()
