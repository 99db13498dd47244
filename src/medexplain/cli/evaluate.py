"""``medexplain evaluate``."""

import typer


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app`` (filled in by its issue)."""
