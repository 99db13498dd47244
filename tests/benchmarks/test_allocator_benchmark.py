"""``benchmarks/allocator.py`` runs both settings in their own processes and prints the recorded table."""

from __future__ import annotations

import re

import allocator
from _headline import RESULTS

HEADER = "| allocator | s / step | user s | system s | page faults / step | peak GB |"


def test_both_settings_run_and_print_the_recorded_table(capsys) -> None:
    assert allocator.main(["--side", "64", "--batch", "2", "--steps", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in printed[printed.index(HEADER) + 2 :]
            if line.startswith("| ")]  # fmt: skip
    assert [row[0] for row in rows] == ["glibc default", "keep_freed_memory"]
    assert all(re.fullmatch(r"\d+(\.\d+)?", cell) for row in rows for cell in row[1:])
    assert re.fullmatch(r"default / kept: \d+\.\d\dx per step", printed[-1])
    recorded = RESULTS.read_text()
    assert HEADER in recorded and "`python benchmarks/allocator.py --side 384 --batch 16 --steps 3`" in recorded
