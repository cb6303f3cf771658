"""The one console and progress-bar style of every semsplat command."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

CONSOLE = Console()


def progress_bar(console: Console = CONSOLE) -> Progress:
    """A rich progress bar: spinner, description, bar, done/total, elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
