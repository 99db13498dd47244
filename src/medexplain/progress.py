"""Progress bars for every long loop: one look, set up in one place (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(show: bool = True, *, transient: bool = False) -> Progress:
    """A rich ``Progress`` on stderr (description, bar, done/total, elapsed, remaining); silent when not ``show``.

    Use as a context manager: ``with progress_bar(show) as bar: task = bar.add_task("explaining", total=n)``.
    """
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    return Progress(*columns, disable=not show, transient=transient, console=Console(stderr=True))
