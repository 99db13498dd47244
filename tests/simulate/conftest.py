"""Shared synthetic data of the simulator tests."""

from __future__ import annotations

import pytest

from medexplain.data.synth import write_deformation


@pytest.fixture(scope="package")
def atrophy_2d(tmp_path_factory):
    """224 synthetic 2D brains of 48 x 48 pixels (class 1: left hippocampus atrophy, mask ``atrophy``)."""
    return write_deformation(tmp_path_factory.mktemp("atrophy") / "data", 224, 2, 48, seed=0, show_progress=False)
