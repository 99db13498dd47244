"""Acceptance of the headline benchmarks (issues 10, 23): every row is reproduced by the command printed beside it,
and every table keeps the format recorded in ``benchmarks/RESULTS.md``.

The busi script runs in smoke mode (tiny subset, one epoch) through ``medexplain benchmark``; then each row's
printed command is run again, alone, in a fresh work folder (so its model is retrained from scratch) and must give
exactly the same numbers. Explanation seconds are measurements and are left out of the comparison. One smoke row of
every other headline table (each table of nih-multilabel) is run through its printed command on the real data, and
its printed line must have the recorded table's header, the recorded row's label and the recorded kind of cell in
every column (interval, number, count, ``-``), with ``n/a`` (nothing to score at this size) accepted for an interval.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from _headline import Benchmark, Row, Size, parse, recorded_section, write_section
from medexplain.cli import main
from medexplain.cli.benchmark import BENCHMARKS, benchmarks_folder, script_arguments
from medexplain.errors import MedexplainError

ROOT = Path(__file__).resolve().parents[2]

TIMINGS = ("s / image", "s / tile")
ROWS = ("resnet18-lrp", "bagnet-sparse")


def _table(work: Path) -> dict:
    return json.loads((work / "headline.json").read_text())


def _numbers(row: dict) -> dict:
    return {column: value for column, value in row["values"].items() if column not in TIMINGS}


def test_busi_rows_are_reproduced_by_their_printed_commands(tmp_path: Path, shared_data: Path) -> None:
    table_work = tmp_path / "table"
    arguments = ["benchmark", "busi", "--size", "smoke", "--seed", "3", "--work", str(table_work)]
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
    assert _checked_lines(printed, "busi") == len(ROWS)


def _printed_cells(table: str, label: str) -> dict[str, str]:
    """The printed numbers of the row ``label`` by column, timings left out."""
    lines = table.splitlines()
    header = next(x for x in lines if x.startswith("| row | seed |")).split("|")[3:-2]
    line = next(x for x in lines if x.startswith(f"| {label} |")).split("|")[3:-2]
    cells = {name.strip(): cell.strip() for name, cell in zip(header, line, strict=True)}
    return {name: cell for name, cell in cells.items() if name not in TIMINGS}


ONE_ROW = {"cxr-tb": ["resnet18-gradcam"], "idrid": ["bagnet-sparse"], "nih-multilabel": ["auroc", "resnet18-gradcam"],
           "vit-busi": ["vit-gradcam"]}  # fmt: skip
"""One row per table of every headline benchmark but busi (above): nih-multilabel has two tables, one model."""


@pytest.mark.parametrize("name", list(ONE_ROW))
def test_one_smoke_row_of_every_table_has_the_recorded_format(name: str, tmp_path: Path, shared_data: Path) -> None:
    command = ["benchmark", name, "--size", "smoke", "--seed", "0", *[a for r in ONE_ROW[name] for a in ("--row", r)]]
    assert main([*command, "--work", str(tmp_path)]) == 0
    rows = _table(tmp_path)["rows"]
    assert {r["row"] for r in rows} == set(ONE_ROW[name])
    for row in rows:  # the printed command is the one that ran, row by row
        assert shlex.split(row["command"]) == ["medexplain", *command[: -2 * len(ONE_ROW[name])], "--row", row["row"]]
    printed = (tmp_path / "table.md").read_text()
    assert _checked_lines(printed, name) == len(rows)


AUDIT_SCRIPTS = sorted(path.stem for path in (ROOT / "benchmarks").glob("audit_*.py")
                       if "audit_benchmark_main(" in path.read_text())  # fmt: skip
"""The audit tables of issue 23 (``audit_benchmark_main`` scripts): each reruns a smoke row in its own test file."""


def test_every_audit_table_is_recorded_and_reruns_a_smoke_row_in_its_own_test() -> None:
    assert {"audit_busi", "audit_cxr_tb", "audit_derm7pt", "audit_idrid", "audit_nih"} <= set(AUDIT_SCRIPTS)
    recorded = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    for script in AUDIT_SCRIPTS:
        name = re.search(r'audit_benchmark_main\(\s*argv,\s*"([a-z0-9-]+)"', (ROOT / "benchmarks" / f"{script}.py")
                         .read_text())[1]  # fmt: skip
        assert f"<!-- audit:{name} -->" in recorded and f"<!-- /audit:{name} -->" in recorded, script
        test = (ROOT / "tests" / "benchmarks" / f"test_{script}.py").read_text()
        assert '"--size", "smoke"' in test, f"{script}: its test runs no smoke row"
        assert f'recorded_section("audit:{name}")' in test, f"{script}: its test does not check the recorded format"


CELL_KINDS = {
    "interval": re.compile(r"^-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]$"),
    "number": re.compile(r"^-?\d+\.\d{3}$"),
    "count": re.compile(r"^\d+$"),
    "nothing": re.compile(r"^(-|n/a)$"),
    "command": re.compile(r"^`medexplain benchmark [a-z0-9-]+( --size (smoke|full))? --seed \d+ --row [a-z0-9-]+`$"),
}


def _kind(cell: str) -> str:
    kinds = [kind for kind, pattern in CELL_KINDS.items() if pattern.match(cell)]
    assert len(kinds) == 1, f"cell {cell!r} has no recorded format"
    return cell if kinds == ["nothing"] else kinds[0]


def _checked_lines(printed: str, name: str) -> int:
    """Check every row line of ``printed`` (a table.md) against the same row's line in the recorded ``headline:name``
    section: same header, same label, same kind of cell column by column (``n/a`` may stand for an interval), and
    each table has intervals. Returns the number of lines checked."""
    section = recorded_section(f"headline:{name}")
    tables = [block.splitlines() for block in printed.split("\n\n") if block.startswith("| row | seed |")]
    assert tables, f"{name}: no table printed"
    checked = 0
    for header, _, *lines in tables:
        assert f"\n{header}\n" in section, f"{name}: header not recorded: {header}"
        recorded_lines = section[section.index(header) :].split("\n\n")[0].splitlines()[2:]
        kinds = set()
        for line in lines:
            cells = _cells(line)
            [reference] = [_cells(r) for r in recorded_lines if r.startswith(f"| {cells[0]} |")]
            assert len(cells) == len(reference) == header.count("|") - 1
            for column, ours, theirs in zip(header.split("|")[2:-1], cells[1:], reference[1:], strict=True):
                pair = {_kind(ours), _kind(theirs)}
                assert len(pair) == 1 or pair == {"interval", "n/a"}, f"{name}/{cells[0]}/{column}: {ours}, {theirs}"
            kinds |= {_kind(c) for c in cells[1:]}
            checked += 1
        assert "interval" in kinds, f"{name}: no interval in {header}"
    return checked


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split(" | ")]


def test_unknown_benchmark_is_rejected_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "no-such"]) == 2
    error = capsys.readouterr().err
    assert "no-such" in error and all(name in error for name in BENCHMARKS)


def test_every_benchmark_script_exists_and_gets_its_own_options(tmp_path: Path) -> None:
    assert all((benchmarks_folder() / script.file).is_file() for script in BENCHMARKS.values())
    assert BENCHMARKS["busi-audit"].file == "audit_busi.py"
    assert script_arguments("busi", "full", 2, "cuda", ["resnet18-ig"], tmp_path, None) == [
        "--size", "full", "--seed", "2", "--device", "cuda", "--row", "resnet18-ig", "--work", str(tmp_path),
    ]  # fmt: skip
    assert script_arguments("busi-audit", "smoke", 1, "cpu", None, None, tmp_path / "R.md") == [
        "--size", "smoke", "--seeds", "1", "--device", "cpu", "--results", str(tmp_path / "R.md")]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["busi-audit", "--row", "gradcam"], "busi-audit has no rows"),
     (["vit-busi-audit", "--results", "R.md"], "--results is not taken"),
     (["busi", "--size", "huge"], "--size 'huge'")],
)  # fmt: skip
def test_options_a_script_does_not_take_are_refused_before_it_runs(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["benchmark", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_size_and_device_reach_the_benchmark_and_its_printed_commands(tmp_path: Path) -> None:
    sizes = {"smoke": Size(None, 8, 1), "default": Size(None, 16, 2), "full": Size(None, 32, 3)}

    def rows(size: Size) -> list[Row]:
        return [Row("r", "a row", None, "saliency")]  # type: ignore[arg-type]

    bench = parse("toy", "toy", sizes, rows, ["--size", "full", "--device", "cuda", "--work", str(tmp_path)])
    assert (bench.size, bench.size_name, bench.device) == (sizes["full"], "full", "cuda")
    assert bench.command(bench.rows[0]) == "medexplain benchmark toy --size full --seed 0 --row r --device cuda"
    default = parse("toy", "toy", sizes, rows, ["--seed", "4", "--row", "r"])
    assert (default.size, default.device, default.results) == (sizes["default"], "cpu", None)
    assert default.command(default.rows[0]) == "medexplain benchmark toy --seed 4 --row r"  # as recorded in RESULTS.md
    assert Benchmark("toy", 1, "smoke", sizes["smoke"], [], tmp_path, None).device == "cpu"


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
    assert recorded_section("headline:a", path) == "\nnew a\n" and recorded_section("headline:b", path) == "\nb\n"
