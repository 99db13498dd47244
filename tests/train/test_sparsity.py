"""Acceptance: the sparsity penalty shrinks the local evidence of a sparse BagNet without costing its accuracy.

Synthetic fundus photographs (160 at 48 px) with the paper's binary task, referable DR (grade >= 2). Both runs use
the same architecture (BagNet-9 light with ReLU local evidence, E = b + relu(W f)), seed and schedule; only lambda
differs (0 vs 0.1 on the local evidence, ramped in over 4 epochs). Two seeds, properties with margin: what the
penalty acts on, mean |E - b| over the validation images, falls in every seed and to below 0.85x on average over
the seeds (measured: 0.47x and 0.87x with AVX-512 kernels, seed 1 0.70x with AVX2 ones); the validation AUROC stays
within 0.12 of the dense model's on average (gaps 0.04 to 0.08). The Gini index is not asserted: at this size it
rose in one seed and fell in another (0.72 -> 0.85, 0.83 -> 0.79), and with the former settings (lr 3e-3) one
seed's dense model did not learn at all (benchmarks/RESULTS.md, issue 20).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medexplain.models import load, run_dataset
from medexplain.train import TrainConfig, train
from medexplain.train.losses import local_part

SETTINGS = {
    "epochs": 12,
    "batch_size": 16,
    "lr": 1e-3,
    "optimizer": "adamw",
    "model_args": {"evidence_activation": "relu"},
}
SEEDS = (0, 1)


def _local_evidence(run: Path, data: Path) -> float:
    """Mean |E - b| over the validation images, classes and positions."""
    model, config = load(run)
    validation = run_dataset(config, data, "val")
    images = torch.stack([validation[i].image for i in range(len(validation))])
    with torch.no_grad():
        return float(local_part(model, model.evidence_map(images)).abs().mean())


def test_sparsity_shrinks_the_local_evidence_at_comparable_accuracy(referable_fundus: Path, tmp_path: Path) -> None:
    dense_auroc, sparse_auroc, ratios = [], [], []
    for seed in SEEDS:
        dense = TrainConfig("bagnet9-light", loss="ce", seed=seed, **SETTINGS)
        sparse = TrainConfig("sparse-bagnet9-light", loss="ce+sparsity", sparsity_lambda=0.1, sparsity_on="local",
                             sparsity_warmup=4, seed=seed, **SETTINGS)  # fmt: skip
        dense_auroc.append(train(dense, referable_fundus, tmp_path / f"dense{seed}", progress=False)["metrics"]["val"]
                           ["auroc"])  # fmt: skip
        sparse_auroc.append(train(sparse, referable_fundus, tmp_path / f"sparse{seed}", progress=False)["metrics"]
                            ["val"]["auroc"])  # fmt: skip
        ratios.append(_local_evidence(tmp_path / f"sparse{seed}", referable_fundus)
                      / _local_evidence(tmp_path / f"dense{seed}", referable_fundus))  # fmt: skip
    assert all(ratio < 1 for ratio in ratios) and sum(ratios) / len(ratios) < 0.85, ratios
    mean_dense, mean_sparse = sum(dense_auroc) / len(SEEDS), sum(sparse_auroc) / len(SEEDS)
    assert mean_dense > 0.85, "the baseline must have learnt the task for the comparison to mean anything"
    assert mean_sparse > mean_dense - 0.12
