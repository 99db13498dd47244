"""``medexplain audit``: a model and a dataset (masks optional) in, every explanation ranked against baselines.

The model is a run folder, a model card (JSON), or described by flags (``--architecture`` and ``--weights``, or
``--torchscript``), which are written as ``OUT.card.json`` beside the output and used as a card.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medexplain.cli.common import MAX_MEMORY_HELP, engine_options, json_object, parse_bytes
from medexplain.errors import MedexplainError

_DATA = typer.Option(..., "--data", help="Dataset folder with manifest.csv (and mask_<name> columns to localise "
                     "against).")
_OUT = typer.Option(..., "--out", help="Output folder (an interrupted audit is continued).")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def _card_from_flags(out: Path, **flags: object) -> Path:
    """The model described by flags, written as a model card beside ``out``."""
    from medexplain.files import write_text

    card = {key: value for key, value in flags.items() if value not in (None, {}, [])}
    for key in ("weights", "torchscript"):
        if key in card:
            card[key] = str(Path(str(card[key])).resolve())
    if "architecture" in card and str(card["architecture"]).startswith("factory:"):
        file, _, function = str(card["architecture"])[len("factory:") :].rpartition(":")
        card["architecture"] = f"factory:{Path(file).resolve()}:{function}"
    path = out.parent / f"{out.name}.card.json"
    write_text(path, json.dumps(card, indent=1) + "\n")
    return path


def audit_command(
    data: Path = _DATA,
    out: Path = _OUT,
    model: Path | None = typer.Option(None, "--model", help="Run folder or model card (JSON)."),
    architecture: str | None = typer.Option(None, help="Without --model: monai:<Net>, medexplain:<name> or "
                                            "factory:<file.py>:<function>."),
    arguments: str | None = typer.Option(None, help="Without --model: the architecture's arguments as JSON."),
    weights: Path | None = typer.Option(None, help="Without --model: a state dict (.pth/.pt) or .safetensors."),
    torchscript: Path | None = typer.Option(None, help="Without --model: a TorchScript archive instead."),
    in_channels: int | None = typer.Option(None, help="Without --model: input channels, if the arguments lack them."),
    preprocessing: str | None = typer.Option(None, help="Without --model: preprocessing as JSON (size, intensity)."),
    classes: str | None = typer.Option(None, help="Without --model: class names, comma-separated."),
    output: str = typer.Option("softmax", help="Without --model: softmax (classes) or sigmoid (multi-label)."),
    mask: str | None = typer.Option(None, help="Mask to localise against (default: the dataset's first; a "
                                    "multi-label model: every label with a mask_<label>, or this label only)."),
    landmarks: str | None = typer.Option(None, help="Masks of regions that should not decide (e.g. disc): is "
                                         "relevance there out of proportion to their area (like border, background)?"),
    field_mask: str | None = typer.Option(None, help="Mask of the field of view (default: the image's background)."),
    split: str | None = typer.Option("test", help="Dataset split to audit ('' for every row)."),
    size: int | None = typer.Option(None, help="Resize images to this size (default: the model's preprocessing)."),
    methods: str | None = typer.Option(None, help="Methods to audit (default: every one the model allows)."),
    baselines: str | None = typer.Option(None, help="Baselines (default: constant, random, centre, prior, edges)."),
    randomised_model: bool = typer.Option(True, help="Also explain a copy of the model with re-drawn weights."),
    metrics: str | None = typer.Option(None, help="Metrics (default: localisation, faithfulness, robustness, "
                                       "complexity, sanity)."),
    method_params: str | None = typer.Option(None, help='Per method, as JSON: \'{"integrated-gradients": '
                                             '{"steps": 32}}\'.'),
    metric_params: str | None = typer.Option(None, help="Per metric, as JSON (default: the audit's affordable set)."),
    layer: str | None = typer.Option(None, help="CAM layer (default: the card's, else the last convolutional block, "
                                     "or a transformer's last attention input)."),
    max_items: int | None = typer.Option(None, help="Audit only the first N items of the split."),
    alpha: float = typer.Option(0.05, help="Significance level of the verdicts."),
    resamples: int = typer.Option(1000, help="Bootstrap resamples of the 95 % intervals."),
    seed: int = typer.Option(0, help="Seed of the random baseline, the randomised model and the bootstrap."),
    batch_size: int = typer.Option(16, help="Images per batch."),
    max_memory: str | None = typer.Option(None, help=MAX_MEMORY_HELP),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    engine: str = typer.Option("local", help="local (this process) or ray (shards over Ray workers)."),
    address: str | None = typer.Option(None, help="Ray cluster to join (host:port or auto; default: a local one)."),
    workers: int | None = typer.Option(None, help="Ray workers (default: one per CPU, or per GPU with cuda)."),
) -> None:
    """Explain with every applicable method and the baselines, score, and write OUT/verdict.json."""
    from medexplain.workflows.audit import AuditSettings, audit_run

    if model is None:
        if not architecture and not torchscript:
            raise MedexplainError("give --model (a run folder or card), or --architecture with --weights, or "
                                  "--torchscript")  # fmt: skip
        model = _card_from_flags(
            out, architecture=architecture, arguments=json_object(arguments, "--arguments"), weights=weights,
            torchscript=torchscript, in_channels=in_channels,
            preprocessing=json_object(preprocessing, "--preprocessing"),
            classes=[c.strip() for c in classes.split(",")] if classes else None, output=output,
            cam_layer=layer,
        )  # fmt: skip
    defaults = AuditSettings()
    settings = AuditSettings(
        methods=_names(methods), baselines=_names(baselines) or defaults.baselines,
        randomised_model=randomised_model, metrics=_names(metrics) or defaults.metrics,
        metric_params=json_object(metric_params, "--metric-params") or defaults.metric_params,
        method_params=json_object(method_params, "--method-params"), landmarks=_names(landmarks) or (),
        field_mask=field_mask, max_memory=parse_bytes(max_memory, "--max-memory"), alpha=alpha,
        resamples=resamples, seed=seed,
    )  # fmt: skip
    document = audit_run(
        model, data, out, mask=mask, split=split or None, size=size, layer=layer, settings=settings,
        max_items=max_items, batch_size=batch_size, device=device,
        executor=engine_options(engine, address, workers, device), progress=progress,
    )  # fmt: skip
    if "labels" in document:
        for label, part in document["labels"].items():
            _echo_verdict(out / part["folder"], f"label {label!r}, {document['split']} split", part)
    else:
        masks = f"{document['mask']} masks" if document["mask"] else "no masks: localisation not assessed"
        _echo_verdict(out, f"{masks}, {document['split']} split", document)


def _echo_verdict(folder: Path, what: str, document: dict) -> None:
    typer.echo(f"{folder}: verdict ({what}); ranking first")
    for method in document["ranking"]:
        row = next(r for r in document["verdict"] if r["method"] == method)
        cells = [f"{k} {row[k]['verdict']}" for k in ("localises", "faithful", "randomisation")]
        cells += [f"relevance out of proportion on: {', '.join(row['shortcuts'])}"] if row["shortcuts"] else []
        typer.echo(f"  {method}: " + ", ".join(cells))
    for name, reason in document["not_applicable"].items():
        typer.echo(f"  {name}: not applicable ({reason})")

def register(app: typer.Typer) -> None:
    """Add the ``audit`` command to ``app``."""
    app.command("audit")(audit_command)
