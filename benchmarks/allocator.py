"""Training steps with glibc's default allocator and with ``medexplain.allocator.keep_freed_memory`` (same run).

Each setting runs in its own process (the allocator is process-wide): the width-4 sparse BagNet-17 (the Derm7pt
audit's) at ``--side`` px, batch ``--batch``, one thread, one warm-up step, then ``--steps`` timed steps (forward,
cross-entropy, backward, AdamW). Printed per setting: wall-clock, user and system seconds per step, minor page faults
per step, peak memory; then the ratio default / kept.

    python benchmarks/allocator.py [--side 384] [--batch 16] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

from medexplain.allocator import OPT_OUT, keep_freed_memory
from medexplain.models import create_model

SETTINGS = {"glibc default": "0", "keep_freed_memory": "1"}


def steps(side: int, batch: int, count: int, device: str) -> dict[str, float]:
    """Time ``count`` training steps in this process; seconds, faults per step and peak memory (GB)."""
    torch.set_num_threads(1)
    keep_freed_memory()
    torch.manual_seed(0)
    model = create_model("sparse-bagnet17-light", width=4, evidence_activation="relu", num_classes=2).to(device)
    optimiser = torch.optim.AdamW(model.parameters())
    images, labels = torch.randn(batch, 3, side, side, device=device), torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimiser.step()

    step()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(count):
        step()
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": wall / count, "user": (after.ru_utime - before.ru_utime) / count,
            "system": (after.ru_stime - before.ru_stime) / count,
            "faults": (after.ru_minflt - before.ru_minflt) / count, "peak_gb": after.ru_maxrss / 2**20}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=384)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(steps(args.side, args.batch, args.steps, args.device)))
        return 0
    child = [sys.executable, __file__, "--side", str(args.side), "--batch", str(args.batch), "--steps",
             str(args.steps), "--device", args.device, "--child"]  # fmt: skip
    rows = {}
    for name, value in SETTINGS.items():
        done = subprocess.run(child, env={**os.environ, OPT_OUT: value}, capture_output=True, text=True, check=True)
        rows[name] = json.loads(done.stdout.splitlines()[-1])
    print(f"sparse-bagnet17-light width 4, {args.side} px, batch {args.batch}, {args.steps} steps, 1 thread, "
          f"{args.device}\n")
    print("| allocator | s / step | user s | system s | page faults / step | peak GB |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall']:.2f} | {r['user']:.2f} | {r['system']:.2f} | {r['faults']:.0f} | "
              f"{r['peak_gb']:.2f} |")
    default, kept = rows["glibc default"], rows["keep_freed_memory"]
    print(f"\ndefault / kept: {default['wall'] / kept['wall']:.2f}x per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
