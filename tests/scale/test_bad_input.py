"""``--engine ray`` without Ray, or with an address where no cluster listens: one line naming the fix, exit 2."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from medexplain.cli import main


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_missing_ray_names_the_extra(command, monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as when not installed
    args = {"explain": ["explain", "--model", str(tmp_path), "--data", str(tmp_path), "--method", "saliency"],
            "evaluate": ["evaluate", "--explanations", str(tmp_path), "--data", str(tmp_path)]}[command]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "out"), "--engine", "ray"]) == 2
    line = _last_line(capsys)
    assert line.startswith("medexplain: error: --engine ray needs Ray") and "pip install 'medexplain[ray]'" in line
    assert not (tmp_path / "out").exists()


def test_unreachable_address_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from medexplain.data.synth import write_fundus

    data = write_fundus(tmp_path / "data", n=2, size=48, seed=0, show_progress=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "bagnet9-light", "model_args": {}}')
    address = f"127.0.0.1:{_closed_port()}"
    args = ["explain", "--model", str(run), "--data", str(data), "--split", "", "--method", "saliency", "--out",
            str(tmp_path / "out"),
            "--engine", "ray", "--address", address]  # fmt: skip
    assert main(args) == 2
    line = _last_line(capsys)
    assert line.startswith(f"medexplain: error: --address {address}: no Ray cluster reachable")
    assert not (tmp_path / "out").exists()


def test_unknown_engine_is_refused(tmp_path: Path, capsys) -> None:
    args = ["explain", "--model", str(tmp_path), "--data", str(tmp_path), "--method", "saliency", "--out",
            str(tmp_path / "out"), "--engine", "spark"]  # fmt: skip
    assert main(args) == 2
    assert "--engine: expected one of local, ray, got 'spark'" in _last_line(capsys)
