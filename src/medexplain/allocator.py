"""Keep freed CPU memory in the process instead of handing it back to the kernel after every tensor.

glibc serves each allocation above its mmap threshold (at most 32 MB by default) with a fresh ``mmap`` and returns
it with ``munmap`` when the tensor is freed, so every training step of a network with large activation maps (a
BagNet at 384 px keeps full-resolution maps: batch 16 x 4 channels x 384^2 is 38 MB per layer) touches gigabytes
of new, zero-filled pages: 1.2-1.3 million page faults and 2.3-2.5 s of kernel time in a 3.8-4.2 s step of the
width-4 BagNet-17 at batch 16 (one thread, AMD EPYC). With the threshold and the trim threshold raised, freed blocks
are reused: the same step takes 1.5-1.7 s, its peak memory grows from 1.5 to 1.7-1.9 GB, and the numbers computed
are unchanged (only where memory comes from changes); ``benchmarks/allocator.py`` measures both. The price is that
the process keeps its peak memory until it exits, which is what a training or audit run does anyway.

The ``medexplain`` command applies this at start-up; a Python user calls :func:`keep_freed_memory` once. Set the
environment variable ``MEDEXPLAIN_KEEP_FREED_MEMORY=0`` to leave the allocator as it is. Other C libraries (macOS,
musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

OPT_OUT = "MEDEXPLAIN_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGEST = 2**31 - 1
"""mallopt takes an int: 2 GiB - 1 byte, above which allocations still come from mmap."""


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GiB so that freed tensors' memory is reused, not unmapped.

    Returns:
        True when applied; False on another C library, where ``mallopt`` refuses, or when
        ``MEDEXPLAIN_KEEP_FREED_MEMORY`` is ``0``.
    """
    if os.environ.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST))
