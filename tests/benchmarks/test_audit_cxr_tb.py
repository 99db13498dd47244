"""The CXR-TB audit benchmark (issue 23) at its smoke size, on the real chest X-rays: the audit explains the TB
class of the TB-positive test images only, against the lung masks of the resized copy; the share of relevance
outside the lungs is the one recomputed from the stored maps; the seeds summary averages over seeds; and the
tables have the format recorded in RESULTS.md."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import audit_cxr_tb
from _headline import recorded_section
from medexplain.data.manifest import read_manifest
from medexplain.workflows.audit import BASELINES
from medexplain.workflows.explanations import load_explanations

VERDICT = re.compile(r"^(pass|fail) \(\d/5\)$")
SHARE = re.compile(r"^\d\.\d\d \[\d\.\d\d, \d\.\d\d\] / \d\.\d\d$")
OVER_SEEDS = re.compile(r"^(-?\d\.\d\d|n/a) \((-?\d\.\d\d|n/a) / (-?\d\.\d\d|n/a) / (-?\d\.\d\d|n/a)\)$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("audit-cxr-tb")
    assert audit_cxr_tb.main(["--size", "smoke", "--work", str(work)]) == 0
    [result] = json.loads((work / "audit_cxr-tb.json").read_text())["results"]
    return work, result


def test_the_audit_explains_the_tb_class_of_tb_positive_test_images(smoke) -> None:
    work, result = smoke
    tests = [row for row in read_manifest(work / "data-32px").rows if row.split == "test"]
    positive = sorted(row.meta["id"] for row in tests if row.label == 1)
    assert 0 < len(positive) < len(tests) == 12
    index = json.loads((work / f"audit-{result['model']}-seed0" / "explanations" / "index.json").read_text())
    assert sorted(item["id"] for item in index["items"]) == positive and result["audited_images"] == len(positive)
    for item in index["items"]:
        assert np.ravel(item["targets"]).tolist() == [audit_cxr_tb.TB_CLASS] and item["label"] == 1


def test_the_share_outside_the_lungs_is_that_of_the_stored_maps(smoke) -> None:
    work, result = smoke
    rows = read_manifest(work / "audit-data-seed0").rows
    lungs = {row.meta["id"]: np.asarray(Image.open(row.masks["lung"])) > 0 for row in rows}
    stored = load_explanations(work / f"audit-{result['model']}-seed0" / "explanations")
    for method in audit_cxr_tb.METHODS:
        shares, areas = [], []
        for item in stored.items:
            relevance = np.clip(stored.load(item, method)[0].double().numpy(), 0, None)
            outside = ~lungs[item.id]
            if relevance.sum() > 0:  # a map without positive relevance has no share and is left out
                shares.append(relevance[outside].sum() / relevance.sum())
                areas.append(outside.mean())
        entry = result["outside_lungs"][method]
        assert entry["area_share"] == pytest.approx(np.mean(areas))
        assert entry["relevance_share"] == pytest.approx(np.mean(shares)) == pytest.approx(entry["share_ci"][0])
        assert entry["share_ci"][1] <= entry["relevance_share"] <= entry["share_ci"][2]
        assert 0 < entry["area_share"] < 1


def test_the_tables_have_the_recorded_format(smoke) -> None:
    work, result = smoke
    table = (work / "table.md").read_text()
    section = recorded_section("audit:cxr-tb")
    headers = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line
               and line.split("|")[1].strip() in ("model", "map")]  # fmt: skip
    assert len(headers) == 2 and all(header in section for header in headers)
    rows = {row["map"]: row for row in result["rows"]}
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    lines = {row[0]: row[1:] for row in cells if row[0] in rows}
    for method in audit_cxr_tb.METHODS:
        assert VERDICT.match(rows[method]["localises"]), rows[method]
        assert rows[f"{method} (random model)"]["localises"] == "baseline"
        assert SHARE.match(lines[method][-4]) and lines[f"{method} (random model)"][-4] == "n/a"
    assert all(rows[baseline]["localises"] == "baseline" for baseline in BASELINES)
    for interval in (result["accuracy"]["accuracy"], result["accuracy"]["auroc"]):
        estimate, low, high = interval
        assert 0 <= low <= estimate <= high <= 1
    assert "    python benchmarks/audit_cxr_tb.py --size smoke --seeds 0 --device cpu" in table


def test_the_seeds_summary_averages_over_seeds_and_has_the_recorded_format(smoke) -> None:
    _, result = smoke
    seeds = []
    for seed, share in enumerate((0.6, 0.3, 0.0)):
        one = copy.deepcopy(result)
        one["seed"] = seed
        for method in audit_cxr_tb.METHODS:
            one["outside_lungs"][method]["relevance_share"] = share
            [row] = [row for row in one["rows"] if row["map"] == method]
            row["metrics"]["mask-auroc"] = [0.5 + seed / 10, 0.0, 1.0]
        seeds.append(one)
    summary = audit_cxr_tb.seeds_summary(seeds)
    lines = summary.splitlines()
    assert lines[0] == "#### 3 seeds (0, 1, 2): mean over seeds (seed 0 / 1 / 2)"
    section = recorded_section("audit:cxr-tb")
    header = next(line for line in lines if line.startswith("| map |"))
    assert f"\n{lines[0]}\n" in section and f"\n{header}\n" in section
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in lines
                                              if line.startswith("| ") and line != header)}  # fmt: skip
    assert set(rows) == {row["map"] for row in result["rows"]}
    for method in audit_cxr_tb.METHODS:
        auroc, _, _, outside, _, localises, _ = rows[method]
        assert auroc == "0.60 (0.50 / 0.60 / 0.70)" and outside == "0.30 (0.60 / 0.30 / 0.00)"
        assert localises == " / ".join([next(r for r in result["rows"] if r["map"] == method)["localises"]] * 3)
    for name, cells in rows.items():
        assert all(OVER_SEEDS.match(c) for c in cells[:5]), (name, cells)
        assert (cells[3] == "n/a (n/a / n/a / n/a)") == name.endswith(" (random model)")
