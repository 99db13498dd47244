"""Shared by the BagNet benchmarks: train run folders with ``medexplain.train`` and tabulate test metrics.

Each configuration is trained once per seed into ``WORK/<name>-seed<k>`` (kept, so a second invocation with the
same folder reuses finished runs and resumes interrupted ones; the CPU seconds of a run are kept beside it in
``<name>-seed<k>.cpu-seconds``); the table reports mean +- sd over the seeds.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medexplain.allocator import keep_freed_memory
from medexplain.train import TrainConfig, train
from medexplain.train.state import RESUME_FILE, read_resume_info

COLUMNS = ("accuracy", "auroc", "kappa", "gini", "gini_local")


@dataclass(frozen=True)
class Config:
    """One row of a benchmark table: a model and its training settings (everything but the seed)."""

    name: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)


def run(
    config: Config,
    data: str | Path,
    work: Path,
    seed: int,
    split: str = "test",
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Train (or finish, or reuse) one seed of ``config`` on ``device`` (default: CUDA when available); returns its
    metrics on ``split`` ("test", or "val" of the chosen epoch: settings are chosen on "val") and the CPU seconds."""
    out = work / f"{config.name}-seed{seed}"
    cpu_file = work / f"{config.name}-seed{seed}.cpu-seconds"
    if (out / "config.json").is_file() and read_resume_info(out / RESUME_FILE).get("done"):
        result = json.loads((out / "config.json").read_text())
    else:
        started = time.process_time()
        settings = TrainConfig(config.model, seed=seed, **config.settings)
        result = train(settings, data, out, resume=(out / RESUME_FILE).is_file(), progress=progress, device=device)
        cpu_file.write_text(f"{time.process_time() - started:.1f}\n")
    metrics = dict(result["metrics"][split])
    metrics["cpu_seconds"] = float(cpu_file.read_text()) if cpu_file.is_file() else float("nan")
    return metrics


def table(rows: dict[str, list[dict[str, Any]]], references: list[tuple[str, dict[str, float]]]) -> str:
    """Markdown table: one line per configuration (mean +- sd over seeds), then the published references."""
    lines = [
        "| model | seeds | " + " | ".join(COLUMNS) + " | CPU s / run |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for name, results in rows.items():
        cells = []
        for column in COLUMNS:
            values = [r[column] for r in results if column in r]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}")
        seconds = statistics.mean(r["cpu_seconds"] for r in results)
        shown = "-" if seconds != seconds else f"{seconds:.0f}"  # NaN: run trained before CPU time was recorded
        lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + f" | {shown} |")
    for name, values in references:
        cells = [f"{values[c]:.3f}" if c in values else "-" for c in COLUMNS]
        lines.append(f"| {name} (published) | - | " + " | ".join(cells) + " | - |")
    return "\n".join(lines)


def benchmark_process() -> None:
    """Benchmarks share the machine: one intra-op thread, as the tests; freed memory kept, as the command line does
    (``medexplain.allocator``)."""
    torch.set_num_threads(1)
    keep_freed_memory()
