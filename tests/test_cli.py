"""The command line: version, help, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from medexplain import __version__
from medexplain.cli import main


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"medexplain {__version__}"


def test_unknown_command_exits_2() -> None:
    assert main(["no-such-command"]) == 2


def test_console_script_runs_as_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "medexplain", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "synth" in done.stdout
