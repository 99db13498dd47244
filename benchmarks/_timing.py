"""Timing that means the same on a CPU and a GPU: CPU seconds of the process, or CUDA event time.

On the CPU, ``time.process_time`` (all threads of this process) is robust to other jobs on a shared machine. On a
CUDA device, kernels run asynchronously: the device is synchronised before the start event, the call is
bracketed by two events recorded on the current stream, and the end event is waited for, so the time covers
every kernel the call launched (plus the host work in between) and nothing launched before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def timed(fn: Callable[[], T], device: torch.device | str = "cpu") -> tuple[float, T]:
    """``(seconds, fn())``: CPU seconds of this process on the CPU, CUDA event seconds on a CUDA device."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000, result
    if device.type != "cpu":
        raise ValueError(f"timing on {device.type} devices is not supported; use cpu or cuda")
    begin = time.process_time()
    result = fn()
    return time.process_time() - begin, result
