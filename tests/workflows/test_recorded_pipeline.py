"""Behaviour kept across refactors: a small synth -> explain -> evaluate pipeline, through the command line, gives
the values recorded from the code before the workflows layer (commit fb2069d).

The models are untrained and seeded, so nothing depends on a training trajectory; the tolerances cover the
rounding differences between CPUs (maps are stored as float16).
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
RECORDED = {  # (method, metric): mean, from fb2069d
    ("evidence", "pointing-game"): 0.3333333333333333,
    ("evidence", "relevance-mass"): 0.04163626208901405,
    ("evidence", "mask-auroc"): 0.4892268975575765,
    ("evidence", "deletion-auc"): 0.9811255693435669,
    ("evidence", "insertion-auc"): 0.9999999761581421,
    ("evidence", "gini"): 0.2727260947227478,
    ("evidence", "max-sensitivity"): 0.007466902583837509,
    ("gradcam", "pointing-game"): 0.0,
    ("gradcam", "relevance-mass"): 0.050291646271944046,
    ("gradcam", "mask-auroc"): 0.475554237763087,
    ("gradcam", "deletion-auc"): 0.899679982662201,
    ("gradcam", "insertion-auc"): 0.9999999284744263,
    ("gradcam", "gini"): 0.9128184676170349,
    ("gradcam", "max-sensitivity"): 0.1942065328359604,
    ("saliency", "pointing-game"): 0.0,
    ("saliency", "relevance-mass"): 0.05262897660334905,
    ("saliency", "mask-auroc"): 0.6360113819440206,
    ("saliency", "deletion-auc"): 0.8588007926940918,
    ("saliency", "insertion-auc"): 0.9999999642372132,
    ("saliency", "gini"): 0.6028926968574524,
    ("saliency", "max-sensitivity"): 0.5272484481334686,
    ("lrp-epsilon-plus-flat", "pointing-game"): 0.0,
    ("lrp-epsilon-plus-flat", "relevance-mass"): 0.04560590613012513,
    ("lrp-epsilon-plus-flat", "mask-auroc"): 0.4261258045832316,
    ("lrp-epsilon-plus-flat", "deletion-auc"): 0.9444250106811524,
    ("lrp-epsilon-plus-flat", "insertion-auc"): 0.9999999284744263,
    ("lrp-epsilon-plus-flat", "gini"): 0.7709702014923095,
    ("lrp-epsilon-plus-flat", "max-sensitivity"): 0.012689157016575336,
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
