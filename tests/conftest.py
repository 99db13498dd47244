"""Shared test set-up: the torchvision stub for reference libraries, the benchmark scripts on the import path, the
shared datasets, seeding."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Zennit, Quantus and pytorch-grad-cam import torchvision at import time; they are test references only.
if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(ROOT / "tests" / "stubs"))

# The benchmark scripts (benchmarks/*.py) are imported by the tests that rerun their smoke sizes.
sys.path.insert(0, str(ROOT / "benchmarks"))

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: tests that need the real datasets fail loudly (never skip) when it is missing."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"{SHARED_DATA} is missing: real-data tests need ../shared/data beside the project")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
