"""``medexplain simulate``."""

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app`` (filled in by its issue)."""
