"""``medexplain benchmark NAME``: run one of the headline benchmark scripts of the source checkout.

The scripts live in ``benchmarks/`` beside ``src/`` (the package is installed editable from the checkout); they
are not part of the installed package. The headline tables go to ``benchmarks/RESULTS.md``; each script also
writes its table into its work folder.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from medexplain.errors import MedexplainError


@dataclass(frozen=True)
class Script:
    """A benchmark script and the options it understands besides ``--size``, ``--device`` and ``--work``.

    Attributes:
        file: the script's name in ``benchmarks/``; seed_option: how it is given its seed;
        rows: whether it computes single rows (``--row``); results: whether it writes a markdown file (``--results``).
    """

    file: str
    seed_option: str = "--seed"
    rows: bool = True
    results: bool = True


BENCHMARKS = {
    "busi": Script("headline_busi.py"),
    "idrid": Script("headline_idrid.py"),
    "nih-multilabel": Script("headline_nih.py"),
    "cxr-tb": Script("headline_cxr_tb.py"),
    "vit-busi": Script("vit_busi.py"),
    "busi-audit": Script("audit_busi.py", seed_option="--seeds", rows=False),
    "vit-busi-audit": Script("vit_busi_audit.py", rows=False, results=False),
}
SIZES = ("smoke", "default", "full")


def benchmarks_folder(module: Path = Path(__file__)) -> Path:
    """The checkout's ``benchmarks/`` folder (``src/medexplain/cli/benchmark.py`` -> ``benchmarks/``)."""
    folder = module.resolve().parents[3] / "benchmarks"
    if not (folder / BENCHMARKS["busi"].file).is_file():
        raise MedexplainError(
            f"{folder}: no benchmark scripts here; benchmarks live in the source checkout "
            "(install medexplain editable from a clone: pip install -e .)"
        )
    return folder


def script_arguments(
    name: str, size: str, seed: int, device: str, rows: list[str] | None, work: Path | None, results: Path | None
) -> list[str]:
    """The command-line arguments of benchmark ``name``'s script."""
    script = BENCHMARKS[name]
    if size not in SIZES:
        raise MedexplainError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    if rows and not script.rows:
        raise MedexplainError(f"{name} has no rows to choose (--row); it computes its tables whole")
    if results is not None and not script.results:
        raise MedexplainError(f"{name} writes its table into its work folder only (--results is not taken)")
    arguments = ["--size", size, script.seed_option, str(seed), "--device", device]
    for row in rows or []:
        arguments += ["--row", row]
    arguments += ["--work", str(work)] if work is not None else []
    arguments += ["--results", str(results)] if results is not None else []
    return arguments


def benchmark_command(
    name: str = typer.Argument(..., help="Benchmark: " + ", ".join(BENCHMARKS) + "."),
    size: str = typer.Option("default", "--size", help="smoke (the tests), default (a CPU), full (for a GPU)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data subsets, training, explanations and bootstrap."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    row: list[str] | None = typer.Option(None, "--row", help="Compute only this row (repeatable)."),
    work: Path | None = typer.Option(None, "--work", help="Folder for run folders and maps (reused if present)."),
    results: Path | None = typer.Option(None, "--results", help="Markdown file to write the table into."),
) -> None:
    """Run a benchmark of the source checkout (busi, idrid, nih-multilabel, cxr-tb, vit-busi, busi-audit,
    vit-busi-audit) and write its table."""
    if name not in BENCHMARKS:
        raise MedexplainError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    arguments = script_arguments(name, size, seed, device, row, work, results)
    code = subprocess.call([sys.executable, str(benchmarks_folder() / BENCHMARKS[name].file), *arguments])
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command to ``app``."""
    app.command("benchmark")(benchmark_command)
