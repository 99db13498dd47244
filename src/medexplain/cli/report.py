"""``medexplain report RUN_DIR``: a self-contained HTML report of any run folder."""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    run_dir: Path = typer.Argument(..., help="A folder written by medexplain (train, explain, evaluate, demo, ...)."),
    out: Path | None = typer.Option(None, "--out", help="HTML file to write (default: RUN_DIR/report.html)."),
) -> None:
    """Build the HTML report (images embedded, no network) and print its path."""
    from medexplain.report import build_report

    typer.echo(f"report: {build_report(run_dir, out)}")


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""
    app.command("report")(report_command)
