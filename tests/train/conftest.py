"""Small synthetic fundus data sets shared by the training tests (written once per session)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medexplain.data.synth import write_fundus


@pytest.fixture(scope="session")
def fundus(tmp_path_factory) -> Path:
    """48 px synthetic fundus photographs, 5 grades, train/val/test splits."""
    return write_fundus(tmp_path_factory.mktemp("data") / "fundus", 60, 48, seed=3, show_progress=False)


@pytest.fixture(scope="session")
def referable_fundus(tmp_path_factory) -> Path:
    """160 synthetic fundus photographs at 48 px labelled referable DR (grade >= 2) or not."""
    return make_referable(write_fundus(tmp_path_factory.mktemp("data") / "referable", 160, 48, 0, show_progress=False))


def make_referable(folder: Path) -> Path:
    """Rewrite a fundus set's manifest in place with the binary label "referable DR" (grade >= 2), as in the paper."""
    with (folder / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c != "class_name"]
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            row.pop("class_name")
            writer.writerow({**row, "label": int(int(row["label"]) >= 2)})
    return folder
