"""Killed runs and concurrent runs: a kill at any point, then a re-run, gives what an uninterrupted run gives, and
no folder is ever left in a state that evaluation or the report would take for complete; two processes writing
one folder never lose each other's work silently."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from tests.faults.conftest import cli, copy_of, files

from medexplain.cli import main
from medexplain.errors import MedexplainError
from medexplain.files import exclusive_folder
from medexplain.models import load
from medexplain.models.checkpoint import read_tensors
from medexplain.workflows.explanations import load_explanations

EXPLAIN = ["--method", "saliency,gradcam,integrated-gradients", "--batch-size", "2", "--no-progress"]


def _kill_when(process, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``process`` as soon as ``ready()`` holds (True), or let it finish first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.wait()
    return False


def _assert_never_complete_by_mistake(out: Path, methods: int, items: int) -> None:
    """An index, when there is one, is a complete one."""
    if (out / "index.json").exists():
        stored = load_explanations(out)
        assert len(stored.methods) == methods and len(stored.items) == items
        assert all(len(item.maps) == methods and all(p.is_file() for p in item.maps.values()) for item in stored.items)


def test_explain_killed_mid_run_then_rerun_equals_an_uninterrupted_run(run, data, tmp_path) -> None:
    args = ["explain", "--model", str(run), "--data", str(data), *EXPLAIN]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    process = cli(*args, "--out", str(out))
    killed = _kill_when(process, lambda: (out / ".progress.json").exists())
    assert killed, "the run finished before it could be killed"
    _assert_never_complete_by_mistake(out, 3, 12)
    with pytest.raises(MedexplainError, match="has not finished"):
        load_explanations(out)
    assert main([*args, "--out", str(out)]) == 0  # the re-run continues where the kill stopped it
    assert files(out) == files(tmp_path / "whole")


def test_evaluate_killed_mid_run_then_rerun_equals_an_uninterrupted_run(run, data, tmp_path) -> None:
    maps = tmp_path / "maps"
    assert main(["explain", "--model", str(run), "--data", str(data), "--out", str(maps), *EXPLAIN]) == 0
    args = ["evaluate", "--explanations", str(maps), "--data", str(data), "--model", str(run), "--metrics",
            "pointing-game,deletion-auc,max-sensitivity", "--batch-size", "2", "--resamples", "50", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    kept = tmp_path / ".killed.shards"
    process = cli(*args, "--out", str(out))
    killed = _kill_when(process, lambda: kept.is_dir() and len(list(kept.iterdir())) >= 2)
    assert killed, "the evaluation finished before it could be killed"
    assert not out.exists()  # the scores appear complete or not at all
    assert main([*args, "--out", str(out)]) == 0
    assert files(out) == files(tmp_path / "whole")
    assert not kept.exists()


def _training_data(data: Path, target: Path) -> Path:
    copy = copy_of(data, target)
    lines = (copy / "manifest.csv").read_text().splitlines()
    lines[1:] = [line.replace(",test,", ",val," if i % 4 == 0 else ",train,") for i, line in enumerate(lines[1:])]
    (copy / "manifest.csv").write_text("\n".join(lines) + "\n")
    return copy


def test_train_killed_after_an_epoch_then_resumed_equals_an_uninterrupted_run(data, tmp_path) -> None:
    training = _training_data(data, tmp_path / "data")
    args = ["train", "--model", "bagnet9-light", "--data", str(training), "--epochs", "4", "--batch-size", "3",
            "--model-args", '{"width": 4}', "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    process = cli(*args, "--out", str(out))
    killed = _kill_when(process, lambda: (out / "metrics.csv").exists())
    assert killed, "the training finished before it could be killed"
    assert json.loads((out / "config.json").read_text())["status"] == "training"
    with pytest.raises(MedexplainError, match="its training has not finished"):
        load(out)  # explain, evaluate and the audit refuse a run that is still training
    assert main([*args, "--out", str(out), "--resume"]) == 0
    whole, resumed = files(tmp_path / "whole"), files(out)
    for name in ("model.safetensors", "predictions.csv"):
        assert resumed[name] == whole[name], name
    state, expected = (read_tensors(folder / "resume.safetensors") for folder in (out, tmp_path / "whole"))
    assert state.keys() == expected.keys()  # weights, optimiser buffers, generator states (timings aside)
    assert all(torch.equal(state[key], expected[key]) for key in state)

    def without_seconds(text: bytes) -> list[list[str]]:
        rows = [line.split(",") for line in text.decode().splitlines()]
        drop = rows[0].index("seconds")
        return [row[:drop] + row[drop + 1 :] for row in rows]

    assert without_seconds(resumed["metrics.csv"]) == without_seconds(whole["metrics.csv"])


def test_a_second_process_writing_the_same_folder_is_refused_and_nothing_is_lost(run, data, tmp_path) -> None:
    out = tmp_path / "maps"
    base = ["explain", "--model", str(run), "--data", str(data), "--out", str(out), "--batch-size", "2",
            "--no-progress"]  # fmt: skip
    with exclusive_folder(out):  # another process holds the folder
        second = cli(*base, "--method", "saliency")
        _, err = second.communicate()
    assert second.returncode == 2
    assert err.strip().splitlines() == [f"medexplain: error: {out}: another medexplain process is writing this "
                                        "folder; wait for it to finish or choose another output folder"]
    # two real processes at once, with different methods: each one's methods are indexed or it was refused
    first, second = cli(*base, "--method", "gradcam"), cli(*base, "--method", "saliency")
    outcomes = {"gradcam": first.communicate()[1], "saliency": second.communicate()[1]}
    codes = {"gradcam": first.returncode, "saliency": second.returncode}
    assert set(codes.values()) <= {0, 2} and 0 in codes.values()
    for method, code in codes.items():
        if code == 2:
            assert "another medexplain process is writing this folder" in outcomes[method]
            assert main([*base, "--method", method]) == 0  # run again once the other has finished
    stored = load_explanations(out)
    assert set(stored.methods) == {"gradcam", "saliency"}
    assert all(set(item.maps) == {"gradcam", "saliency"} for item in stored.items)
