"""Acceptance on synthetic atrophy data (2D): the simulator flips a classifier and localises the atrophy.

The classifier is a small CNN trained here (fast on one core); ``tests/simulate/test_simulate_cli.py`` runs the same
pipeline through ``medexplain train`` and the CLI, and ``benchmarks/simulate_3d.py`` does it in 3D.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from medexplain.data import load_dataset
from medexplain.data.transforms import ScaleIntensity
from medexplain.simulate import SimulatorConfig, TrainingConfig, train_simulator
from medexplain.simulate.apply import apply_simulator

SIZE = 48  # as in conftest.atrophy_2d


def small_cnn() -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, 8), nn.MaxPool2d(2), *block(8, 16), nn.MaxPool2d(2), *block(16, 16),
        nn.Flatten(), nn.Linear(16 * (SIZE // 4) ** 2, 2),
    )


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 15) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images))
        for start in range(0, len(images), 32):
            batch = order[start : start + 32]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


SEEDS = (0, 1, 2)


@pytest.mark.timeout(1500)  # six simulator trainings: past 10 min on a machine at load 9
def test_simulator_flips_predictions_and_its_jacobians_localise_the_atrophy(atrophy_2d, tmp_path) -> None:
    """Over three simulator seeds (one training trajectory is not a property: a seed can localise at AUROC 0.64
    where the others reach 0.9, and the penalty's effect varies from 3 % to 60 % per run; benchmarks/RESULTS.md)."""
    scale = ScaleIntensity((0, 255))
    train = load_dataset(atrophy_2d, "train", transform=scale)
    images = torch.stack([train[i].image for i in range(len(train))])
    classifier = fit(small_cnn(), images, train.labels)
    test = load_dataset(atrophy_2d, "test", transform=scale)
    test_images = torch.stack([test[i].image for i in range(len(test))])
    with torch.no_grad():
        assert (classifier(test_images).argmax(1) == test.labels).float().mean() >= 0.9
    weights = {name: value.clone() for name, value in classifier.state_dict().items()}

    config = SimulatorConfig(spatial_dims=2, in_channels=1, channels=(8, 16, 32))
    plain = TrainingConfig(epochs=5, batch_size=16, learning_rate=1e-3, margin=5.0, magnitude_bound=1.5)
    # with the minimal-change penalty (the 3D benchmark's setting)
    settings = {"plain": plain, "penalised": replace(plain, displacement_weight=0.5)}
    summaries: dict[str, list[dict]] = {"plain": [], "penalised": []}
    for seed in SEEDS:
        for kind, setting in settings.items():
            simulator, history = train_simulator(
                classifier, TensorDataset(images), config, replace(setting, seed=seed), progress=False
            )
            assert history[-1]["hinge"] < history[0]["hinge"]
            for direction in ("inject", "remove"):
                out = tmp_path / f"{kind}_{seed}_{direction}"
                summary = apply_simulator(simulator, classifier, test, direction, out, progress=False)
                summaries[kind].append(summary)
                assert summary["eligible"] >= 10
                assert summary["flip_rate"] >= 0.75, summary  # 0.94-1.00 in the runs measured
                assert summary["logit_shift"] * (1 if direction == "inject" else -1) > 3.0
                assert summary["folding_rate"] < 0.01
                assert json.loads((out / "summary.json").read_text()) == pytest.approx(summary)
    for name, value in classifier.state_dict().items():  # the user's classifier is never modified
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)

    def mean(kind: str, key: str) -> float:
        return float(np.mean([summary[key] for summary in summaries[kind]]))

    # localisation well above chance (0.5): 0.81-0.93 per seed measured, 0.84-0.97 with the penalty
    assert mean("plain", "auroc_atrophy") > 0.7
    assert mean("penalised", "auroc_atrophy") > 0.7
    # the penalty shortens the fields on average (by 35-40 % in the runs measured; not in every single run)
    assert mean("penalised", "mean_displacement") < 0.8 * mean("plain", "mean_displacement")

    # the AUROC in items.csv is that of -d log det J (read back from disk) against the mask (scikit-learn)
    for direction, sign in (("inject", 1), ("remove", -1)):
        rows = list(csv.DictReader((tmp_path / f"plain_0_{direction}" / "items.csv").open()))
        for row, sample in list(zip(rows, (test[i] for i in range(len(test))), strict=False))[:5]:
            jacobian = np.load(tmp_path / f"plain_0_{direction}" / row["jacobians"])
            expected = roc_auc_score(sample.masks["atrophy"].numpy().ravel() > 0.5, -sign * np.log(jacobian).ravel())
            assert float(row["auroc_atrophy"]) == pytest.approx(expected, abs=1e-5)
