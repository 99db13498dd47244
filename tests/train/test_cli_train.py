"""``medexplain train`` on the command line: a run folder on success, exit code 2 and one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from medexplain.cli import main


def test_cli_trains_and_reports(fundus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "sparse-bagnet9-light", "--data", str(fundus), "--out", str(run), "--epochs", "1"]
    assert main([*args, "--batch-size", "8", "--no-progress", "--model-args", '{"width": 8}']) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model_args"]["width"] == 8 and config["training"]["loss"] == "ce+sparsity"
    assert config["training"]["sparsity_lambda"] > 0  # the sparse- model's registered default
    assert "best epoch 1" in capsys.readouterr().out
    assert main([*args, "--no-progress"]) == 2  # the folder is not empty
    assert "exists and is not empty" in capsys.readouterr().err


def test_cli_bad_values_exit_2(fundus: Path, tmp_path: Path, capsys) -> None:
    base = ["train", "--model", "bagnet9-light", "--data", str(fundus), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--class-weights", "1,x"]) == 2
    assert "--class-weights" in capsys.readouterr().err
    assert main([*base, "--model-args", "[1]"]) == 2
    assert main(["train", "--model", "bagnet9-light", "--data", str(tmp_path / "nowhere"), "--out", "x"]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_cli_passes_the_optional_training_features(fundus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "sparse-bagnet9-light", "--data", str(fundus), "--out", str(run), "--epochs", "1"]
    args += ["--batch-size", "8", "--no-progress", "--model-args", '{"width": 8}']
    options = ["--ema-decay", "0.9", "--tta-flip-axes", "0,1", "--label-smoothing", "0.1", "--ordinal-sigma", "0.7"]
    assert main([*args, *options]) == 0
    training = json.loads((run / "config.json").read_text())["training"]
    assert training["ema_decay"] == 0.9 and training["tta_flip_axes"] == [0, 1]
    assert training["label_smoothing"] == 0.1 and training["ordinal_sigma"] == 0.7
    bad = ["train", "--model", "bagnet9-light", "--data", str(fundus), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*bad, "--tta-flip-axes", "0,x"]) == 2
    assert "--tta-flip-axes: expected spatial axes" in capsys.readouterr().err
    assert main([*bad, "--tta-flip-axes", "2"]) == 2
    assert "flip axes must be distinct spatial axes in 0..1" in capsys.readouterr().err
    assert main([*bad, "--ema-decay", "1.5"]) == 2
    assert "--ema-decay must lie in (0, 1)" in capsys.readouterr().err
