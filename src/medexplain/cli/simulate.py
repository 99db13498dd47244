"""``medexplain simulate train|apply``: counterfactual simulators that warp images to add or remove disease."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medexplain.errors import MedexplainError

simulate_app = typer.Typer(
    help="Train simulators that warp images to inject or remove disease (Liu et al., IPMI 2021) and apply them.",
    no_args_is_help=True,
)
_DATA = typer.Option(..., "--data", help="Dataset folder with manifest.csv, or a MedMNIST .npz.")
_OVERWRITE = typer.Option(False, help="Replace a non-empty --out folder (only once the new one is complete).")
_DEVICE = typer.Option("cpu", help="cpu, cuda, cuda:1, ...")
_PROGRESS = typer.Option(True, help="Show progress bars.")
_CLASSIFIER = typer.Option(..., "--classifier", help="Classifier run folder written by `medexplain train`.")
_SIMULATOR_OUT = typer.Option(..., "--out", help="Simulator folder to write (simulator.json + .safetensors).")
_SIMULATOR = typer.Option(..., "--simulator", help="Simulator folder written by `simulate train`.")
_APPLY_OUT = typer.Option(..., "--out", help="Folder for simulated images, fields, Jacobian maps, summary.")
_OTHER_CLASSIFIER = typer.Option(None, "--classifier", help="Classifier run folder (default: the one trained against).")


def _channels(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise MedexplainError(f"--channels: expected comma-separated integers like 16,32,64; got {text!r}") from None
    return channels


@simulate_app.command("train")
def train_command(
    classifier: Path = _CLASSIFIER,
    data: Path = _DATA,
    out: Path = _SIMULATOR_OUT,
    split: str | None = typer.Option("train", help="Split to train on ('' for every image)."),
    epochs: int = typer.Option(30, help="Passes over the data."),
    batch_size: int = typer.Option(8, help="Images per optimisation step."),
    lr: float = typer.Option(3e-4, help="Adam learning rate."),
    margin: float = typer.Option(10.0, help="Hinge margin b: the logit must move by at least b along d."),
    cycle_weight: float = typer.Option(1.0, help="Weight of the cycle-consistency term."),
    smoothness: float = typer.Option(0.04, help="Weight of the L1 gradient of the forward field."),
    cycle_smoothness: float = typer.Option(0.01, help="Weight of the L1 gradient of the backward (cycle) field."),
    max_displacement: float | None = typer.Option(None, help="Penalise displacements longer than this (voxels)."),
    displacement_weight: float = typer.Option(
        0.0, help="Weight of the minimal-change penalty, the mean displacement length (voxels); 0: off."),
    channels: str = typer.Option("16,32,64", help="U-Net channels per level."),
    experts: int = typer.Option(4, help="Expert kernels per conditional convolution."),
    integration_steps: int = typer.Option(7, help="Scaling-and-squaring steps (0: plain displacement field)."),
    disease_class: int = typer.Option(1, help="Class index whose evidence is injected or removed."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and directions."),
    device: str = _DEVICE,
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Train one simulator for both directions against a frozen classifier."""
    from medexplain.simulate.runs import train_from_run
    from medexplain.simulate.training import TrainingConfig

    settings = TrainingConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=lr, margin=margin, cycle_weight=cycle_weight,
        smoothness_weight=smoothness, cycle_smoothness_weight=cycle_smoothness, magnitude_bound=max_displacement,
        displacement_weight=displacement_weight, disease_class=disease_class, seed=seed,
    )
    document = train_from_run(
        classifier, data, out, split=split or None, settings=settings, device=device, overwrite=overwrite,
        progress=progress,
        simulator={"channels": _channels(channels), "num_experts": experts, "integration_steps": integration_steps},
    )
    last = document["history"][-1]
    typer.echo(f"simulator written to {out} (final loss {last['loss']:.4f}, logit shift {last['logit_shift']:.3f})")


@simulate_app.command("apply")
def apply_command(
    simulator: Path = _SIMULATOR,
    data: Path = _DATA,
    direction: str = typer.Option(..., "--direction", help="inject (add disease) or remove (take it away)."),
    out: Path = _APPLY_OUT,
    classifier: Path | None = _OTHER_CLASSIFIER,
    split: str | None = typer.Option(None, help="Only this split (default: every image)."),
    file_format: str = typer.Option("npy", "--format", help="npy, or nifti (.nii.gz, 3D only)."),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    device: str = _DEVICE,
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Warp every image towards or away from the disease; write images, fields, Jacobians and a summary."""
    from medexplain.simulate.apply import parse_direction
    from medexplain.simulate.runs import apply_from_folder

    parse_direction(direction)
    summary = apply_from_folder(
        simulator, data, direction, out, classifier_dir=classifier, split=split, file_format=file_format,
        batch_size=batch_size, device=device, overwrite=overwrite, progress=progress,
    )
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group to ``app``."""
    app.add_typer(simulate_app, name="simulate")
