"""``medexplain simulate train|apply`` end to end on a `medexplain train` run folder, and its one-line errors."""

from __future__ import annotations

import json
import shutil

import nibabel
import numpy as np
import pytest
import torch
from torch import nn

from medexplain.cli import main
from medexplain.data import load_dataset
from medexplain.data.synth import write_deformation
from medexplain.data.transforms import ScaleIntensity
from medexplain.simulate import Simulator, SimulatorConfig, folding_rate, jacobian_determinant, warp
from medexplain.simulate.apply import apply_simulator
from medexplain.simulate.checkpoint import load_simulator
from medexplain.simulate.runs import load_classifier, open_data
from medexplain.train import TrainConfig, train


@pytest.fixture(scope="module")
def run(atrophy_2d, tmp_path_factory):
    """A briefly trained ResNet-18 (width 8) run folder: the plumbing, not the accuracy, is tested here."""
    out = tmp_path_factory.mktemp("classifier") / "run"
    config = TrainConfig("resnet18", model_args={"width": 8}, epochs=2, batch_size=32, augment=False)
    train(config, atrophy_2d, out, progress=False, device="cpu")
    return out


@pytest.fixture(scope="module")
def simulator_dir(run, atrophy_2d, tmp_path_factory):
    out = tmp_path_factory.mktemp("simulator") / "sim"
    code = main(["simulate", "train", "--classifier", str(run), "--data", str(atrophy_2d), "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--channels", "4,8", "--lr", "3e-3",
                 "--displacement-weight", "0.5", "--no-progress"])
    assert code == 0
    return out


def test_train_writes_safetensors_and_json(simulator_dir, run) -> None:
    assert sorted(p.name for p in simulator_dir.iterdir()) == ["history.csv", "simulator.json", "simulator.safetensors"]
    document = json.loads((simulator_dir / "simulator.json").read_text())
    assert document["simulator"]["channels"] == [4, 8] and document["simulator"]["spatial_dims"] == 2
    assert document["classifier"] == str(run.resolve())
    assert document["training"]["displacement_weight"] == 0.5 and document["training"]["epochs"] == 1
    simulator, _ = load_simulator(simulator_dir)
    assert not simulator.training


