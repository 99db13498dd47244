"""``medexplain explain``: explain a trained model's predictions on a dataset and write maps plus an index."""

from __future__ import annotations

from pathlib import Path

import typer

from medexplain.cli.common import MAX_MEMORY_HELP, engine_options, json_object, parse_bytes, parse_target

_MODEL = typer.Option(..., "--model", help="Run folder written by `medexplain train` (or models.save_run).")
_DATA = typer.Option(..., "--data", help="Dataset folder with manifest.csv, or a MedMNIST .npz.")
_OUT = typer.Option(..., "--out", help="Output folder (an existing one is continued).")


def explain_command(
    model: Path = _MODEL,
    data: Path = _DATA,
    method: str = typer.Option(..., "--method", help="Comma-separated explainers, e.g. gradcam,lrp-epsilon-plus."),
    out: Path = _OUT,
    split: str | None = typer.Option("test", help="Dataset split to explain ('' for every row)."),
    target: str = typer.Option("predicted", help="'predicted', 'all' or a class index."),
    batch_size: int = typer.Option(16, help="Images per batch."),
    max_memory: str | None = typer.Option(None, help=MAX_MEMORY_HELP),
    max_items: int | None = typer.Option(None, help="Explain only the first N items of the split."),
    size: int | None = typer.Option(None, help="Resize images to this size (default: the run's recorded size)."),
    layer: str | None = typer.Option(None, help="Layer for CAM methods (default: the last convolutional block, or a "
                                     "transformer's last attention input)."),
    method_params: str | None = typer.Option(None, help='Per method, as JSON: \'{"integrated-gradients": '
                                             '{"steps": 32}}\' (recorded in index.json).'),
    map_format: str = typer.Option("npy", "--format", help="npy or nifti (.nii.gz, 3D maps), float32."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    engine: str = typer.Option("local", help="local (this process) or ray (shards over Ray workers)."),
    address: str | None = typer.Option(None, help="Ray cluster to join (host:port or auto; default: a local one)."),
    workers: int | None = typer.Option(None, help="Ray workers (default: one per CPU, or per GPU with cuda)."),
) -> None:
    """Write OUT/maps/<method>/<id>.npy and OUT/index.json; maps already written are skipped."""
    from medexplain.workflows.explain import explain_run

    stored = explain_run(
        model, data, [m.strip() for m in method.split(",") if m.strip()], out, split=split or None,
        target=parse_target(target), layer=layer, method_params=json_object(method_params, "--method-params"),
        max_items=max_items, size=size, batch_size=batch_size, max_memory=parse_bytes(max_memory, "--max-memory"),
        map_format=map_format, device=device,
        executor=engine_options(engine, address, workers, device), progress=progress,
    )  # fmt: skip
    typer.echo(f"{out}: {len(stored.items)} items x {len(stored.methods)} methods")


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to ``app``."""
    app.command("explain")(explain_command)
