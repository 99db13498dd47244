"""``medexplain synth ...``: write synthetic datasets with ground truth."""

import typer

synth_app = typer.Typer(help="Generate synthetic datasets with ground-truth lesion masks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
