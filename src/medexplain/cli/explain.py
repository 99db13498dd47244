"""``medexplain explain``: explain a trained model's predictions on a dataset and write maps plus an index."""

from __future__ import annotations

from pathlib import Path

import typer

_MODEL = typer.Option(..., "--model", help="Run folder written by `medexplain train`.")
_DATA = typer.Option(..., "--data", help="Dataset folder with manifest.csv, or a MedMNIST .npz.")
_OUT = typer.Option(..., "--out", help="Output folder (an existing one is resumed).")


def explain_command(
    model: Path = _MODEL,
    data: Path = _DATA,
    method: str = typer.Option(..., "--method", help="Comma-separated explainers, e.g. gradcam,lrp-epsilon-plus."),
    out: Path = _OUT,
    split: str | None = typer.Option("test", help="Dataset split to explain ('' for every row)."),
    target: str = typer.Option("predicted", help="'predicted', 'all' or a class index."),
    batch_size: int = typer.Option(16, help="Images per batch."),
    layer: str | None = typer.Option(None, help="Layer for CAM methods (default: the last convolutional block)."),
    map_format: str = typer.Option("npy", "--format", help="npy (float16) or nifti (.nii.gz, 3D maps)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Write OUT/maps/<method>/<id>.npy and OUT/index.json; items already written are skipped."""
    from medexplain.data import load_dataset
    from medexplain.explain.run import build_explainers, explain_dataset, parse_target
    from medexplain.models import load
    from medexplain.train import preprocessing_transform

    explainers = build_explainers([m.strip() for m in method.split(",") if m.strip()], layer)
    parsed_target = parse_target(target)
    network, config = load(model, device=device)
    preprocessing = config.get("preprocessing")
    transform = preprocessing_transform(preprocessing) if preprocessing else None
    dataset = load_dataset(data, split or None, transform)
    header = {"model": str(model), "data": str(data), "split": split or None}
    explain_dataset(
        network, dataset, explainers, out, header, target=parsed_target, batch_size=batch_size,
        map_format=map_format, device=device, progress=progress,
    )
    typer.echo(f"{out}: {len(dataset)} items x {len(explainers)} methods")


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to ``app``."""
    app.command("explain")(explain_command)
