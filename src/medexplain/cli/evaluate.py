"""``medexplain evaluate``: score stored explanations with the registered metrics; per-sample and summary tables."""

from __future__ import annotations

from pathlib import Path

import typer

from medexplain.cli.common import MAX_MEMORY_HELP, engine_options, parse_bytes

_EXPLANATIONS = typer.Option(..., "--explanations", help="Folder written by `medexplain explain`.")
_DATA = typer.Option(..., "--data", help="The dataset that was explained (folder with manifest.csv, or .npz).")
_OUT = typer.Option(..., "--out", help="Output folder: per_sample.csv, summary.csv, summary.json.")
_MODEL = typer.Option(None, "--model", help="Run folder; needed by model-bound metrics.")


def evaluate_command(
    explanations: Path = _EXPLANATIONS,
    data: Path = _DATA,
    out: Path = _OUT,
    model: Path | None = _MODEL,
    metrics: str = typer.Option("all", "--metrics", help="Comma-separated metric names, or 'all'."),
    split: str | None = typer.Option(None, help="Dataset split (default: the one that was explained)."),
    mask: str | None = typer.Option(None, help="Mask to localise against (default: the dataset's first)."),
    batch_size: int = typer.Option(16, help="Maps per batch."),
    size: int | None = typer.Option(None, help="Resize images to this size (default: as they were explained)."),
    max_memory: str | None = typer.Option(None, help=MAX_MEMORY_HELP),
    noise_auroc: bool = typer.Option(False, help="Also write the classifier AUROC under Gaussian noise."),
    resamples: int = typer.Option(1000, help="Bootstrap resamples of the 95 % intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    engine: str = typer.Option("local", help="local (this process) or ray (shards over Ray workers)."),
    address: str | None = typer.Option(None, help="Ray cluster to join (host:port or auto; default: a local one)."),
    workers: int | None = typer.Option(None, help="Ray workers (default: one per CPU, or per GPU with cuda)."),
) -> None:
    """Score every stored map with the chosen metrics; write per-sample scores and mean with 95 % bootstrap CI."""
    from medexplain.workflows.evaluate import evaluate_run

    run = evaluate_run(
        explanations, data, out, model=model, metrics=metrics, split=split, mask=mask, size=size, batch_size=batch_size,
        max_memory=parse_bytes(max_memory, "--max-memory"), noise_auroc=noise_auroc, resamples=resamples, seed=seed,
        device=device, overwrite=overwrite,
        executor=engine_options(engine, address, workers, device), progress=progress,
    )  # fmt: skip
    if run.evaluation.empty:
        typer.echo(f"{run.evaluation.empty} scores are NaN because the image's mask is empty: excluded from the "
                   "summary, counted in 'excluded'", err=True)  # fmt: skip
    if run.evaluation.undefined:
        typer.echo(f"{run.evaluation.undefined} scores are NaN because the metric is undefined for the map (e.g. "
                   "a map without positive relevance has none to locate): excluded, counted in 'excluded'",
                   err=True)  # fmt: skip
    typer.echo(f"{out}: {len(run.evaluation.rows)} scores, {len(run.metrics)} metrics x {len(run.methods)} methods")


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""
    app.command("evaluate")(evaluate_command)
