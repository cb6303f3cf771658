"""Running one stage's command for ``semsplat-batch``: where the command is, the environment it gets, a process
that dies with its worker, its output in a log file, and the one line that says why it failed.

The scene task (:mod:`semsplat_ns.batch.scene_job`) decides *what* runs; this module only runs a command line
and reads its log. Nothing here imports torch or nerfstudio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

COMMAND_HEADER = "# command: "
"""First line of a stage log: the command line, quoted for a POSIX shell."""

_ERROR_LINE = re.compile(r"^[\w.\-]+: error: .+")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b:?.*")
_BOX_CHARS = "│╭╮╰╯─┃━┏┓┗┛ \t"


def find_command(name: str) -> Optional[str]:
    """A console script of this environment: beside the running Python first (a venv's bin/ need not be on
    PATH), then on PATH.

    Args:
        name: e.g. ``ns-train``.

    Returns:
        Its path, or None when it is not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def error_line(log_text: str, command: str, returncode: Optional[int]) -> str:
    """The one line that says why a stage failed, from its output.

    Our commands and ns-train (through semsplat's excepthook) end bad input with ``<prog>: error: <message>``,
    which is taken as is; otherwise a tyro box's message, a traceback's last line, or the last line printed.

    Args:
        log_text: The stage's output (stdout and stderr).
        command: The command's name, for messages that do not name it.
        returncode: Its exit status (negative: killed by that signal); None: it timed out.
    """
    lines = [line.rstrip() for line in log_text.splitlines() if not line.startswith(COMMAND_HEADER)]
    for line in reversed(lines):
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    status = (
        "timed out"
        if returncode is None
        else f"was killed by signal {-returncode}"
        if returncode < 0
        else f"exited with status {returncode}"
    )
    for index in range(len(lines) - 1, -1, -1):
        # tyro (bad flags) prints a box: "╭─ Unrecognized options ─╮ / │ Unrecognized options: --x │ / ...".
        if lines[index].lstrip().startswith("╭─"):
            for inner in lines[index + 1 :]:
                text = inner.strip(_BOX_CHARS)
                if text and any(ch.isalnum() for ch in text):
                    return f"{command}: error: {text}"
    if "Traceback (most recent call last):" in log_text:
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line.strip()) and not line.strip().endswith("Warning"):
                return f"{command} {status}: {line.strip()}"
    for line in reversed(lines):
        text = line.strip(_BOX_CHARS)
        if text and any(ch.isalnum() for ch in text):
            return f"{command} {status}: {text}"
    return f"{command} {status} and printed nothing"


def die_with_parent_hook() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies (Linux), else None.

    The death signal fires when the forking *thread* ends; the worker thread that starts a stage waits for it,
    so it cannot end first except with the whole process.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl  # resolved here: the hook runs between fork and exec
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return hook


def stage_env(threads: Optional[int]) -> Dict[str, str]:
    """The environment of a stage process.

    Args:
        threads: CPU threads per stage process. Dask's nanny sets OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) in
            every worker, which a training stage must not inherit; None keeps the worker's values.
    """
    env = dict(os.environ)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    # Logs written as they happen (a stage can be followed with tail -f), and rich lines wide enough to read.
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COLUMNS", "160")
    return env


@dataclass
class Finished:
    """How a logged command ended."""

    returncode: Optional[int]
    """Its exit status (negative: killed by that signal); None: killed after the timeout."""
    started: float
    """When it started, seconds since the epoch (to tell which stages ran at the same time)."""
    seconds: float
    """Its wall time."""


def run_logged(
    command: List[str],
    log: Path,
    env: Dict[str, str],
    cwd: Path,
    timeout_s: Optional[float] = None,
    on_start: Callable[[int], None] = lambda pid: None,
) -> Finished:
    """Runs ``command`` with stdout and stderr in ``log`` (first line: the command), dying with this process.

    Args:
        command: The command line.
        log: The log file (its folder is created; an existing log is replaced).
        env: The process's environment.
        cwd: Its working folder.
        timeout_s: Kill it after this long; None: no limit.
        on_start: Called with the process id once it runs.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started, clock = time.time(), time.perf_counter()
    returncode: Optional[int]
    with open(log, "w") as handle:
        handle.write(COMMAND_HEADER + shlex.join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=die_with_parent_hook(),
        )
        on_start(process.pid)
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            returncode = None
    return Finished(returncode, started, time.perf_counter() - clock)
