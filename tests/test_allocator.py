"""``keep_freed_memory``: freed tensors' pages are reused instead of being unmapped and faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

CYCLES = 16
PAGES = 64 * 2**20 // 4096
"""A 64 MB tensor spans 16384 pages of 4 KiB: without reuse each cycle faults every one of them in."""

PROGRAM = """
import resource, sys, torch
from medexplain.allocator import keep_freed_memory
from medexplain.cli import main
applied = main(["--version"]) if sys.argv[1] == "cli" else keep_freed_memory()
faults = []
for _ in range(CYCLES):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
""".replace("CYCLES", str(CYCLES))


def _faults(how: str, **environment: str) -> tuple[str, list[int]]:
    """Whether the allocator was changed, and the page faults of each cycle (allocate, fill and free 64 MB)."""
    done = subprocess.run([sys.executable, "-c", PROGRAM, how], capture_output=True, text=True, check=True,
                          env={**os.environ, **environment})  # fmt: skip
    applied, *faults = done.stdout.split()[-CYCLES - 1 :]
    return applied, [int(f) for f in faults]


def _reused(faults: list[int]) -> int:
    """Cycles that faulted in almost none of the tensor's pages (the heap settles over the first few)."""
    return sum(f < PAGES / 100 for f in faults)


def test_freed_tensors_are_not_faulted_in_again():
    applied, faults = _faults("call")
    assert applied == "True"
    assert _reused(faults) >= CYCLES // 2
    assert faults[-1] < PAGES / 100


def test_opting_out_leaves_glibc_unmapping_every_large_tensor():
    applied, faults = _faults("call", MEDEXPLAIN_KEEP_FREED_MEMORY="0")
    assert applied == "False"
    assert min(faults) >= 0.9 * PAGES


def test_the_command_line_keeps_freed_memory():
    _, faults = _faults("cli")
    assert _reused(faults) >= CYCLES // 2
