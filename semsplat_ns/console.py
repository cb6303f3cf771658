"""The one console and progress-bar style of every semsplat command."""

from __future__ import annotations

import contextlib
import threading
from typing import Dict, Iterator, Tuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

CONSOLE = Console()

_shown_lock = threading.Lock()
_shown: Dict[int, Tuple[Progress, int]] = {}
"""The progress display on screen per console (by ``id``), with how many ``progress_bar`` blocks use it."""


@contextlib.contextmanager
def progress_bar(console: Console = CONSOLE) -> Iterator[Progress]:
    """A rich progress display (spinner, description, bar, done/total, elapsed time) for the block.

    rich shows one live display per console at a time, so a bar opened while another is on screen, by this thread or
    another (the seed points triangulated beside the prior's training), adds its tasks to that display; the display
    goes when the last block using it ends.
    """
    key = id(console)
    with _shown_lock:
        progress, users = _shown.get(key, (None, 0))
        if progress is None:
            progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            progress.start()
        _shown[key] = (progress, users + 1)
    try:
        yield progress
    finally:
        with _shown_lock:
            progress, users = _shown[key]
            if users == 1:
                del _shown[key]
                progress.stop()
            else:
                _shown[key] = (progress, users - 1)
