"""The NIH audit benchmark (issue 23) at its smoke size, on the real chest X-rays: the audit runs without masks
(no localisation, no mean-mask prior) on the finding-positive test images, explaining the finding class; the
multi-label model's audit of a label explains that label's logit on test images with that finding; the border
shares in the tables are those of the stored maps against a hand-computed border; the seeds summary averages over
seeds; and the tables have the format recorded in RESULTS.md."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import audit_nih
from _headline import recorded_section
from medexplain.data.manifest import read_manifest
from medexplain.workflows.audit import BASELINES, LOCALISATION
from medexplain.workflows.explanations import load_explanations

FAITHFUL = re.compile(r"^(pass|fail) \(\d/3\)$")
RANDOMISATION = re.compile(r"^((pass|fail) \(-?\d\.\d\d, upper -?\d\.\d\d\)|n/a)$")  # n/a: not scored (all-zero maps)
REGION = re.compile(r"^\d\.\d\d / \d\.\d\d, \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]$")
OVER_SEEDS = re.compile(r"^(-?\d\.\d\d|n/a) \((-?\d\.\d\d|n/a) / (-?\d\.\d\d|n/a) / (-?\d\.\d\d|n/a)\)$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("audit-nih")
    assert audit_nih.main(["--size", "smoke", "--work", str(work)]) == 0
    [result] = json.loads((work / "audit_nih.json").read_text())["results"]
    return work, result


def test_the_audit_runs_without_masks_on_the_finding_class_of_positive_test_images(smoke) -> None:
    work, result = smoke
    tests = [row for row in read_manifest(work / "data-32px").rows if row.split == "test"]
    positive = {row.meta["id"] for row in tests if row.label == 1}
    folder = work / f"audit-{result['model']}-seed0"
    index = json.loads((folder / "explanations" / "index.json").read_text())
    audited = {item["id"] for item in index["items"]}
    assert len(audited) == result["audited_images"] == audit_nih.PRESETS["smoke"].audited_tiles < len(positive)
    assert audited <= positive
    for item in index["items"]:
        assert np.ravel(item["targets"]).tolist() == [audit_nih.FINDING_CLASS] and item["label"] == 1
    document = json.loads((folder / "verdict.json").read_text())
    assert document["mask"] is None and "baseline-prior" in result["not_applicable"]
    assert all(row["localises"]["verdict"] == "n/a" for row in document["verdict"])
    scored = json.loads((folder / "scores" / "summary.json").read_text())
    assert not {entry["metric"] for entry in scored["summary"]} & set(LOCALISATION)
    maps = {row["map"] for row in result["rows"]}
    assert set(audit_nih.METHODS) | {b for b in BASELINES if b != "baseline-prior"} < maps


def test_the_multi_label_audit_explains_each_label_on_test_images_with_that_finding(smoke) -> None:
    work, result = smoke
    with (work / "data-32px" / "manifest.csv").open(newline="") as handle:
        tests = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    multi = result["multi_label"]
    assert list(multi["labels"]) == list(audit_nih.LABELS)
    names = json.loads((work / "runs" / f"{multi['model']}-seed0" / "config.json").read_text())["label_names"]
    for label, entry in multi["labels"].items():
        having = {row["id"] for row in tests if row[f"label_{label}"] == "1"}
        assert entry["test_positives"] == len(having) > 0
        folder = work / f"audit-{multi['model']}-{label}-seed0" / "labels" / label
        index = json.loads((folder / "explanations" / "index.json").read_text())
        assert {item["id"] for item in index["items"]} <= having
        audited = min(len(having), audit_nih.PRESETS["smoke"].label_images)
        assert len(index["items"]) == entry["audited_images"] == audited
        for item in index["items"]:
            assert np.ravel(item["targets"]).tolist() == [names.index(label)]
        assert json.loads((folder / "verdict.json").read_text())["mask"] is None


def test_the_border_share_is_that_of_the_stored_maps(smoke) -> None:
    work, result = smoke
    side = audit_nih.PRESETS["smoke"].side
    border = np.ones((side, side), dtype=bool)
    border[4:-4, 4:-4] = False  # the outer 10 % of 32 px, rounded up: 4 px on every side
    stored = load_explanations(work / f"audit-{result['model']}-seed0" / "explanations")
    for method in audit_nih.METHODS:
        shares = []
        for item in stored.items:
            relevance = np.clip(stored.load(item, method)[0].double().numpy(), 0, None)
            if relevance.sum() > 0:  # a map without positive relevance has no share and is left out
                shares.append(relevance[border].sum() / relevance.sum())
        entry = result["shortcuts"][method]["border"]
        assert entry["area_share"] == pytest.approx(1 - (24 / 32) ** 2)
        assert entry["relevance_share"] == pytest.approx(np.mean(shares))
        assert entry["n"] == len(shares)


def _with_border(result: dict, seed: int, deletion: float, share: float, verdict: str) -> dict:
    """``result`` as seed ``seed`` with every method's deletion AUC and border share set, and its verdicts."""
    other = copy.deepcopy(result)
    other["seed"] = seed
    for row in other["rows"]:
        if row["map"] in audit_nih.METHODS:
            row["metrics"]["deletion-auc"] = [deletion, 0.0, 1.0]
            row["faithful"] = verdict
            other["shortcuts"][row["map"]]["border"]["relevance_share"] = share
    return other


