"""``medexplain benchmark NAME``: run one of the headline benchmark scripts of the source checkout.

The scripts live in ``benchmarks/`` beside ``src/`` (the package is installed editable from the checkout); they
are not part of the installed package. Each writes its table to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from medexplain.errors import MedexplainError

BENCHMARKS = {
    "busi": "headline_busi.py",
    "idrid": "headline_idrid.py",
    "nih-multilabel": "headline_nih.py",
    "cxr-tb": "headline_cxr_tb.py",
    "vit-busi": "vit_busi.py",
}


def benchmarks_folder(module: Path = Path(__file__)) -> Path:
    """The checkout's ``benchmarks/`` folder (``src/medexplain/cli/benchmark.py`` -> ``benchmarks/``)."""
    folder = module.resolve().parents[3] / "benchmarks"
    if not (folder / BENCHMARKS["busi"]).is_file():
        raise MedexplainError(
            f"{folder}: no benchmark scripts here; benchmarks live in the source checkout "
            "(install medexplain editable from a clone: pip install -e .)"
        )
    return folder


def script_arguments(
    full: bool, smoke: bool, seed: int, rows: list[str] | None, work: Path | None, results: Path | None
) -> list[str]:
    """The command-line arguments every headline script understands."""
    if full and smoke:
        raise MedexplainError("--full and --smoke exclude each other")
    arguments = ["--seed", str(seed)]
    arguments += ["--full"] if full else []
    arguments += ["--smoke"] if smoke else []
    for row in rows or []:
        arguments += ["--row", row]
    arguments += ["--work", str(work)] if work is not None else []
    arguments += ["--results", str(results)] if results is not None else []
    return arguments


def benchmark_command(
    name: str = typer.Argument(..., help="Benchmark: " + ", ".join(BENCHMARKS) + "."),
    full: bool = typer.Option(False, "--full", help="Full size (longer training, all images; for a GPU)."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny size, seconds (used by the tests)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data subsets, training, explanations and bootstrap."),
    row: list[str] | None = typer.Option(None, "--row", help="Compute only this row (repeatable)."),
    work: Path | None = typer.Option(None, "--work", help="Folder for run folders and maps (reused if present)."),
    results: Path | None = typer.Option(None, "--results", help="Markdown file to write the table into."),
) -> None:
    """Run a headline benchmark (busi, idrid, nih-multilabel, cxr-tb) and write its table to RESULTS.md."""
    if name not in BENCHMARKS:
        raise MedexplainError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    script = benchmarks_folder() / BENCHMARKS[name]
    arguments = script_arguments(full, smoke, seed, row, work, results)
    code = subprocess.call([sys.executable, str(script), *arguments])
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command to ``app``."""
    app.command("benchmark")(benchmark_command)
