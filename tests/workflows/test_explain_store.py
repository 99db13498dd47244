"""``medexplain explain`` end to end and the explanations store: maps equal the library's, resumable, safe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medexplain.cli import main
from medexplain.data import collate, load_dataset
from medexplain.errors import MedexplainError
from medexplain.explain import create_explainer
from medexplain.models import create_model, load
from medexplain.workflows.explanations import ExplanationWriter, load_explanations


def test_cli_writes_float32_maps_equal_to_the_library_and_resumes(run_and_data, tmp_path: Path) -> None:
    run, data = run_and_data
    out = tmp_path / "maps"
    args = ["explain", "--model", str(run), "--data", str(data), "--out", str(out), "--split", "",
            "--batch-size", "2", "--no-progress"]
    assert main([*args, "--method", "gradcam,saliency"]) == 0
    stored = load_explanations(out)
    assert sorted(stored.methods) == ["gradcam", "saliency"] and len(stored.items) == 5
    model, _ = load(run)
    dataset = load_dataset(data)
    batch = collate([dataset[i] for i in range(5)])
    for method in ("gradcam", "saliency"):
        expected = create_explainer(method)(model, batch.image)
        for item in stored.items:
            assert np.load(item.maps[method]).dtype == np.float32
            torch.testing.assert_close(stored.load(item, method), expected.maps[item.index])
            assert item.targets == tuple(expected.targets[item.index].tolist())
    first, kept = stored.items[0].maps["gradcam"], stored.items[1].maps["gradcam"]
    kept_written = kept.stat().st_mtime_ns
    first.unlink()
    assert main([*args, "--method", "gradcam,saliency,input-x-gradient"]) == 0
    resumed = load_explanations(out)
    assert first.is_file() and sorted(resumed.methods) == ["gradcam", "input-x-gradient", "saliency"]
    assert all(set(item.maps) == set(resumed.methods) for item in resumed.items)
    assert kept.stat().st_mtime_ns == kept_written  # items already written are skipped
    assert main([*args, "--method", "gradcam", "--layer", "features"]) == 2


def test_cli_bad_method_and_target_are_one_line_errors(run_and_data, tmp_path: Path, capsys) -> None:
    run, data = run_and_data
    base = ["explain", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--method", "gradcm"]) == 2
    assert "unknown explainer 'gradcm' (did you mean 'gradcam'?)" in capsys.readouterr().err
    assert main([*base, "--method", "saliency", "--target", "9", "--split", ""]) == 2
    assert "out of range" in capsys.readouterr().err


def test_cli_method_params_reach_the_explainer_and_the_index(run_and_data, tmp_path: Path, capsys) -> None:
    run, data = run_and_data
    out = tmp_path / "ig"
    base = ["explain", "--model", str(run), "--data", str(data), "--split", "", "--no-progress"]
    params = '{"integrated-gradients": {"steps": 3, "baseline": "blur"}}'
    assert main([*base, "--out", str(out), "--method", "integrated-gradients", "--method-params", params]) == 0
    stored = load_explanations(out)
    recorded = json.loads((out / "index.json").read_text())["methods"]["integrated-gradients"]
    assert recorded["steps"] == 3 and recorded["baseline"] == "blur"
    model, _ = load(run)
    dataset = load_dataset(data)
    batch = collate([dataset[i] for i in range(5)])
    expected = create_explainer("integrated-gradients", steps=3, baseline="blur")(model, batch.image)
    default = create_explainer("integrated-gradients")(model, batch.image)
    for item in stored.items:
        torch.testing.assert_close(stored.load(item, "integrated-gradients"), expected.maps[item.index])
    assert not torch.allclose(expected.maps, default.maps)  # the parameters changed the maps
    assert main([*base, "--out", str(tmp_path / "bad"), "--method", "saliency", "--method-params", params]) == 2
    assert "'integrated-gradients', which is not among the methods" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_cards_method_params_are_used_and_flags_override_them(run_and_data, tmp_path: Path) -> None:
    _, data = run_and_data
    args = {"in_channels": 3, "num_classes": 5, "width": 4}
    torch.save(create_model("resnet18", **args).state_dict(), tmp_path / "weights.pth")
    card = {"architecture": "medexplain:resnet18", "arguments": args, "weights": "weights.pth",
            "method_params": {"integrated-gradients": {"steps": 3, "baseline": "blur"}}}  # fmt: skip
    (tmp_path / "card.json").write_text(json.dumps(card))
    base = ["explain", "--model", str(tmp_path / "card.json"), "--data", str(data), "--split", "", "--no-progress",
            "--method", "integrated-gradients"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "card")]) == 0
    steps = '{"integrated-gradients": {"steps": 5}}'
    assert main([*base, "--out", str(tmp_path / "flag"), "--method-params", steps]) == 0
    from_card, from_flag = (json.loads((tmp_path / f / "index.json").read_text())["methods"]["integrated-gradients"]
                            for f in ("card", "flag"))  # fmt: skip
    assert (from_card["steps"], from_card["baseline"]) == (3, "blur")
    assert (from_flag["steps"], from_flag["baseline"]) == (5, "blur")


def test_store_round_trips_nifti_and_refuses_paths_out_of_the_folder(tmp_path: Path) -> None:
    writer = ExplanationWriter(tmp_path, {"model": "m", "data": "d", "split": None}, {"x": {}}, map_format="nifti")
    maps = torch.randn(2, 3, 4, 5)
    writer.write("case/01", 0, 1, [0, 1], "x", maps)
    writer.commit(1)
    stored = load_explanations(tmp_path)
    assert stored.items[0].maps["x"].name == "case_01-0.nii.gz"
    torch.testing.assert_close(stored.load(stored.items[0], "x"), maps)
    index = json.loads((tmp_path / "index.json").read_text())
    index["items"][0]["maps"]["x"] = "../../etc/passwd"
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(MedexplainError, match="leaves the folder"):
        load_explanations(tmp_path)
