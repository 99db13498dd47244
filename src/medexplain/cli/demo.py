"""``medexplain demo``: the whole toolkit end to end on synthetic fundus images (or a dataset folder)."""

from __future__ import annotations

from pathlib import Path

import typer

from medexplain.workflows.demo import DemoSettings


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder (an existing demo is continued)."),
    data: Path | None = typer.Option(
        None, "--data", help="A dataset folder with lesion masks to use instead of synthetic fundus images."
    ),
    n: int = typer.Option(DemoSettings.n, help="Synthetic images to generate."),
    size: int = typer.Option(DemoSettings.size, help="Image size (pixels) for generation and training."),
    seed: int = typer.Option(DemoSettings.seed, help="Seed of data generation, training and evaluation."),
    label: str = typer.Option(DemoSettings.label, help="Synthetic task: 'referable' DR (grade >= 2) or 'grade' 0-4."),
    overwrite: bool = typer.Option(False, help="Start from scratch, deleting a previous demo in --out."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Generate data, train a sparse BagNet and a ResNet-18, explain, evaluate, analyse concepts, report."""
    import sys

    from medexplain.report import build_report
    from medexplain.workflows.demo import run_demo

    settings = DemoSettings(n=n, size=size, seed=seed, label=label)
    command = " ".join(["medexplain", *sys.argv[1:]])
    report = run_demo(out, data=data, settings=settings, overwrite=overwrite, progress=progress, echo=typer.echo,
                      report=build_report, command=command)  # fmt: skip
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    app.command("demo")(demo_command)
