"""``medexplain evaluate``: score stored explanations with the registered metrics; per-sample and summary tables."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import typer

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
    from medexplain.explain.store import load_explanations
    from medexplain.metrics.evaluate import (
        CURVE_METRICS,
        evaluate_explanations,
        select_metrics,
        summary_rows,
        write_results,
    )
    from medexplain.scale import check_engine, load_ray_engine

    check_engine(engine)
    scale_out = load_ray_engine() if engine == "ray" else None
    stored = load_explanations(explanations)
    split = split if split is not None else stored.header.get("split")
    inputs = partial(_inputs, model, data, split, device, stored.header.get("model"))
    network, dataset = inputs(load_model=scale_out is None or noise_auroc)
    names = select_metrics(metrics, has_model=model is not None, has_mask=bool(dataset.mask_names))
    wants_curves = model is not None and bool(CURVE_METRICS.keys() & set(names))
    if scale_out is not None:
        fingerprint = {"model": str(model), "data": str(data), "split": split, "device": device}
        rows, empty, curves = scale_out.evaluate_with_ray(
            explanations, inputs, out, names, fingerprint, make_explainers=_explainers, mask_name=mask,
            batch_size=batch_size, device=device, overwrite=overwrite, address=address, workers=workers,
            progress=progress,
        ).evaluation  # fmt: skip
    else:
        explainers = _explainers(stored.methods, names)
        rows, empty, curves = evaluate_explanations(
            stored, dataset, names, model=network, explainers=explainers, mask_name=mask, batch_size=batch_size,
            device=device, progress=progress,
        )  # fmt: skip
    extra = {"noise_auroc": _noise_auroc(network, dataset, batch_size, device)} if noise_auroc and network else {}
    if wants_curves:
        extra["curves"] = curves
    write_results(out, rows, summary_rows(rows, resamples=resamples, seed=seed), extra, overwrite=overwrite)
    if scale_out is not None:
        scale_out.forget_shards(out)
    if empty:
        typer.echo(f"{empty} scores are NaN (empty masks): excluded from the summary, counted in 'excluded'", err=True)
    typer.echo(f"{out}: {len(rows)} scores, {len(names)} metrics x {len(stored.methods)} methods")


def _inputs(
    model: Path | None, data: Path, split: str | None, device: str, explained: str | None, *, load_model: bool = True
) -> tuple:
    """The run's model (``None`` without ``--model`` or ``load_model``) and the dataset as the explained model saw
    it (Ray workers call this too)."""
    from medexplain.models.checkpoint import read_config
    from medexplain.runs import load_run, run_dataset

    if model is not None and load_model:
        network, _config, dataset = load_run(model, data, split, device=device)
        return network, dataset
    config = read_config(model) if model is not None else _explained_config(explained)
    return None, run_dataset(config or {}, data, split)  # model-free metrics still see the explained model's inputs


def _explained_config(run_dir: str | None) -> dict | None:
    """The config of the run the maps were computed with, when its folder is still readable here."""
    from medexplain.errors import MedexplainError
    from medexplain.models.checkpoint import read_config

    if not run_dir:
        return None
    try:
        return read_config(run_dir)
    except MedexplainError:
        return None


def _explainers(methods: dict, names: list[str]) -> dict:
    """Rebuild the stored methods for robustness/sanity metrics (only when one of those is requested)."""
    from medexplain.explain import create_explainer
    from medexplain.metrics.evaluate import needs_explainer

    if not any(needs_explainer(name) for name in names):
        return {}
    rebuilt = {}
    for name, params in methods.items():
        rebuilt[name] = create_explainer(name, **{k: v for k, v in (params or {}).items() if k != "name"})
    return rebuilt


def _noise_auroc(network, dataset, batch_size: int, device: str) -> list[dict[str, float | None]]:
    """SIBnet's robustness table on the whole split (held in memory at once)."""
    from medexplain.data import collate
    from medexplain.metrics.robustness import auroc_under_noise

    batch = collate([dataset[i] for i in range(len(dataset))])
    rows = auroc_under_noise(network, batch.image.to(device), batch.label, max_batch=batch_size)
    return [{key: (None if math.isnan(value) else value) for key, value in row.items()} for row in rows]


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""
    app.command("evaluate")(evaluate_command)
