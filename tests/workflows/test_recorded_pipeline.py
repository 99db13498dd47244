"""Behaviour kept across refactors: a small synth -> explain -> evaluate pipeline, through the command line, gives
the recorded values.

Recorded first from the code before the workflows layer (fb2069d); the refactor kept them. Recorded again when
issue 21 changed what they measure on purpose: maps stored at float32 (were float16), the pointing game's tied
maxima scored by their share in the mask, relevance mass of the positive relevance. The models are untrained and
seeded, so nothing depends on a training trajectory; the tolerances cover the rounding differences between CPUs.
"""

from __future__ import annotations

import csv

import pytest
import torch

from medexplain.cli import main
from medexplain.data.synth import write_fundus
from medexplain.models import create_model, save_run

METHODS = "evidence,gradcam,saliency,lrp-epsilon-plus-flat"
METRICS = "pointing-game,relevance-mass,mask-auroc,deletion-auc,insertion-auc,gini,max-sensitivity"
RECORDED = {  # (method, metric): mean, recorded at the commit that stores maps at float32 (issue 21)
    ("evidence", "pointing-game"): 0.3333333333333333,
    ("evidence", "relevance-mass"): 0.05536283552646637,
    ("evidence", "mask-auroc"): 0.4892170528570811,
    ("evidence", "deletion-auc"): 0.9813933372497559,
    ("evidence", "insertion-auc"): 0.9999999761581421,
    ("evidence", "gini"): 0.27272518873214724,
    ("evidence", "max-sensitivity"): 0.007486820686608553,
    ("gradcam", "pointing-game"): 0.0,
    ("gradcam", "relevance-mass"): 0.050289406130711235,
    ("gradcam", "mask-auroc"): 0.47555217146873474,
    ("gradcam", "deletion-auc"): 0.899679982662201,
    ("gradcam", "insertion-auc"): 0.9999999284744263,
    ("gradcam", "gini"): 0.912818717956543,
    ("gradcam", "max-sensitivity"): 0.19422316998243333,
    ("saliency", "pointing-game"): 0.0,
    ("saliency", "relevance-mass"): 0.052629129961133,
    ("saliency", "mask-auroc"): 0.6360148390134176,
    ("saliency", "deletion-auc"): 0.8588007926940918,
    ("saliency", "insertion-auc"): 0.9999999642372132,
    ("saliency", "gini"): 0.6028927206993103,
    ("saliency", "max-sensitivity"): 0.5272485911846161,
    ("lrp-epsilon-plus-flat", "pointing-game"): 0.0,
    ("lrp-epsilon-plus-flat", "relevance-mass"): 0.0793043381224076,
    ("lrp-epsilon-plus-flat", "mask-auroc"): 0.42613065242767334,
    ("lrp-epsilon-plus-flat", "deletion-auc"): 0.9444239377975464,
    ("lrp-epsilon-plus-flat", "insertion-auc"): 0.9999999284744263,
    ("lrp-epsilon-plus-flat", "gini"): 0.7709707379341125,
    ("lrp-epsilon-plus-flat", "max-sensitivity"): 0.012688859924674034,
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("recorded")
    data = write_fundus(root / "data", n=40, size=64, seed=3, show_progress=False, label="referable")
    torch.manual_seed(0)
    model = create_model("sparse-bagnet9-light", in_channels=3, num_classes=2)
    save_run(model, root / "model", "sparse-bagnet9-light", {"in_channels": 3, "num_classes": 2})
    maps, scores = root / "maps", root / "scores"
    common = ["--data", str(data), "--no-progress"]
    assert main(["explain", "--model", str(root / "model"), "--method", METHODS, "--out", str(maps), *common]) == 0
    assert main(["evaluate", "--explanations", str(maps), "--model", str(root / "model"), "--metrics", METRICS,
                 "--out", str(scores), "--resamples", "200", *common]) == 0  # fmt: skip
    return maps, scores


def test_summary_equals_the_recorded_values(pipeline) -> None:
    _maps, scores = pipeline
    with (scores / "summary.csv").open() as handle:
        summary = {(row["method"], row["metric"]): row for row in csv.DictReader(handle)}
    assert set(RECORDED) == set(summary)
    for (method, metric), value in RECORDED.items():
        tolerance = 1 / 8 + 1e-9 if metric == "pointing-game" else 2e-3
        mean = float(summary[method, metric]["mean"])
        assert mean == pytest.approx(value, rel=tolerance, abs=tolerance), (method, metric)
