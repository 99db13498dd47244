"""Small synthetic fundus data sets shared by the training tests (written once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medexplain.data.synth import write_fundus


@pytest.fixture(scope="session")
def fundus(tmp_path_factory) -> Path:
    """48 px synthetic fundus photographs, 5 grades, train/val/test splits."""
    return write_fundus(tmp_path_factory.mktemp("data") / "fundus", 60, 48, seed=3, show_progress=False)


@pytest.fixture(scope="session")
def referable_fundus(tmp_path_factory) -> Path:
    """160 synthetic fundus photographs at 48 px labelled referable DR (grade >= 2) or not, as in the paper."""
    folder = tmp_path_factory.mktemp("data") / "referable"
    return write_fundus(folder, 160, 48, 0, show_progress=False, label="referable")
