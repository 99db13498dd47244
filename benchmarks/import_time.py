"""Import cost on top of ``import torch``: medexplain's layers against Captum, MONAI and Quantus, in one run.

Each library is imported in fresh Python processes (``--runs``, default 10, taken in turns so that machine load
falls on all alike); a process first imports torch, then times the library's import with ``time.perf_counter``.
Prints the median and the range in seconds, and whether the import set a global it should not (matplotlib's
backend). Quantus imports torchvision, which has no CPU build here: it is imported behind the test stub.

    .venv/bin/python benchmarks/import_time.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "tests" / "stubs"
LIBRARIES = {
    "medexplain (data, models, explain, metrics)": "import medexplain.data, medexplain.models, medexplain.explain, "
    "medexplain.metrics",
    "medexplain.workflows (+ the demo's settings)": "import medexplain.workflows.demo, medexplain.workflows.evaluate",
    "captum.attr": "import captum.attr",
    "monai": "import monai",
    "quantus": "import quantus",
}
PROBE = """
import sys, time
sys.path.append({stubs!r})
import torch
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
backend = sys.modules["matplotlib"].get_backend() if "matplotlib.pyplot" in sys.modules else "-"
print(seconds, backend)
"""


def measure(statement: str) -> tuple[float, str]:
    code = PROBE.format(stubs=str(STUBS), statement=statement)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, backend = done.stdout.split()
    return float(seconds), backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in LIBRARIES}
    backends: dict[str, set[str]] = {name: set() for name in LIBRARIES}
    for _ in range(args.runs):
        for name, statement in LIBRARIES.items():
            seconds, backend = measure(statement)
            times[name].append(seconds)
            backends[name].add(backend)
    print(f"import cost on top of torch, median of {args.runs} fresh processes")
    print("| library | median s | min s | max s | pyplot imported (backend) |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} | "
              f"{', '.join(sorted(backends[name]))} |")


if __name__ == "__main__":
    main()
