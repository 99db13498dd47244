"""``medexplain train``."""

import typer


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app`` (filled in by its issue)."""
