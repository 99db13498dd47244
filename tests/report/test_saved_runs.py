"""A model saved with ``models.save_run`` (trained elsewhere) is listed by the report like a trained run."""

from __future__ import annotations

from pathlib import Path

from medexplain.models import create_model, save_run
from medexplain.report import build_report
from medexplain.report.discover import discover


def test_saved_run_is_a_model_of_the_report(tmp_path: Path) -> None:
    args = {"in_channels": 1, "num_classes": 2, "width": 8}
    save_run(create_model("resnet18", **args), tmp_path / "mine", "resnet18", args)
    assert [(c.kind, c.name) for c in discover(tmp_path)] == [("train", "mine")]
    page = build_report(tmp_path).read_text()
    assert '<section id="train-mine">' in page and "Model: resnet18 (mine)" in page
    assert "trained elsewhere, no training record here" in page
    assert "has not finished" not in page and "Some parts are incomplete" not in page
