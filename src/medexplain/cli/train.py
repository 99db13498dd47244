"""``medexplain train``: fit a registered model on a dataset and write a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from medexplain.cli.common import json_object
from medexplain.errors import MedexplainError

_DATA = typer.Option(..., "--data", help="Dataset folder with manifest.csv, or a MedMNIST .npz.")
_OUT = typer.Option(..., "--out", help="Run folder to write (must be new or empty unless --resume).")


def _class_weights(text: str | None) -> str | list[float] | None:
    if text is None or text == "balanced":
        return text
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise MedexplainError(f"--class-weights: expected 'balanced' or numbers like 1,2.5,4; got {text!r}") from None


def _axes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(a) for a in text.split(",")]
    except ValueError:
        raise MedexplainError(f"--tta-flip-axes: expected spatial axes like 0,1; got {text!r}") from None


def train_command(
    model: str = typer.Option(..., "--model", help="Registered model name, e.g. sparse-bagnet9-light, resnet18."),
    data: Path = _DATA,
    out: Path = _OUT,
    epochs: int = typer.Option(30, help="Training epochs (cosine learning-rate schedule over them)."),
    batch_size: int = typer.Option(32, help="Samples per optimisation step."),
    lr: float | None = typer.Option(None, help="Peak learning rate (default: 1e-2 sgd, 1e-3 adamw)."),
    optimizer: str = typer.Option("adamw", help="sgd (Nesterov, momentum 0.9, wd 5e-4) or adamw."),
    loss: str | None = typer.Option(
        None,
        help="ce, bce, ce+sparsity, bce+sparsity or ce+sibnet (default: ce+sparsity for sparse-* models, else ce).",
    ),
    sparsity_lambda: float | None = typer.Option(None, help="Weight of mean |evidence| per element."),
    sparsity_on: str = typer.Option("evidence", help="Penalise the evidence map ('evidence') or E - bias ('local')."),
    sparsity_warmup: int = typer.Option(0, help="Ramp lambda up from 0 over this many epochs."),
    class_weights: str | None = typer.Option(None, help="'balanced' or comma-separated weights, one per class."),
    size: int | None = typer.Option(None, help="Resize images to this size along every spatial axis."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and augmentation."),
    patience: int | None = typer.Option(None, help="Stop after this many epochs without validation improvement."),
    monitor: str = typer.Option("auroc", help="Validation metric: loss, accuracy, balanced_accuracy, auroc, kappa."),
    augment: bool = typer.Option(True, help="Flips, small affine warps and intensity jitter during training."),
    model_args: str | None = typer.Option(None, help="Extra model arguments as JSON, e.g. '{\"width\": 32}'."),
    attention: str | None = typer.Option(None, help="se or cbam: an attention block on every residual branch."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last completed epoch."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    ema_decay: float | None = typer.Option(
        None, help="Validate and save an exponential moving average of the weights with this decay, e.g. 0.99."
    ),
    tta_flip_axes: str | None = typer.Option(
        None, help="Evaluate evidence models averaged over flips of these spatial axes, e.g. 0,1 (maps averaged too)."
    ),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the cross-entropy (0 = none)."),
    ordinal_sigma: float = typer.Option(
        0.0, help="Ordered classes: Gaussian soft targets of this width around the true grade (0 = one-hot)."
    ),
    init_from: Path | None = typer.Option(
        None, help="Fine-tune: start from this trained run's weights (same model; a head of another shape is new)."
    ),
    sibnet: str | None = typer.Option(
        None,
        help="ce+sibnet: SIBnet loss arguments as JSON (default: a formulation whose maps do not die); the paper's: "
        '\'{"w_cd": 1.2, "w_sc": 0.9, "cam": "gradcam", "mass": "none", "floor": 0}\'.',
    ),
) -> None:
    """Train a model and write config.json, model.safetensors and metrics.csv to --out."""
    from medexplain.train import TrainConfig, train
    from medexplain.train.distributed import is_main_process

    config = TrainConfig(
        model,
        model_args={**json_object(model_args, "--model-args"), **({"attention": attention} if attention else {})},
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        loss=loss,
        sparsity_lambda=sparsity_lambda,
        sparsity_on=sparsity_on,
        sparsity_warmup=sparsity_warmup,
        class_weights=_class_weights(class_weights),
        size=size,
        seed=seed,
        patience=patience,
        monitor=monitor,
        augment=augment,
        ema_decay=ema_decay,
        tta_flip_axes=_axes(tta_flip_axes),
        label_smoothing=label_smoothing,
        ordinal_sigma=ordinal_sigma,
        init_from=str(init_from) if init_from else None,
        sibnet=json_object(sibnet, "--sibnet") or None,
    )
    written = train(config, data, out, resume=resume, device=device, progress=progress)
    summary = ", ".join(
        f"{split} {name} {value:.3f}"
        for split in ("val", "test")
        for name, value in written["metrics"].get(split, {}).items()
        if name in ("accuracy", "auroc")
    )
    if is_main_process():  # under torchrun every rank returns the same config; one line is enough
        typer.echo(f"{out}: best epoch {written['metrics']['best_epoch']}; {summary}")


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command("train")(train_command)