def test_apply_writes_consistent_images_fields_and_jacobians(simulator_dir, run, atrophy_2d, tmp_path) -> None:
    out = tmp_path / "inject"
    assert main(["simulate", "apply", "--simulator", str(simulator_dir), "--data", str(atrophy_2d), "--split", "test",
                 "--direction", "inject", "--out", str(out), "--no-progress"]) == 0
    index = json.loads((out / "index.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    simulator, _ = load_simulator(simulator_dir)
    classifier, config = load_classifier(run)
    dataset = open_data(atrophy_2d, config, "test")
    assert index["summary"] == summary and summary["images"] == len(index["items"]) == len(dataset)
    foldings = []
    for i, item in enumerate(index["items"][:4]):
        image = dataset[i].image[None]
        assert item["id"] == dataset[i].meta["id"]
        field = torch.from_numpy(np.load(out / item["displacements"]))[None]
        simulated = torch.from_numpy(np.load(out / item["images"]))[None]
        jacobian = torch.from_numpy(np.load(out / item["jacobians"]))[None]
        torch.testing.assert_close(simulated, warp(image, field), rtol=0, atol=1e-5)
        with torch.no_grad():
            expected = simulator.simulate(image, 1)
            logits = classifier(simulated)
        torch.testing.assert_close(jacobian, expected.jacobian(), rtol=0, atol=1e-5)
        assert (jacobian - 1).abs().max() > 1e-3  # a real deformation, not the identity
        torch.testing.assert_close(item["logit_after"], float(logits[0, 1] - logits[0, 0]), rtol=1e-4, atol=1e-4)
        foldings.append(float(folding_rate(jacobian_determinant(expected.deformation))))
        assert item["folding_rate"] == pytest.approx(foldings[-1])
    eligible = [item for item in index["items"] if not item["diseased_before"]]
    assert summary["eligible"] == len(eligible)
    assert summary["flip_rate"] == pytest.approx(sum(item["diseased_after"] for item in eligible) / len(eligible))
    assert (out / "summary.csv").read_text().startswith("metric,value\nd")


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("medexplain: error:") and "\n" not in message
    return message


def test_bad_direction_is_a_one_line_error(simulator_dir, atrophy_2d, tmp_path, capsys) -> None:
    message = one_line_error(capsys, ["simulate", "apply", "--simulator", str(simulator_dir), "--data",
                                      str(atrophy_2d), "--direction", "sideways", "--out", str(tmp_path / "x")])
    assert "'sideways'" in message and "inject, remove" in message
    assert not (tmp_path / "x").exists()


def test_mismatched_simulator_config_is_a_one_line_error(simulator_dir, atrophy_2d, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(simulator_dir, broken)
    document = json.loads((broken / "simulator.json").read_text())
    document["simulator"]["channels"] = [8, 16]
    (broken / "simulator.json").write_text(json.dumps(document))
    argv = ["simulate", "apply", "--simulator", str(broken), "--data", str(atrophy_2d), "--direction", "remove",
            "--out", str(tmp_path / "y")]
    assert "does not match the model" in one_line_error(capsys, argv)
    document["simulator"]["kernel"] = 5
    (broken / "simulator.json").write_text(json.dumps(document))
    assert "unknown key 'kernel'" in one_line_error(capsys, argv)
    (broken / "simulator.json").unlink()
    assert "simulator.json: no such file" in one_line_error(capsys, argv)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return write_deformation(tmp_path_factory.mktemp("volumes") / "data", 4, 3, 24, seed=1, show_progress=False)


def test_data_of_another_dimensionality_is_a_one_line_error(simulator_dir, volumes, tmp_path, capsys) -> None:
    message = one_line_error(capsys, ["simulate", "apply", "--simulator", str(simulator_dir), "--data", str(volumes),
                                      "--direction", "inject", "--out", str(tmp_path / "z")])
    assert "3D images" in message and "2D" in message
    message = one_line_error(capsys, ["simulate", "apply", "--simulator", str(simulator_dir), "--data", str(volumes),
                                      "--direction", "inject", "--format", "nifti", "--out", str(tmp_path / "z")])
    assert "3D" in message


def test_3d_outputs_as_nifti_equal_the_npy_outputs(volumes, tmp_path) -> None:
    simulator = Simulator(SimulatorConfig(spatial_dims=3, in_channels=1, channels=(4, 8)))
    with torch.no_grad():
        simulator.head.weight.normal_(0, 0.05)  # a non-trivial, non-uniform field
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(24**3, 2))
    dataset = load_dataset(volumes, transform=ScaleIntensity((0, 255)))
    npy = apply_simulator(simulator, classifier, dataset, "remove", tmp_path / "npy", progress=False)
    nifti = apply_simulator(simulator, classifier, dataset, "remove", tmp_path / "nifti", file_format="nifti",
                            progress=False)
    assert npy == nifti
    items = json.loads((tmp_path / "nifti" / "index.json").read_text())["items"]
    for kind in ("images", "displacements", "jacobians"):
        assert items[0][kind].endswith(".nii.gz")
        volume = np.asarray(nibabel.load(tmp_path / "nifti" / items[0][kind]).dataobj)
        array = np.load(tmp_path / "npy" / items[0][kind].replace(".nii.gz", ".npy"))
        expected = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
        np.testing.assert_array_equal(volume, expected)
    assert np.abs(np.load(tmp_path / "npy" / items[0]["jacobians"].replace(".nii.gz", ".npy")) - 1).max() > 1e-3


def test_report_shows_the_simulator_and_its_simulation(simulator_dir, atrophy_2d, tmp_path) -> None:
    from medexplain.report import build_report

    root = tmp_path / "runs"
    shutil.copytree(simulator_dir, root / "simulator")
    assert main(["simulate", "apply", "--simulator", str(simulator_dir), "--data", str(atrophy_2d), "--split", "test",
                 "--direction", "remove", "--out", str(root / "remove"), "--no-progress"]) == 0
    page = build_report(root).read_text()
    assert '<section id="simulator-simulator">' in page and '<section id="simulation-remove">' in page
    summary = json.loads((root / "remove" / "summary.json").read_text())
    assert f'data-value="{float(summary["flip_rate"])!r}"' in page  # the numbers of the run's own summary
    assert f'data-value="{float(summary["folding_rate"])!r}"' in page
    index = json.loads((root / "remove" / "index.json").read_text())
    assert all(item["id"] in page for item in index["items"][:3])  # the first images are shown with their fields
    assert "Some parts are incomplete" not in page
