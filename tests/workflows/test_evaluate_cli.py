"""``medexplain evaluate`` end to end on a synthetic dataset with masks (2D and 3D): the tables hold the same
numbers as the metric functions on the same maps, the summary is their mean with a bracketing interval,
and bad requests exit with code 2 and one line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from medexplain.cli import main
from medexplain.data import load_dataset
from medexplain.data.synth import write_deformation
from medexplain.metrics import get_metric
from medexplain.models import create_model, save_run
from medexplain.workflows.explanations import load_explanations


def _run_folder(path: Path, dataset, spatial_dims: int) -> Path:
    torch.manual_seed(0)
    args = {"in_channels": dataset.in_channels, "num_classes": dataset.num_classes, "spatial_dims": spatial_dims}
    save_run(create_model("bagnet9-light", **args), path, "bagnet9-light", args)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_evaluate_writes_the_metric_values_and_their_summary(tmp_path: Path, spatial_dims: int) -> None:
    data = write_deformation(tmp_path / "data", n=4, spatial_dims=spatial_dims, size=24, seed=0, show_progress=False)
    dataset = load_dataset(data)
    run = _run_folder(tmp_path / "run", dataset, spatial_dims)
    explanations = tmp_path / "explanations"
    assert (
        main(
            [
                "explain",
                "--model",
                str(run),
                "--data",
                str(data),
                "--method",
                "saliency",
                "--out",
                str(explanations),
                "--split",
                "",
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "evaluation"
    names = ["relevance-mass", "dice", "gini", "deletion-auc", "max-sensitivity"]
    assert (
        main(
            [
                "evaluate",
                "--explanations",
                str(explanations),
                "--data",
                str(data),
                "--model",
                str(run),
                "--metrics",
                ",".join(names),
                "--out",
                str(out),
                "--resamples",
                "200",
                "--no-progress",
                "--batch-size",
                "3",
            ]
        )
        == 0
    )

    rows = _read_csv(out / "per_sample.csv")
    assert len(rows) == len(dataset) * len(names)
    stored = load_explanations(explanations)
    maps = torch.stack([stored.load(item, "saliency")[0] for item in stored.items])
    masks = torch.stack([dataset[item.index].masks["atrophy"][0] for item in stored.items])
    for name in ("relevance-mass", "dice", "gini"):
        metric = get_metric(name)
        expected = metric(maps) if name == "gini" else metric(maps, masks)
        ours = [float(r["score"]) if r["score"] != "nan" else math.nan for r in rows if r["metric"] == name]
        torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), expected.double(), equal_nan=True)

    summary = {r["metric"]: r for r in json.loads((out / "summary.json").read_text())["summary"]}
    assert set(summary) == set(names)
    for name, row in summary.items():
        scores = [float(r["score"]) for r in rows if r["metric"] == name and r["score"] != "nan"]
        assert row["n"] == len(scores) and row["excluded"] == len(dataset) - len(scores)
        assert row["mean"] == pytest.approx(sum(scores) / len(scores))
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert summary["deletion-auc"]["higher_is_better"] is False and summary["dice"]["category"] == "localisation"
    assert len(_read_csv(out / "summary.csv")) == len(names)


def test_evaluate_bad_requests_exit_2(tmp_path: Path, capsys) -> None:
    data = write_deformation(tmp_path / "data", n=4, spatial_dims=2, size=24, seed=0, show_progress=False)
    run = _run_folder(tmp_path / "run", load_dataset(data), 2)
    explanations = tmp_path / "explanations"
    assert (
        main(
            [
                "explain",
                "--model",
                str(run),
                "--data",
                str(data),
                "--method",
                "saliency",
                "--out",
                str(explanations),
                "--split",
                "",
                "--no-progress",
            ]
        )
        == 0
    )
    base = ["evaluate", "--explanations", str(explanations), "--data", str(data), "--no-progress"]
    assert main([*base, "--metrics", "deletion-auc", "--out", str(tmp_path / "a")]) == 2
    assert "runs the model: give --model" in capsys.readouterr().err
    assert main([*base, "--metrics", "dcie", "--out", str(tmp_path / "b")]) == 2
    assert "did you mean 'dice'" in capsys.readouterr().err
    other = write_deformation(tmp_path / "other", n=4, spatial_dims=2, size=32, seed=1, show_progress=False)
    assert (
        main([*base[:3], "--data", str(other), "--metrics", "dice", "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    )
    assert "differ" in capsys.readouterr().err
    for folder in "abc":
        assert not (tmp_path / folder).exists()  # nothing half-written
    assert main([*base, "--metrics", "all", "--out", str(tmp_path / "d")]) == 0  # model-free metrics only
    metrics = {r["metric"] for r in _read_csv(tmp_path / "d" / "summary.csv")}
    assert "dice" in metrics and "deletion-auc" not in metrics
