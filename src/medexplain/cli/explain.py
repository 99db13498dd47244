"""``medexplain explain``."""

import typer


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to ``app`` (filled in by its issue)."""
