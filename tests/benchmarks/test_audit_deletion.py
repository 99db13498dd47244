"""Deletion AUC of the audits' stored maps (issue 23) at smoke size on the real chest X-rays: each score is the
deletion AUC of the stored map on the trained model (the randomised model's maps too), the paired differences are
the means of the per-image differences, and the table has the recorded format."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import audit_deletion
from medexplain.metrics.faithfulness import deletion_auc
from medexplain.models import load, run_dataset
from medexplain.workflows.explanations import load_explanations

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = r"-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]"
ROW = re.compile(rf"^\| gradcam \| {INTERVAL} \|( {INTERVAL} \|){{2}}$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path, str]:
    work = tmp_path_factory.mktemp("audit-deletion")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert audit_deletion.main(["--tables", "cxr-tb", "--size", "smoke", "--seeds", "0",
                                    "--work-cxr-tb", str(work)]) == 0  # fmt: skip
    [folder] = audit_deletion.audits_of("cxr-tb", work, 0).values()
    return work, folder, buffer.getvalue()


@pytest.mark.parametrize("part", ["explanations", "randomised"])
def test_each_score_is_the_stored_maps_deletion_on_the_trained_model(smoke, part: str) -> None:
    _, folder, _ = smoke
    stored = load_explanations(folder / part)
    trained = load_explanations(folder / "explanations").header["model"]
    model, config = load(trained)
    dataset = run_dataset(config, stored.header["data"], "test")
    scores = audit_deletion.score_deletion(folder, "cpu", 0)
    suffix = "" if part == "explanations" else " (random model)"
    for item in stored.items[:3]:
        x = dataset[item.index].image[None]
        maps = stored.load(item, "gradcam")[:1]  # (1, H, W): the map of the explained class
        expected = deletion_auc(maps, model=model, x=x, target=torch.tensor([item.targets[0]]))
        assert scores["gradcam" + suffix][item.id] == pytest.approx(float(expected[0]), abs=1e-6), item.id


def test_paired_differences_are_the_means_of_the_per_image_differences(smoke) -> None:
    _, folder, _ = smoke
    scores = audit_deletion.score_deletion(folder, "cpu", 0)
    [row] = [r for r in audit_deletion.rows_of(scores, ["gradcam"], 0) if r["map"] == "gradcam"]
    for reference in audit_deletion.REFERENCES:
        ids = list(scores["gradcam"])
        expected = np.mean([scores["gradcam"][i] - scores[reference][i] for i in ids])
        assert row[f"- {reference}"][0] == pytest.approx(expected)


def test_the_table_has_the_recorded_format(smoke) -> None:
    _, _, printed = smoke
    lines = printed.splitlines()
    assert any(ROW.match(line) for line in lines), lines
    assert "    python benchmarks/audit_deletion.py --tables cxr-tb --size smoke --seeds 0" in lines
    recorded = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert "    python benchmarks/audit_deletion.py --tables idrid,cxr-tb --size default --seeds 0,1,2" in recorded
    assert "| map | deletion AUC | method - random map | method - centre blob |" in recorded
