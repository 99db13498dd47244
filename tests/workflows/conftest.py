"""A small trained-format run and dataset shared by the workflow tests (one per test module)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medexplain.data.synth import write_fundus
from medexplain.models import create_model, save_run


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A BagNet-9 run folder (random weights, 5 classes, 2D) and a five-image synthetic fundus dataset of 48 px."""
    root = tmp_path_factory.mktemp("workflow_run")
    data = write_fundus(root / "data", n=5, size=48, seed=0, show_progress=False)
    torch.manual_seed(0)
    model_args = {"in_channels": 3, "num_classes": 5, "spatial_dims": 2}
    run = save_run(create_model("bagnet9-light", **model_args), root / "run", "bagnet9-light", model_args)
    return run, data
