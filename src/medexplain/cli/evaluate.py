"""``medexplain evaluate``: score stored explanations with the registered metrics; per-sample and summary tables."""

from __future__ import annotations

import math
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
) -> None:
    """Score every stored map with the chosen metrics; write per-sample scores and mean with 95 % bootstrap CI."""
    from medexplain.explain.store import load_explanations
    from medexplain.metrics.evaluate import (
        CURVE_METRICS,
        evaluate_explanations,
        mean_curves,
        select_metrics,
        summary_rows,
        write_results,
    )
    from medexplain.runs import load_run, run_dataset

    stored = load_explanations(explanations)
    split = split if split is not None else stored.header.get("split")
    network = None
    if model is not None:
        network, _config, dataset = load_run(model, data, split, device=device)
    else:  # model-free metrics: the maps still live on the inputs the explained model saw
        dataset = run_dataset(_explained_config(stored.header.get("model")) or {}, data, split)
    names = select_metrics(metrics, has_model=network is not None, has_mask=bool(dataset.mask_names))
    rows, empty = evaluate_explanations(
        stored,
        dataset,
        names,
        model=network,
        explainers=_explainers(stored.methods, names),
        mask_name=mask,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    extra = {"noise_auroc": _noise_auroc(network, dataset, batch_size, device)} if noise_auroc and network else {}
    if network is not None and CURVE_METRICS.keys() & set(names):
        extra["curves"] = mean_curves(stored, dataset, network, names, batch_size=batch_size, device=device)
    write_results(out, rows, summary_rows(rows, resamples=resamples, seed=seed), extra, overwrite=overwrite)
    if empty:
        typer.echo(f"{empty} scores are NaN (empty masks): excluded from the summary, counted in 'excluded'", err=True)
    typer.echo(f"{out}: {len(rows)} scores, {len(names)} metrics x {len(stored.methods)} methods")


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
