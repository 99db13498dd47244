"""``medexplain concepts``: which concepts a trained model encodes, how they drive it, when to distrust it."""

from __future__ import annotations

from pathlib import Path

import typer

from medexplain.cli.common import json_object
from medexplain.errors import MedexplainError

_MODEL = typer.Option(..., "--model", help="Model run folder written by `medexplain train`.")
_DATA = typer.Option(..., "--data", help="Dataset folder with manifest.csv (label_<name> columns).")
_OUT = typer.Option(..., "--out", help="Folder for the tables (CSV and JSON) and the ROC plot.")
_LAYER = typer.Option([], help="Layer(s) to probe, repeat or comma-separate (default: last conv block).")
_TABLE = typer.Option(
    None, help="Concept-class table (CSV or JSON, values -1/0/1); default: learned from the training split."
)


def _names(values: list[str]) -> tuple[str, ...]:
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in _names([text]))
    except ValueError:
        raise MedexplainError(f"--learning-sizes: expected integers like 10,20,50; got {text!r}") from None


def concepts_command(
    model: Path = _MODEL,
    data: Path = _DATA,
    concepts: str = typer.Option("all", help="Concepts: label_a,label_b (with or without label_) or 'all'."),
    out: Path = _OUT,
    layer: list[str] = _LAYER,
    split: str = typer.Option("test", help="Held-out split everything is reported on."),
    train_split: str = typer.Option("train", help="Split the probes and concept directions are fit on."),
    table: Path | None = _TABLE,
    pool: str = typer.Option("mean", help="Spatial pooling of activations: mean, max or mean,max."),
    augment: int = typer.Option(0, help="Augmented copies (flips, shifts, intensity) averaged per image."),
    folds: int = typer.Option(5, help="Cross-validation folds for the probes."),
    threshold: float = typer.Option(0.5, help="Probe probability at which a concept counts as detected."),
    cav_runs: int = typer.Option(20, help="Concept directions re-fit on resampled training data (averaged)."),
    cav_c: float = typer.Option(0.01, "--cav-c", help="Inverse L2 strength of the concept-direction probes."),
    random_runs: int = typer.Option(50, help="Random-label directions for the significance tests."),
    learning_sizes: str = typer.Option("10,20,50,100,200,500", help="Training sizes of the learning curve."),
    learning_draws: int = typer.Option(5, help="Random draws per learning-curve size."),
    alpha: float = typer.Option(0.05, help="Significance level (Holm-corrected over concepts)."),
    seed: int = typer.Option(0, help="Seed for folds, resampling and augmentation."),
    maps_per_concept: int = typer.Option(
        2, help="Concept maps: held-out images shown per concept (most confident probe first); 0 = none."
    ),
    maps_layer: str | None = typer.Option(None, help="Layer of the concept maps (default: the last probed layer)."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out folder."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Probe concepts, measure their influence (TCAV) and check explanations against predictions."""
    from medexplain.concepts import Augmentation, ConceptSettings
    from medexplain.concepts.run import analyse_run
    from medexplain.workflows.concept_maps import write_analysis

    settings = ConceptSettings(
        layers=_names(layer),
        pool=_names([pool]),
        augmentation=Augmentation(copies=augment, seed=seed),
        folds=folds,
        threshold=threshold,
        cav_C=cav_c,
        cav_runs=cav_runs,
        random_runs=random_runs,
        learning_sizes=_sizes(learning_sizes),
        learning_draws=learning_draws,
        alpha=alpha,
        seed=seed,
        batch_size=batch_size,
    )
    report = analyse_run(
        model,
        data,
        concepts=concepts,
        train_split=train_split,
        held_out_split=split,
        settings=settings,
        table=table,
        maps_per_concept=maps_per_concept,
        maps_layer=maps_layer,
        device=device,
        progress=progress,
    )
    write_analysis(report, out, overwrite=overwrite)
    aurocs = ", ".join(f"{k}: {v:.3f}" for k, v in report.summary["inconsistency_auroc"].items())
    typer.echo(f"{out}: {len(report.concepts)} concept probes; inconsistency AUROC for wrong predictions {aurocs}")
    for name, reason in report.summary["skipped_concepts"].items():
        typer.echo(f"skipped {name}: {reason}", err=True)


def bottleneck_command(
    data: Path = typer.Option(..., "--data", help="Dataset folder with manifest.csv (label and label_<name> columns)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (model, bottleneck.json, tables)."),
    concepts: str = typer.Option("all", help="Concepts: label_a,label_b (with or without label_) or 'all'."),
    mode: str = typer.Option("joint", help="Training: independent, sequential or joint (Koh et al. 2020)."),
    backbone: str = typer.Option("resnet18", help="Registered model that predicts the concepts."),
    backbone_args: str = typer.Option("{}", help='Backbone arguments as JSON, e.g. \'{"width": 16}\'.'),
    size: int | None = typer.Option(None, help="Resize images to this size along every spatial axis."),
    epochs: int = typer.Option(20, help="Training epochs of the network."),
    batch_size: int = typer.Option(32, help="Images per training step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, cosine schedule)."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    concept_weight: float = typer.Option(1.0, help="Joint training: weight of the concept loss (lambda)."),
    balance_concepts: bool = typer.Option(True, help="Weigh each concept's positives by its negative/positive ratio."),
    augment: bool = typer.Option(True, help="Random flips, small warps and intensity jitter while training."),
    reuse: Path | None = typer.Option(
        None, help="Independent/sequential: reuse the concept network of this bottleneck run (fit the layer only)."
    ),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and augmentation."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out folder."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train a concept bottleneck: image -> concepts -> class through readable weights, with interventions."""
    from medexplain.concepts.bottleneck import BottleneckSettings, train_bottleneck

    settings = BottleneckSettings(
        mode=mode, backbone=backbone, backbone_args=json_object(backbone_args, "--backbone-args"), size=size,
        epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, concept_weight=concept_weight, balance_concepts=balance_concepts,
        augment=augment, seed=seed,
    )  # fmt: skip
    summary = train_bottleneck(
        data, out, settings, concepts=concepts, concept_model_from=reuse, device=device, progress=progress,
        overwrite=overwrite,
    )  # fmt: skip
    held_out = "test" if "test" in summary["splits"] else "val"
    split = summary["splits"][held_out]
    curve = ", ".join(f"{row['auroc']:.3f}" for row in split["intervention"])
    typer.echo(
        f"{out}: {mode} bottleneck on {len(summary['concepts'])} concepts; {held_out} AUROC "
        f"{split['classification']['auroc']:.3f}; with k = 0, 1, ... corrected concepts: {curve}"
    )
    for name, reason in summary["skipped_concepts"].items():
        typer.echo(f"skipped {name}: {reason}", err=True)


def register(app: typer.Typer) -> None:
    """Add the ``concepts`` and ``bottleneck`` commands to ``app``."""
    app.command("concepts")(concepts_command)
    app.command("bottleneck")(bottleneck_command)
