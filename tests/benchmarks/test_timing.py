"""The benchmarks' timer: CPU seconds on the CPU; on CUDA, events around the call after synchronising (checked here
with a fake device API, since the tests never need a GPU)."""

from __future__ import annotations

import time

import pytest
import torch

from _timing import timed


def test_cpu_time_counts_work_not_sleep() -> None:
    def work() -> float:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
        return 7.0

    seconds, result = timed(work, "cpu")
    assert result == 7.0 and 0.05 <= seconds < 1.0
    slept, _ = timed(lambda: time.sleep(0.2), torch.device("cpu"))
    assert slept < 0.1  # CPU time: waiting is not counted


def test_cuda_time_is_event_time_after_synchronising(monkeypatch) -> None:
    log: list[str] = []

    class FakeEvent:
        count = 0

        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            FakeEvent.count += 1
            self.name = "start" if FakeEvent.count % 2 else "end"

        def record(self) -> None:
            log.append(f"record {self.name}")

        def synchronize(self) -> None:
            log.append(f"wait {self.name}")

        def elapsed_time(self, other: FakeEvent) -> float:
            assert (self.name, other.name) == ("start", "end")
            return 250.0  # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(f"synchronize {device}"))
    seconds, result = timed(lambda: log.append("call") or "maps", "cuda:0")
    assert result == "maps" and seconds == 0.25
    assert log == ["synchronize cuda:0", "record start", "call", "record end", "wait end"]


def test_other_devices_are_refused() -> None:
    with pytest.raises(ValueError, match="use cpu or cuda"):
        timed(lambda: None, "meta")
