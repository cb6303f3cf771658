"""Atomic file writes: everything semsplat writes appears whole or not at all, with the permissions that
the process umask gives a plain ``open()`` (0644 under umask 022), as nerfstudio's own files have."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Optional, Union


def current_umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode a new file gets from ``open()`` under the current umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode a new folder gets from ``mkdir()`` under the current umask."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent: Path, prefix: str, suffix: str) -> Path:
    """A fresh folder inside ``parent`` (``mkdtemp`` makes it 0700) with the umask's folder mode."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(folder, dir_mode())
    return folder


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed, given the umask's file mode and
    renamed onto ``path``.

    Args:
        path: Destination; its folder is created if needed.
        mode: "wb" or "w".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 whatever the umask; others must be able to read what we write.
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Union[str, Path], data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: Union[str, Path], payload, indent: Optional[int] = 2) -> None:
    """Writes ``payload`` as JSON to ``path`` atomically (``indent`` None: on one line)."""
    with atomic_open(path, "w") as handle:
        json.dump(payload, handle, indent=indent)
