"""``keep_freed_memory``: a large block comes from the heap and stays there for reuse after it is freed, where
glibc's defaults map it with ``mmap`` and unmap it on free (the next one is faulted in again page by page).

Read from glibc's own accounting (``mallinfo2``) around a 64 MB ``malloc`` / ``free`` made directly (torch's CPU
allocator goes through the same ``posix_memalign``/``free`` and thresholds), not from page-fault counts or torch
tensors, which transparent huge pages and the heap's placement of other objects make machine-dependent."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

LIBC, VERSION = platform.libc_ver()
pytestmark = pytest.mark.skipif(LIBC != "glibc" or tuple(map(int, VERSION.split("."))) < (2, 33),
                                reason="glibc's mallopt, read back with mallinfo2 (glibc 2.33)")  # fmt: skip

BLOCK = 64 * 2**20

PROGRAM = """
import ctypes, sys
from medexplain.allocator import keep_freed_memory
from medexplain.cli import main

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = main(["--version"]) if sys.argv[1] == "cli" else keep_freed_memory()
before = libc.mallinfo2()
block = libc.malloc(BLOCK)
ctypes.memset(block, 1, BLOCK)
alive = libc.mallinfo2()
libc.free(block)
print(applied, alive.hblkhd - before.hblkhd, libc.mallinfo2().keepcost)
""".replace("BLOCK", str(BLOCK))


def _accounting(how: str, **environment: str) -> tuple[str, int, int]:
    """Whether the allocator was changed; the bytes glibc mapped for a live 64 MB block; after it was freed, the
    free memory kept at the top of the heap (what a trim would have returned to the kernel)."""
    done = subprocess.run([sys.executable, "-c", PROGRAM, how], capture_output=True, text=True, check=True,
                          env={**os.environ, **environment})  # fmt: skip
    applied, mapped, kept = done.stdout.split()[-3:]
    return applied, int(mapped), int(kept)


@pytest.mark.parametrize("how", ["call", "cli"])
def test_a_freed_block_stays_in_the_heap_for_reuse(how):
    applied, mapped, kept = _accounting(how)
    assert applied == ("0" if how == "cli" else "True")  # the command line's exit code, or the call's result
    assert mapped == 0  # the mmap threshold
    assert kept >= BLOCK  # the trim threshold


def test_opting_out_leaves_glibc_mapping_and_unmapping_every_large_block():
    applied, mapped, kept = _accounting("call", MEDEXPLAIN_KEEP_FREED_MEMORY="0")
    assert applied == "False"
    assert mapped >= BLOCK and kept < BLOCK
