"""``medexplain synth``: folders that load_dataset reads back, the path as the last line, bad values -> exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medexplain.cli import main
from medexplain.data import load_dataset
from medexplain.data.synth import deformation, fundus


def test_synth_fundus_round_trip(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fundus"
    assert main(["synth", "fundus", "--out", str(out), "--n", "4", "--size", "48", "--seed", "7"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    data = load_dataset(out)
    memory = fundus(4, 48, seed=7)
    assert len(data) == 4 and data.label_names == ["microaneurysm", "haemorrhage", "exudate", "dust"]
    for i in range(4):
        np.testing.assert_array_equal(data[i].image.numpy(), np.moveaxis(memory.images[i], -1, 0))
        np.testing.assert_array_equal(data[i].masks["lesion"][0].numpy(), memory.masks["lesion"][i])
    assert data.labels.tolist() == memory.grades.tolist()


@pytest.mark.parametrize("dims", [2, 3])
def test_synth_deformation_round_trip(tmp_path: Path, capsys, dims: int) -> None:
    out = tmp_path / f"brains{dims}d"
    argv = ["synth", "deformation", "--out", str(out), "--n", "3", "--dims", str(dims), "--size", "24", "--seed", "2"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    data = load_dataset(out)
    memory = deformation(3, dims, 24, seed=2)
    assert data.spatial_dims == dims and data.mask_names == ["atrophy"]
    for i in range(3):
        assert data[i].image.shape == (1,) + (24,) * dims
        np.testing.assert_array_equal(data[i].image[0].numpy(), memory.images[i])
        np.testing.assert_array_equal(data[i].masks["atrophy"][0].numpy(), memory.masks[i])
    assert data.labels.tolist() == memory.labels.tolist()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["fundus", "--n", "0"], "n=0"),
        (["fundus", "--size", "8"], "size=8"),
        (["fundus", "--seed", "-3"], "seed=-3"),
        (["deformation", "--dims", "4"], "dims"),
        (["deformation", "--dims", "3", "--size", "999"], "size=999"),
        (["deformation", "--n", "many"], "--n"),
    ],
)
def test_bad_values_exit_2_and_write_nothing(tmp_path: Path, capsys, argv: list[str], named: str) -> None:
    out = tmp_path / "out"
    assert main(["synth", argv[0], "--out", str(out), *argv[1:]]) == 2
    error = capsys.readouterr().err
    assert named in error
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_needs_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["synth", "deformation", "--out", str(out), "--n", "2", "--size", "24"]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left behind
