"""Is the hospital a shortcut on CXR-TB? (issue 23) The chest X-rays come from two hospitals (Shenzhen, Montgomery)
whose images differ in look and whose TB rates differ; a model that recognised the hospital would score above
chance without looking at the lungs. For each seed's ResNet-18 of ``benchmarks/audit_cxr_tb.py`` (reused from its
``--work`` folder, trained there when missing):

1. test AUROC over all images and within each hospital (95 % bootstrap over images): a model that read only the
   hospital would fall to 0.5 within each;
2. the AUROC of the hospital alone (each test image scored by its hospital's TB rate in the training split);
3. how well the model's penultimate features tell the hospitals apart: a logistic regression trained on the
   training split's features, its AUROC on the test split's (1.0: the hospital is written in the features).

    python benchmarks/cxr_tb_hospital.py [--size smoke|default|full] [--seeds 0,1,2] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _headline import bootstrap_statistic, cell, predict, test_set
from audit_cxr_tb import PRESETS, TB_CLASS, config, subset
from audit_idrid import trained
from medexplain.explain.hooks import Hooks
from medexplain.metrics.classification import binary_auroc

HOSPITALS = ("Shenzhen", "Montgomery")


def features(model: torch.nn.Module, dataset: Any, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(N, F)`` inputs of the model's last layer ``fc`` (its penultimate features) and ``(N, K)`` logits of every
    item of ``dataset``, from one pass."""
    captured: list[torch.Tensor] = []
    with Hooks() as hooks, torch.no_grad():
        hooks.forward_pre(model.fc, lambda _, args: captured.append(args[0].double().cpu()))
        logits = predict(model, dataset, batch)
    return torch.cat(captured).numpy(), logits


def sources(dataset: Any) -> np.ndarray:
    return np.array([row.meta["source"] for row in dataset.rows])


def hospital_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   seed: int) -> tuple[float, float, float]:  # fmt: skip
    """AUROC (95 % bootstrap) of a logistic regression from features to "Montgomery", fitted on ``train``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(train[0]), train[1])
    score = probe.decision_function(scaler.transform(test[0]))
    return bootstrap_statistic(binary_auroc, test[1], score, seed=seed)


def seed_row(size: str, seed: int, work: Path) -> dict[str, Any]:
    preset = PRESETS[size]
    data = subset(preset, work)
    run_dir, _ = trained(config(preset), data, work, seed, "cpu")
    model, test = test_set(run_dir, data)
    _, train = test_set(run_dir, data, split="train")
    labels, where = test.labels.numpy() == TB_CLASS, sources(test)
    (test_features, logits), (train_features, _) = features(model, test), features(model, train)
    probability = torch.from_numpy(logits).softmax(1)[:, TB_CLASS].numpy()
    train_where, train_tb = sources(train), train.labels.numpy() == TB_CLASS
    rate = {h: float(train_tb[train_where == h].mean()) for h in HOSPITALS}
    row = {"seed": seed, "all": bootstrap_statistic(binary_auroc, labels, probability, seed=seed),
           "hospital alone": bootstrap_statistic(binary_auroc, labels, np.array([rate[h] for h in where]), seed=seed),
           "probe": hospital_probe((train_features, train_where == "Montgomery"),
                                   (test_features, where == "Montgomery"), seed),
           "rates": rate, "counts": {}}  # fmt: skip
    for hospital in HOSPITALS:
        inside = where == hospital
        row[hospital] = bootstrap_statistic(binary_auroc, labels[inside], probability[inside], seed=seed)
        row["counts"][hospital] = (int(inside.sum()), int(labels[inside].sum()))
    return row


def markdown(rows: Sequence[dict[str, Any]], size: str) -> str:
    counts = rows[0]["counts"]
    rates = ", ".join(f"{h} {rows[0]['rates'][h]:.2f}" for h in HOSPITALS)
    lines = [f"TB rate in the training split: {rates}. Test images (TB): "
             + ", ".join(f"{h} {n} ({tb})" for h, (n, tb) in counts.items()) + ".", "",
             "| seed | test AUROC, all | within Shenzhen | within Montgomery | hospital alone | features -> hospital "
             "(probe AUROC) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(f"| {row['seed']} | " + " | ".join(cell(tuple(row[k])) for k in ("all", *HOSPITALS,
                     "hospital alone", "probe")) + " |")  # fmt: skip
    seeds = ",".join(str(row["seed"]) for row in rows)
    lines += ["", "Command:", "", f"    python benchmarks/cxr_tb_hospital.py --size {size} --seeds {seeds}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(PRESETS), default="default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=None, help="audit_cxr_tb.py's work folder (runs reused)")
    args = parser.parse_args(argv)
    work = args.work or Path("runs") / "audit-cxr-tb" / args.size
    rows = [seed_row(args.size, int(seed), work) for seed in args.seeds.split(",")]
    print(markdown(rows, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
