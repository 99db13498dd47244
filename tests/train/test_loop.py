"""The training loop: deterministic, resumable to the bit, honest run folders, clear errors on bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medexplain.data import load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.errors import MedexplainError
from medexplain.metrics.classification import accuracy
from medexplain.models import load
from medexplain.models.checkpoint import read_tensors
from medexplain.train import TrainConfig, train

FAST = {"epochs": 3, "batch_size": 8, "lr": 3e-3}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _assert_same_tensors(a: Path, b: Path) -> None:
    first, second = read_tensors(a), read_tensors(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=0, rtol=0, msg=name)


def test_same_seed_same_weights_and_resume_equals_uninterrupted(fundus: Path, tmp_path: Path) -> None:
    """Run ``c`` is interrupted after epoch 2 and resumed; it must equal the uninterrupted run ``a`` bit for bit,
    which also shows that two runs with one seed give the same weights (``c`` re-does ``a``'s first epochs)."""
    settings = {**FAST, "loss": "ce+sparsity", "sparsity_lambda": 0.1, "optimizer": "sgd", "seed": 5}
    train(TrainConfig("sparse-bagnet9-light", **settings), fundus, tmp_path / "a", progress=False)

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            TrainConfig("sparse-bagnet9-light", **settings),
            fundus,
            tmp_path / "c",
            on_epoch_end=interrupt,
            progress=False,
        )
    assert len(_rows(tmp_path / "c")) == 2
    train(TrainConfig("sparse-bagnet9-light", **settings), fundus, tmp_path / "c", resume=True, progress=False)
    # Weights, optimizer buffers, generator states and the per-epoch history all equal the uninterrupted run's.
    _assert_same_tensors(tmp_path / "a" / "resume.safetensors", tmp_path / "c" / "resume.safetensors")
    _assert_same_tensors(tmp_path / "a" / "model.safetensors", tmp_path / "c" / "model.safetensors")
    assert _rows(tmp_path / "a") == _rows(tmp_path / "c")
    # A different seed gives different weights (the seed is really used).
    train(
        TrainConfig("sparse-bagnet9-light", **{**settings, "seed": 6, "epochs": 1}),
        fundus,
        tmp_path / "d",
        progress=False,
    )
    assert not torch.equal(
        read_tensors(tmp_path / "a" / "model.safetensors")["evidence.weight"],
        read_tensors(tmp_path / "d" / "model.safetensors")["evidence.weight"],
    )


def test_run_folder_reproduces_its_recorded_metrics(fundus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = train(
        TrainConfig("resnet18", model_args={"small_input": True, "width": 8}, optimizer="adamw", **FAST),
        fundus,
        run,
        progress=False,
    )
    saved = json.loads((run / "config.json").read_text())
    assert saved == json.loads(json.dumps(config))
    assert saved["class_names"] == ["none", "mild", "moderate", "severe", "proliferative"]
    expected_args = {"small_input": True, "width": 8, "in_channels": 3, "num_classes": 5, "spatial_dims": 2}
    assert saved["model_args"] == expected_args
    assert len(_rows(run)) == 3 and 1 <= saved["metrics"]["best_epoch"] <= 3
    # Rebuilding model and preprocessing from the folder alone gives the recorded test accuracy.
    model, config = load(run)
    test = load_dataset(config["data"], split="test", transform=preprocessing_transform(config["preprocessing"]))
    images = torch.stack([test[i].image for i in range(len(test))])
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert accuracy(test.labels, predicted) == pytest.approx(config["metrics"]["test"]["accuracy"], abs=1e-12)
    mean = torch.tensor(config["preprocessing"]["intensity"]["mean"])
    assert mean.shape == (3,) and (mean > 0).all()


def test_multilabel_bce_trains_on_label_columns(fundus: Path, tmp_path: Path) -> None:
    config = train(
        TrainConfig("bagnet9-light", loss="bce", **{**FAST, "epochs": 1}), fundus, tmp_path / "run", progress=False
    )
    assert config["label_names"] == ["microaneurysm", "haemorrhage", "exudate", "dust"]
    assert config["model_args"]["num_classes"] == 4 and config["class_names"] == []
    assert 0 <= config["metrics"]["val"]["auroc"] <= 1


def test_bad_requests_are_clear_errors_and_overwrite_nothing(fundus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainConfig("bagnet9-light", **{**FAST, "epochs": 1}), fundus, run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(MedexplainError, match=r"run: exists and is not empty \(set `resume`"):
        train(TrainConfig("bagnet9-light", **{**FAST, "epochs": 1}), fundus, run, progress=False)
    with pytest.raises(MedexplainError, match=r"run: was trained with epochs=1, not 2"):
        train(TrainConfig("bagnet9-light", **{**FAST, "epochs": 2}), fundus, run, resume=True, progress=False)
    with pytest.raises(MedexplainError, match=r"run: was trained with model='bagnet9-light', not 'bagnet17-light'"):
        train(TrainConfig("bagnet17-light", **{**FAST, "epochs": 1}), fundus, run, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before

    fresh = tmp_path / "fresh"
    with pytest.raises(MedexplainError, match=r"split 'train' has label [34] outside the model's 3 classes"):
        train(TrainConfig("bagnet9-light", model_args={"num_classes": 3}, **FAST), fundus, fresh, progress=False)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("not a run")
    with pytest.raises(MedexplainError, match=r"no resume checkpoint"):
        train(TrainConfig("bagnet9-light", **FAST), fundus, tmp_path / "stray", resume=True, progress=False)
    with pytest.raises(MedexplainError, match=r"has no evidence map: the sparsity loss needs a BagNet"):
        train(TrainConfig("resnet18", loss="ce+sparsity", sparsity_lambda=0.1, **FAST), fundus, fresh, progress=False)
    with pytest.raises(MedexplainError, match=r"needs a positive `sparsity_lambda`"):
        train(
            TrainConfig("bagnet9-light", loss="ce+sparsity", sparsity_lambda=0.0, **FAST), fundus, fresh, progress=False
        )
    with pytest.raises(MedexplainError, match=r"class weights must be 5 non-negative numbers"):
        train(TrainConfig("bagnet9-light", class_weights=[1, 2], **FAST), fundus, fresh, progress=False)
    assert not fresh.exists()  # a fresh run that fails leaves no folder behind
