"""Fine-tuning from a trained run, the warning for a validation split too small to choose an epoch, and one Gini
for an evidence model (training summary = ``medexplain evaluate``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medexplain.cli import main
from medexplain.errors import MedexplainError
from medexplain.models import create_model, load
from medexplain.models.run import initialise_from
from medexplain.train import TrainConfig, train
from medexplain.train.data import SmallValidationWarning
from medexplain.workflows.evaluate import evaluate_run
from medexplain.workflows.explain import explain_run

FAST = {"epochs": 2, "batch_size": 8, "lr": 3e-3}
ARGS = {"small_input": True, "width": 8}


@pytest.fixture(scope="module")
def graded_run(fundus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("graded") / "run"
    with pytest.warns(SmallValidationWarning):
        train(TrainConfig("resnet18", model_args=ARGS, **FAST), fundus, run, progress=False)
    return run


def test_fine_tuning_copies_every_tensor_but_a_head_of_another_shape(graded_run: Path) -> None:
    trained, _ = load(graded_run)
    same = create_model("resnet18", in_channels=3, num_classes=5, **ARGS)
    assert initialise_from(same, "resnet18", graded_run) == []
    for name, tensor in same.state_dict().items():
        assert torch.equal(tensor, trained.state_dict()[name]), name
    binary = create_model("resnet18", in_channels=3, num_classes=2, **ARGS)
    fresh = {k: v.clone() for k, v in binary.state_dict().items()}
    reinitialised = initialise_from(binary, "resnet18", graded_run)
    assert reinitialised == ["fc.weight", "fc.bias"]
    for name, tensor in binary.state_dict().items():
        expected = fresh[name] if name in reinitialised else trained.state_dict()[name]
        assert torch.equal(tensor, expected), name
    with pytest.raises(MedexplainError, match="was trained as 'resnet18', not 'bagnet9-light'"):
        initialise_from(create_model("bagnet9-light", in_channels=3, num_classes=5), "bagnet9-light", graded_run)


def test_a_run_started_from_another_records_it_and_differs_from_a_fresh_one(
    graded_run: Path, referable_fundus: Path, tmp_path: Path
) -> None:
    config = TrainConfig("resnet18", model_args=ARGS, **FAST)
    tuned = train(replace(config, init_from=str(graded_run)), referable_fundus,
                  tmp_path / "tuned", progress=False)  # fmt: skip
    assert tuned["initialised_from"] == {"run": str(graded_run.resolve()), "reinitialised": ["fc.weight", "fc.bias"]}
    assert tuned["training"]["init_from"] == str(graded_run.resolve())
    fresh = train(config, referable_fundus, tmp_path / "fresh", progress=False)
    assert "initialised_from" not in fresh
    tuned_model, _ = load(tmp_path / "tuned")
    fresh_model, _ = load(tmp_path / "fresh")
    assert not torch.equal(tuned_model.conv1.weight, fresh_model.conv1.weight)


def test_the_cli_fine_tunes_and_refuses_another_model_in_one_line(graded_run: Path, fundus: Path, tmp_path: Path,
                                                                  capsys) -> None:  # fmt: skip
    base = ["train", "--data", str(fundus), "--epochs", "1", "--batch-size", "8", "--no-progress"]
    assert main([*base, "--model", "resnet18", "--model-args", json.dumps(ARGS), "--init-from", str(graded_run),
                 "--out", str(tmp_path / "ok")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["initialised_from"]["reinitialised"] == []
    capsys.readouterr()
    assert main([*base, "--model", "bagnet9-light", "--init-from", str(graded_run), "--out", str(tmp_path / "no")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "was trained as 'resnet18'" in lines[0]
    assert not (tmp_path / "no").exists()


def test_a_validation_split_too_small_to_choose_an_epoch_is_named_in_a_warning_and_the_run(graded_run: Path) -> None:
    config = json.loads((graded_run / "config.json").read_text())
    (warning,) = config["warnings"]
    assert "the validation split has fewer than 5 images of" in warning and "none: " in warning


def test_the_training_summary_gini_is_the_gini_evaluate_scores(fundus: Path, tmp_path: Path) -> None:
    run = tmp_path / "bagnet"
    with pytest.warns(SmallValidationWarning):
        config = train(TrainConfig("sparse-bagnet9-light", **FAST), fundus, run, progress=False)
    explain_run(run, fundus, ["evidence"], tmp_path / "maps", split="test", progress=False)
    scores = evaluate_run(tmp_path / "maps", fundus, tmp_path / "scores", metrics=["gini"], progress=False)
    ginis = [row["score"] for row in scores.evaluation.rows]
    assert len(ginis) == len(scores.evaluation.rows) > 5
    assert sum(ginis) / len(ginis) == pytest.approx(config["metrics"]["test"]["gini"], abs=1e-4)
