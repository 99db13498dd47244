"""Only the command line speaks flag names: library code (every module outside ``medexplain.cli``) names its
parameters, and the CLI shows the flags (``MedexplainError(parameter=...)``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer.main

from medexplain.cli import app, flag_of, in_flags
from medexplain.errors import MedexplainError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medexplain"


def cli_flags() -> set[str]:
    """Every ``--flag`` of every ``medexplain`` command (and sub-command)."""
    flags: set[str] = set()
    pending = [typer.main.get_command(app)]
    while pending:
        command = pending.pop()
        flags.update(opt for param in command.params for opt in (*param.opts, *param.secondary_opts))
        pending.extend(getattr(command, "commands", {}).values())
    return {flag for flag in flags if flag.startswith("--")} - {"--help"}


def flag_mentions(root: Path, flags: set[str]) -> list[str]:
    """``file:line: --flag`` for every string in library code under ``root`` that contains one of ``flags``."""
    pattern = re.compile(r"--[a-z][a-z0-9-]*")
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("cli", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [f"{path.relative_to(root)}:{node.lineno}: {m}" for m in pattern.findall(node.value)
                          if m in flags]  # fmt: skip
    return found


def test_no_library_string_speaks_a_cli_flag() -> None:
    flags = cli_flags()
    assert {"--batch-size", "--overwrite", "--out"} <= flags  # the check knows the flags it looks for
    assert flag_mentions(PACKAGE, flags) == []


def test_the_check_finds_a_flag_in_library_code(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "bad.py").write_text('def f(n):\n    raise ValueError(f"--batch-size: {n}")\n')
    assert flag_mentions(tmp_path, cli_flags()) == ["workflows/bad.py:2: --batch-size"]


def test_the_cli_shows_the_flag_of_the_parameter_an_error_names() -> None:
    error = MedexplainError("`batch_size` must be positive, got 0", parameter="batch_size")
    assert str(error) == "`batch_size` must be positive, got 0"
    assert in_flags(error) == "--batch-size must be positive, got 0"
    assert in_flags(MedexplainError("/runs/batch_size/x: not a folder")) == "/runs/batch_size/x: not a folder"


def test_every_parameter_an_error_names_has_a_flag() -> None:
    named = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "parameter" and isinstance(node.value, ast.Constant):
                named.add(node.value.value)
    assert {"batch_size", "overwrite", "classifier_dir"} <= named
    assert {flag_of(name) for name in named} <= cli_flags(), sorted(named)
