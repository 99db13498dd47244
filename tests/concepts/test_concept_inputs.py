"""Bad concept columns on a real manifest: each unusable concept is named with its problem, and the others run
(the concept analysis, the bottleneck and the data reader alike)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medexplain.cli import main
from medexplain.concepts.bottleneck import BottleneckSettings, train_bottleneck
from medexplain.data import load_dataset
from medexplain.data.synth import write_fundus
from medexplain.errors import MedexplainError
from medexplain.train import TrainConfig, train

TINY = {"width": 4, "small_input": True}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Synthetic fundus manifest where ``dust`` has a 'yes' cell, ``exudate`` is 0 on every training image,
    ``haemorrhage`` has 2 training positives (fewer than 3 folds) and ``microaneurysm`` some empty cells."""
    root = tmp_path_factory.mktemp("damaged")
    data = write_fundus(root / "data", 90, size=48, seed=3, show_progress=False, label="referable")
    path = data / "manifest.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    train_rows = [r for r in rows if r["split"] == "train"]
    rows[5]["label_dust"] = "yes"
    for r in train_rows:
        r["label_exudate"] = "0"
        r["label_haemorrhage"] = "0"
    train_rows[0]["label_haemorrhage"] = train_rows[1]["label_haemorrhage"] = "1"
    train_rows[2]["label_microaneurysm"] = train_rows[3]["label_microaneurysm"] = ""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return data, train_rows


def test_reader_names_the_bad_column_and_keeps_the_others(damaged):
    data, _ = damaged
    with pytest.raises(MedexplainError, match=r"line 5: label_microaneurysm '' is not an integer"):
        load_dataset(data, "train")
    dataset = load_dataset(data, "train", partial_labels=True)
    assert list(dataset.label_problems) == ["dust"]
    assert "label_dust has the value 'yes', not 0, 1 or empty" in dataset.label_problems["dust"]
    labels = np.stack([dataset[i].labels.numpy() for i in range(len(dataset))])
    column = {name: j for j, name in enumerate(dataset.label_names)}
    assert np.isnan(labels[:, column["dust"]]).all()
    assert np.isnan(labels[[2, 3], column["microaneurysm"]]).all()  # the two emptied cells, nothing else
    assert np.isnan(labels[:, column["microaneurysm"]]).sum() == 2
    assert labels[:, column["haemorrhage"]].sum() == 2


def test_bottleneck_leaves_out_unusable_concepts_and_trains_on_the_rest(damaged, tmp_path):
    data, _ = damaged
    settings = BottleneckSettings(mode="sequential", backbone_args=TINY, epochs=1, batch_size=16, class_Cs=(1.0,))
    summary = train_bottleneck(data, tmp_path / "bn", settings, progress=False)
    assert summary["concepts"] == ["microaneurysm", "haemorrhage"]
    skipped = summary["skipped_concepts"]
    assert sorted(skipped) == ["dust", "exudate"]
    assert skipped["dust"].startswith("concept 'dust': ") and "'yes'" in skipped["dust"]
    assert skipped["exudate"] == (
        "concept 'exudate': every annotated training example has the value 0; a probe needs examples with and "
        "without the concept"
    )
    written = json.loads((tmp_path / "bn" / "bottleneck.json").read_text())
    assert written["skipped_concepts"] == skipped
    test = written["splits"]["test"]
    assert [row["k"] for row in test["intervention"]] == [0, 1, 2]
    assert not math.isnan(test["concept_auroc"]["microaneurysm"])
    with pytest.raises(MedexplainError, match="concept 'exudate': every annotated training example has the value 0"):
        train_bottleneck(data, tmp_path / "named", settings, concepts="microaneurysm,exudate", progress=False)
    assert not (tmp_path / "named").exists()


def test_concept_analysis_cli_skips_unusable_concepts_with_their_reason(damaged, tmp_path, capsys):
    data, _ = damaged
    run = tmp_path / "run"
    train(TrainConfig("resnet18", model_args=TINY, epochs=1, batch_size=16, seed=0), data, run, progress=False,
          device="cpu")  # fmt: skip
    out = tmp_path / "concepts"
    argv = ["concepts", "--model", str(run), "--data", str(data), "--out", str(out), "--no-progress", "--folds", "3",
            "--cav-runs", "3", "--random-runs", "6", "--learning-sizes", "10", "--learning-draws", "1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "skipped dust: concept 'dust': " in err and "'yes'" in err
    assert "skipped exudate: concept 'exudate': every annotated training example has the value 0" in err
    assert "skipped haemorrhage: concept 'haemorrhage': only 2 annotated examples of the rarer value, fewer " in err
    assert [r["concept"] for r in json.loads((out / "concepts.json").read_text())] == ["microaneurysm"]
    gallery = json.loads((out / "maps" / "concept_maps.json").read_text())
    assert list(gallery["concepts"]) == ["microaneurysm"] and len(gallery["concepts"]["microaneurysm"]) == 2
    assert main([*argv[:6], str(tmp_path / "named"), *argv[7:], "--concepts", "dust"]) == 2
    assert "concept 'dust': " in capsys.readouterr().err and not (tmp_path / "named").exists()


def test_bottleneck_cli_and_its_report(damaged, tmp_path, capsys):
    from medexplain.report import build_report

    data, _ = damaged
    out = tmp_path / "bottleneck"
    argv = ["bottleneck", "--data", str(data), "--out", str(out), "--mode", "joint", "--epochs", "1",
            "--backbone-args", json.dumps(TINY), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "joint bottleneck on 2 concepts; test AUROC" in captured.out
    assert "skipped dust: concept 'dust'" in captured.err
    summary = json.loads((out / "bottleneck.json").read_text())
    page = build_report(out).read_text()
    assert "Concept bottleneck" in page and "Test-time intervention" in page
    for row in summary["splits"]["test"]["intervention"]:
        assert f'data-value="{row["auroc"]!r}"' in page or f'data-value="{row["auroc"]}"' in page
    bad = [*argv[:4], str(tmp_path / "bad"), *argv[5:9], "--backbone-args", "[4]", "--no-progress"]
    assert main(bad) == 2
    assert "--backbone-args: must be a JSON object, got '[4]'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
