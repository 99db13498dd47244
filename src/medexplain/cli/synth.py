"""``medexplain synth ...``: write synthetic datasets with ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from medexplain.data.synth import write_deformation, write_fundus

synth_app = typer.Typer(help="Generate synthetic datasets with ground-truth lesion masks.", no_args_is_help=True)

_OUT = typer.Option(..., "--out", help="Folder to create (images, masks, manifest.csv).")
_SEED = typer.Option(0, "--seed", help="Random seed: the same seed writes identical files.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace OUT if it exists and is not empty.")


@synth_app.command("fundus")
def fundus_command(
    out: Path = _OUT,
    n: int = typer.Option(200, "--n", help="Number of images."),
    size: int = typer.Option(128, "--size", help="Image side in pixels (48-1024)."),
    seed: int = _SEED,
    overwrite: bool = _OVERWRITE,
    label: str = typer.Option("grade", "--label", help="'grade' (0-4) or 'referable' (grade >= 2)."),
) -> None:
    """Colour fundus photographs with microaneurysms, haemorrhages, exudates, lens dust; grade or referable DR."""
    typer.echo(write_fundus(out, n, size, seed, overwrite=overwrite, label=label))


@synth_app.command("deformation")
def deformation_command(
    out: Path = _OUT,
    n: int = typer.Option(200, "--n", help="Number of images or volumes."),
    dims: int = typer.Option(2, "--dims", help="Spatial dimensions: 2 (PNG images) or 3 (NIfTI volumes)."),
    size: int = typer.Option(64, "--size", help="Side in voxels (24-1024 in 2D, 24-192 in 3D)."),
    seed: int = _SEED,
    overwrite: bool = _OVERWRITE,
) -> None:
    """Brain-like phantoms; label 1 = local atrophy of the left hippocampus, its region in mask_atrophy."""
    typer.echo(write_deformation(out, n, dims, size, seed, overwrite=overwrite))


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command group to ``app``."""
    app.add_typer(synth_app, name="synth")
