"""The CXR-TB hospital check (issue 23) at smoke size on the real chest X-rays: the hospital-alone AUROC equals the
one derived by hand from the counts, the captured features are the ones the model's last layer reads, and the
table has the recorded format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import _headline
import cxr_tb_hospital
from audit_cxr_tb import PRESETS, TB_CLASS, config, subset
from audit_idrid import run_folder

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| 0 \|( (\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]|nan \[nan, nan\]) \|){5}$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("cxr-tb-hospital")
    return work, cxr_tb_hospital.seed_row("smoke", 0, work)


def _model_and_test(work: Path) -> tuple[torch.nn.Module, object]:
    preset = PRESETS["smoke"]
    return _headline.test_set(run_folder(work, config(preset), 0), subset(preset, work))


def test_the_hospital_alone_auroc_is_the_one_counted_by_hand(smoke) -> None:
    """Two score levels (the hospitals' training TB rates): AUROC = P(higher-rate hospital's positive vs the other's
    negative) + half the ties within a hospital."""
    work, row = smoke
    _, test = _model_and_test(work)
    where, tb = cxr_tb_hospital.sources(test), test.labels.numpy() == TB_CLASS
    high, low = sorted(cxr_tb_hospital.HOSPITALS, key=lambda h: -row["rates"][h])
    pos = {h: int((tb & (where == h)).sum()) for h in (high, low)}
    neg = {h: int((~tb & (where == h)).sum()) for h in (high, low)}
    expected = (pos[high] * neg[low] + 0.5 * (pos[high] * neg[high] + pos[low] * neg[low])) / (tb.sum() * (~tb).sum())
    if row["rates"][high] == row["rates"][low]:
        expected = 0.5
    assert row["hospital alone"][0] == pytest.approx(expected)
    assert row["counts"] == {h: (int((where == h).sum()), pos[h]) for h in cxr_tb_hospital.HOSPITALS}


def test_the_features_are_what_the_last_layer_reads(smoke) -> None:
    work, _ = smoke
    model, test = _model_and_test(work)
    features = torch.from_numpy(cxr_tb_hospital.features(model, test)[0])
    logits = torch.from_numpy(_headline.predict(model, test))  # a pass without the hook
    with torch.no_grad():
        torch.testing.assert_close(model.fc.double()(features), logits, rtol=1e-5, atol=1e-5)
    model.float()


def test_the_table_has_the_recorded_format(smoke) -> None:
    _, row = smoke
    lines = cxr_tb_hospital.markdown([row], "smoke").splitlines()
    assert any(ROW.match(line) for line in lines), lines
    assert "    python benchmarks/cxr_tb_hospital.py --size smoke --seeds 0" in lines
    recorded = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert "    python benchmarks/cxr_tb_hospital.py --size default --seeds 0,1,2" in recorded
    assert lines[2] in recorded  # the same table header
