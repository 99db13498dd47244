"""``train`` as a 2-process gloo job equals the single-process run with the same global batch."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from tests.scale._ddp import TINY, rank_main, register_tiny

from medexplain.data.synth import write_fundus
from medexplain.errors import MedexplainError
from medexplain.models import create_model
from medexplain.train import TrainConfig, train
from medexplain.train.distributed import Context, is_main_process

# 20 training images, global batch 6 (3 steps, parts of 3 per rank), augmentation on, SGD with momentum
SETTINGS = {"epochs": 2, "batch_size": 6, "optimizer": "sgd", "lr": 0.05, "seed": 1, "augment": True}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_processes_train_the_same_model_as_one(tmp_path: Path) -> None:
    data = write_fundus(tmp_path / "data", 40, 48, seed=2, show_progress=False)
    register_tiny()
    train(TrainConfig(TINY, **SETTINGS), data, tmp_path / "one", device="cpu", progress=False)
    # fork: the ranks inherit the imported modules (a spawned rank would import torch and MONAI again)
    ranks = (2, _free_port(), data, tmp_path / "two", SETTINGS)
    mp.start_processes(rank_main, args=ranks, nprocs=2, start_method="fork")

    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    torch.manual_seed(SETTINGS["seed"])
    initial = create_model(TINY, in_channels=3, num_classes=5, spatial_dims=2).state_dict()
    assert max(float((one[k] - initial[k]).abs().max()) for k in one) > 1e-2  # training moved the weights
    for name in one:  # gradients all-reduced in another order: equal up to float rounding
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)
    for row_one, row_two in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"), strict=True):
        # the train loss is the mean over the global batch, reduced across the ranks
        assert float(row_two["train_loss"]) == pytest.approx(float(row_one["train_loss"]), rel=1e-4)
        assert float(row_two["val_loss"]) == pytest.approx(float(row_one["val_loss"]), rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_global_batch_parts_cover_it_once_with_shares_summing_to_one() -> None:
    parts = [Context(rank, 3).part(7) for rank in range(3)]
    assert [p.indices(7)[:2] for p, _ in parts] == [(0, 2), (2, 4), (4, 7)]
    assert sum(share for _, share in parts) == pytest.approx(1.0)
    with pytest.raises(MedexplainError, match="cannot be split over 3 processes"):
        Context(0, 3).part(2)


def test_only_rank_0_counts_as_the_main_process(monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()  # a plain process, not launched by torchrun
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
