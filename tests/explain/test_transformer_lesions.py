"""A 3D ViT trained on synthetic lesion volumes: AttnLRP, CP-LRP and attention rollout point at the lesion far more
often than a centred prior or noise (``benchmarks/vit_lesions_3d.py`` records every explainer over five seeds;
AttnLRP 0.94, CP-LRP 0.96, rollout 0.74, centre prior 0.11, noise 0.01). Margins are wide, so any CPU's training
trajectory passes; a model that learnt nothing would fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medexplain.data.synth import blobs
from vit_lesions_3d import SIZE, TEST, scores, train_on_blobs


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return train_on_blobs(seed=0)


def test_the_3d_vit_detects_the_lesions(trained: torch.nn.Module) -> None:
    data = blobs(TEST, 3, SIZE, 1000)
    with torch.no_grad():
        predicted = trained(torch.from_numpy(data.images)).argmax(1).numpy()
    assert (predicted == data.labels).mean() >= 0.9


def test_3d_vit_maps_peak_in_the_lesion_more_often_than_baselines(trained: torch.nn.Module) -> None:
    results = scores(trained, 0, methods=("attnlrp", "cp-lrp", "attention-rollout"))
    hits = {name: float(np.nanmean(values["pointing game"])) for name, values in results.items()}
    baseline = max(hits["baseline-centre"], hits["baseline-random"])
    assert baseline <= 0.4
    for name in ("attnlrp", "cp-lrp"):
        assert hits[name] >= 0.75 and hits[name] >= baseline + 0.4, hits
    assert hits["attention-rollout"] >= baseline + 0.25, hits
