"""Acceptance of the headline benchmarks (issue 10): every row is reproduced by the command printed beside it.

The busi script runs in smoke mode (tiny subset, one epoch) through ``medexplain benchmark``; then each row's
printed command is run again, alone, in a fresh work folder (so its model is retrained from scratch) and must give
exactly the same numbers. Explanation seconds are measurements and are left out of the comparison.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from medexplain.cli import main
from medexplain.cli.benchmark import BENCHMARKS, benchmarks_folder
from medexplain.errors import MedexplainError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _headline import write_section  # noqa: E402

TIMINGS = ("s / image", "s / tile")
ROWS = ("resnet18-lrp", "bagnet-sparse")


def _table(work: Path) -> dict:
    return json.loads((work / "headline.json").read_text())


def _numbers(row: dict) -> dict:
    return {column: value for column, value in row["values"].items() if column not in TIMINGS}


def test_busi_rows_are_reproduced_by_their_printed_commands(tmp_path: Path, shared_data: Path) -> None:
    table_work = tmp_path / "table"
    arguments = ["benchmark", "busi", "--smoke", "--seed", "3", "--work", str(table_work)]
    assert main([*arguments, *[a for row in ROWS for a in ("--row", row)]]) == 0
    rows = _table(table_work)["rows"]
    assert [r["row"] for r in rows] == list(ROWS)
    printed = (table_work / "table.md").read_text()
    for row in rows:
        command = shlex.split(row["command"])
        assert command[:2] == ["medexplain", "benchmark"] and "--seed" in command and "3" in command
        assert f"`{row['command']}`" in printed  # the command is printed in the row's line
        again = tmp_path / row["row"]
        assert main([*command[1:], "--work", str(again)]) == 0
        [repeated] = _table(again)["rows"]
        assert repeated["command"] == row["command"]
        assert _numbers(repeated) == _numbers(row)
        assert all(v is not None for v in _numbers(row).values())
        assert _printed_cells(printed, row["label"]) == _printed_cells((again / "table.md").read_text(), row["label"])


def _printed_cells(table: str, label: str) -> dict[str, str]:
    """The printed numbers of the row ``label`` by column, timings left out."""
    lines = table.splitlines()
    header = next(x for x in lines if x.startswith("| row | seed |")).split("|")[3:-2]
    line = next(x for x in lines if x.startswith(f"| {label} |")).split("|")[3:-2]
    cells = {name.strip(): cell.strip() for name, cell in zip(header, line, strict=True)}
    return {name: cell for name, cell in cells.items() if name not in TIMINGS}


def test_unknown_benchmark_is_rejected_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "no-such"]) == 2
    error = capsys.readouterr().err
    assert "no-such" in error and all(name in error for name in BENCHMARKS)


def test_benchmarks_outside_a_checkout_are_a_clear_error(tmp_path: Path) -> None:
    assert benchmarks_folder() == ROOT / "benchmarks"
    with pytest.raises(MedexplainError, match="source checkout"):
        benchmarks_folder(tmp_path / "site-packages" / "medexplain" / "cli" / "benchmark.py")


def test_a_section_replaces_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# R\n\n<!-- headline:a -->\nold a\n<!-- /headline:a -->\n\nother helper's text\n")
    write_section(path, "headline:a", "new a")
    write_section(path, "headline:b", "b")
    assert path.read_text() == (
        "# R\n\n<!-- headline:a -->\nnew a\n<!-- /headline:a -->\n\nother helper's text\n\n"
        "<!-- headline:b -->\nb\n<!-- /headline:b -->\n"
    )
