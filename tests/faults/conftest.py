"""A small dataset of ``.npy`` images with lesion masks, an untrained model that fits it, and helpers to break
one of its files or to run the command line in a separate process (that can be killed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medexplain.data.writers import png_bytes, write_file, write_manifest
from medexplain.files import LOCK_FILE
from medexplain.models import create_model, save_run

SIZE = 32
MODEL_ARGS = {"in_channels": 1, "num_classes": 2, "width": 4}


def write_npy_dataset(folder: Path, n: int = 12, seed: int = 0, channels: int = 1) -> Path:
    """``n`` test images of 32 x 32 with a square ``lesion`` mask each, half of them label 1: grey ``.npy`` arrays
    (``channels=1``) or RGB PNG files (``channels=3``)."""
    rng = np.random.default_rng(seed)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.normal(size=(SIZE, SIZE, channels)).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        corner = rng.integers(4, SIZE - 12, size=2)
        mask[corner[0] : corner[0] + 8, corner[1] : corner[1] + 8] = True
        image[mask] += 2.0 * (i % 2)
        if channels == 1:
            name = f"img{i:02d}.npy"
            np.save(folder / name, image[..., 0])
        else:
            name = write_file(folder, f"img{i:02d}.png", png_bytes(np.clip(image * 40 + 128, 0, 255).astype(np.uint8)))
        rows.append({"image": name, "split": "test", "label": i % 2,
                     "mask_lesion": write_file(folder, f"masks/img{i:02d}.png", png_bytes(mask))})  # fmt: skip
    write_manifest(folder, rows)
    return folder


@pytest.fixture(scope="package")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npy_dataset(tmp_path_factory.mktemp("faults") / "data")


@pytest.fixture(scope="package")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("bagnet9-light", **MODEL_ARGS)
    return save_run(model, tmp_path_factory.mktemp("faults") / "run", "bagnet9-light", MODEL_ARGS)


def copy_of(data: Path, target: Path) -> Path:
    shutil.copytree(data, target)
    return target


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (the lock file, which every run leaves, aside)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}  # fmt: skip


def cli(*args: str) -> subprocess.Popen:
    """``medexplain ARGS`` in a new process (stdout and stderr captured)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "medexplain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
