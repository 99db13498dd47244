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


def test_list_methods_says_which_models_each_method_needs(capsys) -> None:
    assert main(["list", "methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["attention-rollout"].endswith("needs a transformer (attention modules)")
    assert lines["lrp-epsilon-plus"].endswith("needs any classifier without attention (transformers: attnlrp, cp-lrp)")
    assert lines["attnlrp"].endswith("needs any classifier")
    assert "transformer's last attention input" in lines["gradcam"]