def test_the_seeds_summary_averages_over_seeds_and_has_the_recorded_format(smoke) -> None:
    _, result = smoke
    seeds = [_with_border(result, 0, 0.2, 0.5, "fail (0/3)"), _with_border(result, 1, 0.3, 0.25, "pass (2/3)"),
             _with_border(result, 2, 0.4, 0.0, "fail (1/3)")]  # fmt: skip
    summary = audit_nih.seeds_summary(seeds)
    lines = summary.splitlines()
    assert lines[0] == "#### 3 seeds (0, 1, 2): mean over seeds (seed 0 / 1 / 2)"
    tables = [block.splitlines() for block in summary.split("\n\n") if block.startswith("| map |")]
    assert len(tables) == 1 + len(audit_nih.LABELS)  # the single-label model, then each label of the multi-label one
    assert all(f"\n{table[0]}\n" in recorded_section("audit:nih") for table in tables)
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in tables[0][2:])}
    for method in audit_nih.METHODS:
        deletion, _, _, border, _, faithful, _, _ = rows[method]
        assert deletion == "0.30 (0.20 / 0.30 / 0.40)" and border == "0.25 (0.50 / 0.25 / 0.00)"
        assert faithful == "fail (0/3) / pass (2/3) / fail (1/3)"
    assert set(rows) == {row["map"] for row in result["rows"]}
    assert list(rows)[: len(audit_nih.METHODS)] == [r["map"] for r in result["rows"][: len(audit_nih.METHODS)]]
    for name, cells in rows.items():
        assert all(OVER_SEEDS.match(c) for c in cells[:5]), (name, cells)
        randomised = name.endswith(" (random model)")
        assert (cells[3] == "n/a (n/a / n/a / n/a)") == randomised  # the shortcut check skips them


def test_the_tables_have_the_recorded_format(smoke) -> None:
    work, result = smoke
    table = (work / "table.md").read_text()
    section = recorded_section("audit:nih")
    headers = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line
               and line.split("|")[1].strip() in ("model", "map", "label")]  # fmt: skip
    assert len(headers) == 3 + len(audit_nih.LABELS) and all(f"\n{header}\n" in section for header in headers)
    rows = {row["map"]: row for row in result["rows"]}
    audits = [block.splitlines()[2:] for block in table.split("\n\n") if block.startswith("| map |")]
    assert len(audits) == 1 + len(audit_nih.LABELS)
    for lines in audits:  # the single-label model's audit, then each label's
        cells = {row[0]: row[1:] for row in ([c.strip() for c in line.split("|")[1:-1]] for line in lines)}
        assert set(cells) == set(rows)
        for method in audit_nih.METHODS:
            assert FAITHFUL.match(cells[method][0]) and RANDOMISATION.match(cells[method][1])
            assert REGION.match(cells[method][-4]) and (REGION.match(cells[method][-3]) or cells[method][-3] == "n/a")
            random_model = cells[f"{method} (random model)"]
            assert random_model[0] == "baseline" and random_model[-4:-1] == ["n/a"] * 3  # no shortcut check
    assert all(rows[b]["faithful"] == "baseline" for b in BASELINES if b != "baseline-prior")
    for key in ("accuracy", "balanced_accuracy", "auroc"):
        estimate, low, high = result["accuracy"][key]
        assert 0 <= low <= estimate <= high <= 1
    assert "    python benchmarks/audit_nih.py --size smoke --seeds 0 --device cpu" in table
