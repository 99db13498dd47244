"""``medexplain explain``: explain a trained model's predictions on a dataset and write maps plus an index."""

from __future__ import annotations

from functools import partial
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
    engine: str = typer.Option("local", help="local (this process) or ray (shards over Ray workers)."),
    address: str | None = typer.Option(None, help="Ray cluster to join (host:port or auto; default: a local one)."),
    workers: int | None = typer.Option(None, help="Ray workers (default: one per CPU, or per GPU with cuda)."),
) -> None:
    """Write OUT/maps/<method>/<id>.npy and OUT/index.json; items already written are skipped."""
    from medexplain.explain.run import build_explainers, explain_dataset, parse_target
    from medexplain.scale import check_engine, load_ray_engine

    check_engine(engine)
    scale_out = load_ray_engine() if engine == "ray" else None
    methods = [m.strip() for m in method.split(",") if m.strip()]
    explainers = build_explainers(methods, layer)
    parsed_target = parse_target(target)
    header = {"model": str(model), "data": str(data), "split": split or None}
    if scale_out is not None:
        inputs = partial(_inputs, model, data, split or None, device)
        dataset = inputs(load_model=False)[1]
        scale_out.explain_with_ray(
            inputs, len(dataset), methods, out, header, layer=layer, target=parsed_target, batch_size=batch_size,
            map_format=map_format, device=device, address=address, workers=workers, progress=progress,
        )  # fmt: skip
    else:
        network, dataset = _inputs(model, data, split or None, device)
        explain_dataset(
            network, dataset, explainers, out, header, target=parsed_target, batch_size=batch_size,
            map_format=map_format, device=device, progress=progress,
        )  # fmt: skip
    typer.echo(f"{out}: {len(dataset)} items x {len(explainers)} methods")


def _inputs(model: Path, data: Path, split: str | None, device: str, *, load_model: bool = True) -> tuple:
    """The run's model (``None`` unless ``load_model``) and the dataset as it sees it; Ray workers call it too."""
    from medexplain.models.checkpoint import read_config
    from medexplain.runs import load_run, run_dataset

    if not load_model:
        return None, run_dataset(read_config(model), data, split)
    network, _config, dataset = load_run(model, data, split, device=device)
    return network, dataset


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to ``app``."""
    app.command("explain")(explain_command)
