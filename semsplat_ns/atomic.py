"""Atomic file writes: everything semsplat writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed and renamed onto ``path``.

    Args:
        path: Destination; its folder is created if needed.
        mode: "wb" or "w".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Union[str, Path], payload, indent: int = 2) -> None:
    """Writes ``payload`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        json.dump(payload, handle, indent=indent)
