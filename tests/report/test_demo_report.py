"""End to end: a tiny demo run and its report, checked against the run's own files and in a real browser."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from medexplain.concepts.analysis import ConceptSettings
from medexplain.data import load_dataset
from medexplain.errors import MedexplainError
from medexplain.report import build_report
from medexplain.workflows.demo import DemoModel, DemoSettings, run_demo

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "runs" / "test-artefacts"

TINY = DemoSettings(
    n=60,
    size=48,
    explain_items=4,
    batch_size=16,
    models=(
        DemoModel("sparse-bagnet9-light", ("evidence", "gradcam", "lrp-epsilon-plus-flat", "integrated-gradients"), 1),
        DemoModel("resnet18", ("gradcam", "integrated-gradients"), 1),
    ),
    method_params={"integrated-gradients": {"steps": 8}},
    concepts=ConceptSettings(folds=3, cav_runs=3, random_runs=5, learning_sizes=(10,), learning_draws=2),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    report = run_demo(out, settings=TINY, progress=False, echo=lambda _: None, report=build_report)
    assert report == out / "report.html"
    return out


@pytest.fixture(scope="module")
def page(demo: Path) -> str:
    return (demo / "report.html").read_text(encoding="utf-8")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_section_is_present(page: str) -> None:
    anchors = set(re.findall(r'<section id="([^"]+)"', page))
    for model in ("sparse-bagnet9-light", "resnet18"):
        assert f"train-models-{model}" in anchors
        assert f"maps-explanations-{model}" in anchors
        assert f"scores-evaluation-{model}" in anchors
    assert {"overview", "concepts-concepts", "provenance"} <= anchors
    for method in ("evidence", "gradcam", "lrp-epsilon-plus-flat", "integrated-gradients"):
        assert f"<h3>{method}</h3>" in page
    assert "Incomplete" not in page and "incomplete" not in page


def test_every_image_decodes(page: str) -> None:
    payloads = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(payloads) >= 2 * 4 + 6  # galleries, curves, histograms
    for payload in payloads:
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        assert image.width > 0 and image.height > 0


def test_numbers_equal_the_run_files(demo: Path, page: str) -> None:
    shown = set(re.findall(r'data-value="([^"]*)"', page))
    for model in ("sparse-bagnet9-light", "resnet18"):
        for row in _rows(demo / "evaluation" / model / "summary.csv"):
            for key in ("mean", "ci_low", "ci_high"):
                if row[key]:
                    assert repr(float(row[key])) in shown, (model, row["method"], row["metric"], key)
        config = json.loads((demo / "models" / model / "config.json").read_text())
        for split, values in config["metrics"].items():
            if isinstance(values, dict):
                for name, value in values.items():
                    if isinstance(value, float):
                        assert repr(value) in shown, (model, split, name)
    for row in _rows(demo / "concepts" / "concepts.csv"):
        for value in row.values():
            try:
                number = float(value)
            except ValueError:
                continue
            assert repr(number) in shown or str(int(number)) in shown


def test_bagnet_evidence_is_scored_against_chance(demo: Path, page: str) -> None:
    document = json.loads((demo / "evaluation" / "sparse-bagnet9-light" / "summary.json").read_text())
    chance = document["chance"]["pointing-game"]
    assert 0 < chance < 0.2
    assert repr(chance) in page


def test_report_of_an_interrupted_run_lists_what_is_incomplete(demo: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(demo / "models", partial / "models")
    shutil.copytree(demo / "explanations", partial / "explanations")
    (partial / "explanations" / "resnet18" / "index.json").write_text("{ truncated")
    target = build_report(partial)
    text = target.read_text()
    assert "Some parts are incomplete" in text
    assert "not valid JSON" in text
    assert '<section id="maps-explanations-sparse-bagnet9-light">' in text


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MedexplainError, match="not a medexplain run folder"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_mean_curves_integrate_to_the_mean_scores(demo: Path, page: str) -> None:
    """The area under each stored mean curve equals the mean of the per-image AUC scores (trapezoids are linear)."""
    assert "Deletion and insertion curves" in page
    for model in ("sparse-bagnet9-light", "resnet18"):
        curves = json.loads((demo / "evaluation" / model / "summary.json").read_text())["curves"]
        rows = _rows(demo / "evaluation" / model / "per_sample.csv")
        for method, per_mode in curves.items():
            for mode, curve in per_mode.items():
                scores = [float(r["score"]) for r in rows if r["method"] == method and r["metric"] == f"{mode}-auc"]
                area = sum((a + b) / 2 for a, b in itertools.pairwise(curve)) / (len(curve) - 1)
                assert area == pytest.approx(sum(scores) / len(scores), abs=1e-6), (model, method, mode)


def test_confusion_matrix_comes_from_the_saved_predictions(demo: Path, page: str) -> None:
    for model in ("sparse-bagnet9-light", "resnet18"):
        rows = _rows(demo / "models" / model / "predictions.csv")
        config = json.loads((demo / "models" / model / "config.json").read_text())
        accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
        assert accuracy == pytest.approx(config["metrics"][rows[0]["split"]]["accuracy"])
        for row in rows:
            probabilities = [float(v) for k, v in row.items() if k.startswith("p_")]
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-6)
            assert int(row["predicted"]) == probabilities.index(max(probabilities))
    assert page.count('alt="Confusion matrix on the test split"') == 2


def test_demo_runs_the_same_pipeline_on_a_real_dataset_folder(shared_data: Path, tmp_path: Path) -> None:
    """``--data`` (BUSI breast ultrasound, 3 classes, lesion masks, no concept labels): every model is trained on
    that folder, explained and scored against its lesion masks; no synthetic data is written."""
    busi = shared_data / "busi"
    one_model = replace(TINY, models=TINY.models[:1], explain_items=6)
    report = run_demo(tmp_path / "run", data=busi, settings=one_model, progress=False, echo=lambda _: None,
                      report=build_report)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"] == str(busi) and not (tmp_path / "run" / "data").exists()
    config = json.loads((tmp_path / "run" / "models" / "sparse-bagnet9-light" / "config.json").read_text())
    assert config["class_names"] == load_dataset(busi).class_names and len(config["class_names"]) == 3
    rows = _rows(tmp_path / "run" / "evaluation" / "sparse-bagnet9-light" / "per_sample.csv")
    with (busi / "manifest.csv").open(newline="") as handle:
        lesion_area = {Path(r["image"]).stem: float(r["lesion_area"]) for r in csv.DictReader(handle)}
    scored = {r["id"] for r in rows if r["metric"] == "pointing-game" and r["score"] != "nan"}
    assert scored and all(lesion_area[i] > 0 for i in scored)  # images without a lesion are left out, not scored
    assert "concepts-concepts" not in report.read_text(encoding="utf-8")  # BUSI has no concept labels


def test_explainers_run_with_the_settings_method_params(demo: Path) -> None:
    for model in ("sparse-bagnet9-light", "resnet18"):
        index = json.loads((demo / "explanations" / model / "index.json").read_text())
        assert index["methods"]["integrated-gradients"]["steps"] == TINY.method_params["integrated-gradients"]["steps"]
