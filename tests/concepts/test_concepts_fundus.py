"""Acceptance on synthetic fundus images: lesion concepts are encoded, the grade-independent dust is not influential.

The generator grades each image from its lesion counts (microaneurysms, haemorrhages, exudates) and puts lens
dust on half of the images whatever the grade: the ground truth a concept analysis should recover.
"""

from __future__ import annotations

import csv
import json

import pytest

from medexplain.cli import main
from medexplain.data.synth import write_fundus
from medexplain.report import build_report
from medexplain.train import TrainConfig, train

LESIONS = ("microaneurysm", "haemorrhage", "exudate")
FAST = ["--folds", "3", "--cav-runs", "10", "--random-runs", "40", "--learning-sizes", "10,40", "--learning-draws", "2"]


@pytest.fixture(scope="module")
def fundus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fundus")
    data = write_fundus(root / "data", 400, size=48, seed=0, show_progress=False)
    run = root / "run"
    config = TrainConfig("resnet18", model_args={"width": 8, "small_input": True}, epochs=10, batch_size=32, seed=0)
    train(config, data, run, progress=False, device="cpu")
    return data, run


def test_concepts_cli_recovers_lesions_and_dismisses_dust(fundus_run, tmp_path):
    data, run = fundus_run
    out = tmp_path / "concepts"
    argv = ["concepts", "--model", str(run), "--data", str(data), "--concepts", "all", "--out", str(out)]
    assert main([*argv, "--no-progress", *FAST]) == 0
    concepts = {r["concept"]: r for r in json.loads((out / "concepts.json").read_text())}
    assert sorted(concepts) == sorted([*LESIONS, "dust"])
    for lesion in LESIONS:  # well above chance on held-out images, probes fit on the training split only
        assert concepts[lesion]["heldout_auroc"] > 0.75, concepts[lesion]
    influence = json.loads((out / "influence.json").read_text())
    dust = [r for r in influence if r["concept"] == "dust"]
    assert len(dust) == 5 and all(not r["significant"] and r["p_holm"] > 0.05 for r in dust)
    # lesions push the most severe grade up and "none" down (mean derivative along the concept direction)
    for lesion in ("haemorrhage", "exudate"):
        rows = {r["class_name"]: r for r in influence if r["concept"] == lesion}
        assert rows["proliferative"]["derivative_mean"] > rows["proliferative"]["random_derivative_mean"]
        assert rows["none"]["derivative_mean"] < rows["none"]["random_derivative_mean"]
    # the test has power: lesions significantly lower the "none" grade (Holm-corrected over the 4 concepts)
    lowering_none = [r for r in influence if r["class_name"] == "none" and r["concept"] in LESIONS and r["significant"]]
    assert len(lowering_none) >= 2 and all(r["derivative_mean"] < 0 for r in lowering_none)
    table = json.loads((out / "concept_class_table.json").read_text())
    assert set(table["dust"].values()) == {0}
    assert all(table[lesion]["none"] == -1 for lesion in LESIONS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_held_out"] == len([line for line in (data / "manifest.csv").open() if ",test," in line])
    # the concept maps are an explanations folder: the localisation metrics score them against the lesion masks
    gallery = json.loads((out / "maps" / "concept_maps.json").read_text())
    assert gallery["layer"] == "layer4" and all(len(shown) == 2 for shown in gallery["concepts"].values())
    scores = tmp_path / "scores"
    evaluate = ["evaluate", "--explanations", str(out / "maps"), "--data", str(data), "--split", "test"]
    assert main([*evaluate, "--metrics", "pointing-game,gini", "--mask", "lesion", "--out", str(scores),
                 "--no-progress", "--resamples", "50"]) == 0  # fmt: skip
    rows = list(csv.DictReader((scores / "per_sample.csv").open()))
    assert {r["method"] for r in rows} == {f"concept-{c}" for c in (*LESIONS, "dust")}
    assert all(r["target"] == "-1" for r in rows)
    page = build_report(out).read_text()
    assert page.count("Concept maps (layer layer4)") == 1 and "expert: present" in page
    assert 'id="maps-' not in page  # the maps are the concept section's gallery, not a second one


def test_concepts_cli_bad_input(fundus_run, tmp_path, capsys):
    data, run = fundus_run
    argv = ["concepts", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, "--layer", "nope"]) == 2
    assert "model has no layer 'nope'" in capsys.readouterr().err
    assert main([*argv, "--concepts", "label_cotton_wool"]) == 2
    assert "concept 'label_cotton_wool' is not a label column" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
