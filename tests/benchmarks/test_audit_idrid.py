"""The IDRiD native-resolution audit benchmark (issue 23) at its smoke size, on the real IDRiD images: tiles are the
source pixels unchanged with the union of the HE and EX masks, no image is in two splits, both audits explain the
lesion class, the paired difference is the mean of the per-tile differences of the audits' own scores, and the
tables have the format recorded in RESULTS.md."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import audit_idrid
from _headline import recorded_section
from medexplain.workflows.audit import BASELINES, audit_scores

INTERVAL = re.compile(r"^-?\d\.\d\d\d \[-?\d\.\d\d\d, -?\d\.\d\d\d\]$")
VERDICT = re.compile(r"^(pass|fail) \(\d/5\)$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("audit-idrid")
    assert audit_idrid.main(["--size", "smoke", "--work", str(work)]) == 0
    [result] = json.loads((work / "audit_idrid.json").read_text())["results"]
    return work, result


def _manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_tiles_are_the_source_pixels_with_the_lesion_masks(smoke, shared_data: Path) -> None:
    work, _ = smoke
    tiles = work / "tiles-128px"
    rows = _manifest(tiles)
    assert len(rows) == 3 * 8 * 5  # three 1024 x 680 images, 8 x 5 whole tiles each
    source = shared_data / "idrid_seg20"
    for row in rows[::7]:
        image, top, left = re.fullmatch(r"(IDRiD_\d+)_y(\d+)_x(\d+)", row["id"]).groups()
        window = (slice(int(top), int(top) + 128), slice(int(left), int(left) + 128))
        original = np.asarray(Image.open(source / "images" / f"{image}.jpg").convert("RGB"))[window]
        assert np.array_equal(np.asarray(Image.open(tiles / row["image"])), original), row["id"]
        lesion = np.zeros((128, 128), dtype=bool)
        for kind in ("HE", "EX"):
            lesion |= np.asarray(Image.open(source / "masks" / kind / f"{image}_{kind}.png"))[window] > 0
        mask = np.asarray(Image.open(tiles / row["mask_lesion"])) > 0
        assert np.array_equal(mask, lesion) and int(row["label"]) == int(lesion.any()), row["id"]


def test_no_image_is_in_two_splits(smoke) -> None:
    work, result = smoke
    images = {split: set(ids) for split, ids in result["splits"].items()}
    assert sum(map(len, images.values())) == len(set().union(*images.values())) == 3
    for row in _manifest(work / "tiles-128px"):
        assert row["group"] in images[row["split"]]


def test_both_audits_explain_the_lesion_class_of_positive_test_tiles(smoke) -> None:
    work, result = smoke
    for name in result["models"].values():
        index = json.loads((work / f"audit-{name}-seed0" / "explanations" / "index.json").read_text())
        assert len(index["items"]) == result["audited_tiles"] == 4
        for item in index["items"]:
            assert np.ravel(item["targets"]).tolist() == [audit_idrid.LESION_CLASS] and item["label"] == 1


def test_the_paired_difference_is_the_mean_of_per_tile_differences(smoke) -> None:
    work, result = smoke
    models, compared = result["models"], result["comparisons"]
    bagnet = audit_scores(work / f"audit-{models['bagnet']}-seed0")
    resnet = audit_scores(work / f"audit-{models['resnet']}-seed0")
    best = compared["resnet_best"]
    means = {m: np.mean(list(resnet["mask-auroc"][m].values())) for m in audit_idrid.RESNET_METHODS}
    assert means[best] == max(means.values())
    for metric in audit_idrid.COMPARED:
        ids = sorted(bagnet[metric]["evidence"])
        expected = np.nanmean([bagnet[metric]["evidence"][i] - resnet[metric][best][i] for i in ids])
        estimate, low, high = compared["evidence_vs_best"][metric]
        assert estimate == pytest.approx(expected) and low <= estimate <= high
    prior = compared["against_baselines"]["evidence - baseline-prior"]["mask-auroc"][0]
    ids = sorted(bagnet["mask-auroc"]["evidence"])
    assert prior == pytest.approx(np.nanmean([bagnet["mask-auroc"]["evidence"][i]
                                              - bagnet["mask-auroc"]["baseline-prior"][i] for i in ids]))  # fmt: skip


def test_the_tables_have_the_recorded_format(smoke) -> None:
    work, result = smoke
    table = (work / "table.md").read_text()
    section = recorded_section("audit:idrid")
    headers = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line
               and line.split("|")[1].strip() in ("run", "model", "difference")]  # fmt: skip
    assert len(headers) == 4 and all(header in section for header in headers)
    maps = {(row["model"], row["map"]): row for row in result["rows"]}
    resnet, bagnet = result["models"]["resnet"], result["models"]["bagnet"]
    for model, methods in ((resnet, audit_idrid.RESNET_METHODS), (bagnet, audit_idrid.BAGNET_METHODS)):
        for method in methods:
            assert VERDICT.match(maps[model, method]["localises"]), maps[model, method]
            assert maps[model, f"{method} (random model)"]["localises"] == "baseline"
        assert all(maps[model, baseline]["localises"] == "baseline" for baseline in BASELINES)
    lines = [line for line in table.splitlines() if line.startswith("| evidence (")]
    assert len(lines) == 1 and all(INTERVAL.match(c.strip()) for c in lines[0].split("|")[2:4]), lines
    for entry in result["accuracy"].values():
        estimate, low, high = entry["auroc"]
        assert 0 <= low <= estimate <= high <= 1 and entry["tiles"] == 40
    assert "    python benchmarks/audit_idrid.py --size smoke --seeds 0 --device cpu" in table
