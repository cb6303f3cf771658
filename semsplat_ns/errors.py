"""Bad user input, and how every command reports it: one line on stderr, exit code 2.

A :class:`UserInputError` (a scene file, a path, an option that cannot work) says in its message what is
wrong and where. Its traceback would only show our call stack, so commands print the message alone:

    ns-train: error: /data/sys1/classes.json: not valid JSON (Expecting ',' delimiter: line 3 column 5)

Any other exception is a bug and keeps its traceback.

Our own commands wrap their work in :func:`exit_on_user_error`. nerfstudio's commands (``ns-train``,
``ns-viewer``, ``ns-eval``, ``ns-render``) are not ours to wrap, but each imports semsplat through its
entry points (``nerfstudio.method_configs``, ``nerfstudio.dataparser_configs``, or the classes named in
a saved config.yml) before it reads any scene, and importing ``semsplat_ns`` installs :func:`excepthook`:
an uncaught user error ends the process the same way; anything else goes to the hook that was there
before. ``SEMSPLAT_TRACEBACK=1`` shows the traceback of user errors too (for debugging semsplat itself).

This module imports nothing heavy: it runs in every process that imports ``semsplat_ns``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Iterator, Optional, Type

EXIT_CODE = 2
"""Exit status of a command stopped by bad input (argparse's and tyro's status for bad arguments)."""

TRACEBACK_ENV_VAR = "SEMSPLAT_TRACEBACK"
"""Set to 1 to get the full traceback of user errors as well."""


class UserInputError(ValueError):
    """The user's input cannot work: a scene file, a path or an option. The message names it and says why.

    A ValueError, so code that validates arguments the usual way still catches it.
    """


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` reports bad input (printed as one line) rather than a bug (printed with its traceback)."""
    return isinstance(error, UserInputError)


def _traceback_wanted() -> bool:
    return os.environ.get(TRACEBACK_ENV_VAR, "").strip() not in ("", "0")


def error_line(error: BaseException, prog: Optional[str] = None) -> str:
    """``<prog>: error: <message>`` on one line (argparse's and tyro's form).

    Args:
        error: The user error.
        prog: Command name; default: the running script's name.
    """
    prog = prog or Path(sys.argv[0]).name or "semsplat"
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{prog}: error: {message or type(error).__name__}"


def report(error: BaseException, prog: Optional[str] = None) -> None:
    """Writes :func:`error_line` to stderr, after whatever stdout still buffers (so a terminal shows them in order)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.stderr.write(error_line(error, prog) + "\n")
    sys.stderr.flush()


@contextlib.contextmanager
def exit_on_user_error(prog: Optional[str] = None) -> Iterator[None]:
    """Runs the body; a user error raised in it is reported as one line and exits with :data:`EXIT_CODE`.

    Args:
        prog: Command name for the message; default: the running script's name.
    """
    try:
        yield
    except Exception as error:
        if not is_user_error(error) or _traceback_wanted():
            raise
        report(error, prog)
        raise SystemExit(EXIT_CODE) from None


def excepthook(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
    """``sys.excepthook`` for processes we do not own the entry point of (see the module docstring)."""
    if exc is not None and is_user_error(exc) and not _traceback_wanted():
        report(exc)
        # SystemExit raised by the hook sets the exit status: the interpreter handles it like one raised
        # by the program (and still runs atexit handlers and waits for non-daemon threads).
        raise SystemExit(EXIT_CODE)
    _previous_excepthook(exc_type, exc, tb)


_previous_excepthook = sys.__excepthook__


def install_excepthook() -> None:
    """Makes :func:`excepthook` the process's ``sys.excepthook``, chaining the one in place (idempotent)."""
    global _previous_excepthook
    if sys.excepthook is excepthook:
        return
    _previous_excepthook = sys.excepthook
    sys.excepthook = excepthook
