"""Fixtures shared by the whole suite.

``demo_town``: the procedural town (semsplat_ns.synthetic) in the IRT layout, built once per session for
each set of arguments and shared read-only; ``writable=True`` hands out a private copy for tests that
write into the scene (pseudo labels, caches).

``console_scripts``: runs nerfstudio's console scripts (ns-train, ns-eval, ...), each in a process of its own, side by
side, forked from one server process of the worker that made the imports every one of them makes first (~15 s of CPU
each time), once.

``irt_scene``: a real IRT scene by name (townA, townB, ...), looked up in the folder that
``$SEMSPLAT_DATA`` names, as ``ns-train`` does; the test is skipped when the variable is unset or the
scene is absent. Nothing in the suite points outside the repository.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``) every worker is its own session: its own
``tmp_path_factory`` folder, so its own ``demo_town`` cache, and each test file runs whole on one worker, so
module fixtures are built once. The files that take longest are handed out first (``HEAVY_FIRST``) and each
worker, with its subprocesses, uses one CPU thread.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest

from semsplat_ns.synthetic.scene_writer import make_scene


def look_at_opencv(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world [4, 4] at ``position`` looking at ``target``, world up = +z (x right, y down)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = position
    return c2w


DemoTown = Callable[..., Path]

HEAVY_FIRST = (
    "tests/scripts/test_batch.py",  # ~120 s with -n 2 on the 2-core box at load ~2 (2026-11-27)
    "tests/scripts/test_viewer_browser.py",  # ~100 s
    "tests/data/test_process_data.py",  # ~52 s
    "tests/model/test_model_training.py",  # ~50 s
    "tests/data/test_capture.py",  # ~49 s
    "tests/model/test_resume.py",  # ~41 s
    "tests/scripts/test_predict.py",  # ~33 s
    "tests/pseudo/test_pseudo_labels.py",  # ~28 s
    "tests/scripts/test_user_errors.py",  # ~23 s
    "tests/data/test_capture_few_points.py",  # ~23 s
    "tests/benchmarks/test_semantic_nerfw.py",  # ~21 s
    "tests/scripts/test_umask.py",  # ~18 s
    "tests/model/test_label_render.py",  # ~8 s
)
"""Test files that take longest on the 2-core CPU box, longest first: scheduled before all others, so that
no worker is left with a long file at the end while the other idles."""

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # One thread per worker (and per ns-train / ns-render process it starts): two workers already fill the
    # two cores, and more OpenMP threads than cores only wait on each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: List[pytest.Item]) -> None:
    """Heavy files first (see HEAVY_FIRST), every file's tests kept together and in their order."""
    rank = {name: index for index, name in enumerate(HEAVY_FIRST)}
    root = config.rootpath

    def file_rank(item: pytest.Item) -> int:
        try:
            name = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=file_rank)  # stable: files and tests keep their collection order otherwise


@pytest.fixture(scope="session")
def demo_town(tmp_path_factory: pytest.TempPathFactory) -> DemoTown:
    """``demo_town(n_views=20, resolution=48, n_labelled=2, seed=3, test_every=10, writable=False)``."""
    built: Dict[Tuple, Path] = {}
    root = tmp_path_factory.mktemp("towns")

    def town(
        n_views: int = 20,
        resolution: int = 48,
        n_labelled: int = 2,
        seed: int = 3,
        test_every: int = 10,
        writable: bool = False,
    ) -> Path:
        key = (n_views, resolution, n_labelled, seed, test_every)
        if key not in built:
            name = "town_" + "_".join(str(v) for v in key)
            built[key] = make_scene(
                root / name,
                n_views=n_views,
                resolution=resolution,
                n_labelled=n_labelled,
                seed=seed,
                test_every=test_every,
            )
        if not writable:
            return built[key]
        copy = tmp_path_factory.mktemp("town_copy") / "scene"
        shutil.copytree(built[key], copy)
        return copy

    return town


CONSOLE_SCRIPT_SERVER = r"""
import json, os, runpy, signal, sys

sys.path[0] = sys.argv[1]  # a console script's sys.path[0]: its own folder (the venv's bin/)
# What every nerfstudio command imports before its entry point runs (with semsplat's modules, through its entry
# points, and so its excepthook); each command's console script imports the rest in its own process.
import nerfstudio.configs.method_configs  # noqa: F401

requests, replies = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_RDWR), 0)  # the commands read nothing of the requests


def serve():
    # Runs each request's commands, a forked process each, side by side (or after the one named in "after");
    # replies with their exit codes. In a forked process: returns its command.
    for line in requests:
        commands = json.loads(line)
        by_name = {command["name"]: command for command in commands}
        waiting, running = list(commands), {}
        while waiting or running:
            for command in [c for c in waiting if c["after"] is None or "returncode" in by_name[c["after"]]]:
                waiting.remove(command)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    return command
                running[pid] = command
                with open(command["pid"] + ".tmp", "w") as out:
                    out.write(str(pid))
                os.replace(command["pid"] + ".tmp", command["pid"])
            pid, status = os.wait()
            running.pop(pid)["returncode"] = os.waitstatus_to_exitcode(status)
        replies.write("@@console_scripts " + json.dumps(commands) + "\n")
        replies.flush()
    sys.exit(0)


command = serve()
# A command's own process: its console script as the interpreter runs one, from its folder, with its environment,
# its output in its own files; an exception it leaves uncaught reaches sys.excepthook at the top level, as in the
# console script.
requests.close()
replies.close()
os.chdir(command["cwd"])
os.environ.clear()
os.environ.update(command["env"])
with open(command["stdout"], "wb") as stdout, open(command["stderr"], "wb") as stderr:
    os.dup2(stdout.fileno(), 1)
    os.dup2(stderr.fileno(), 2)
signal.alarm(command["timeout"])  # a command that does not end (a viewer serving) is killed, not left behind
sys.argv = command["args"]
runpy.run_path(command["args"][0], run_name="__main__")
"""
"""``python -c CONSOLE_SCRIPT_SERVER <bin/>``, then one JSON list of commands a line on its stdin: forks a process
for each command, which runs its console script; replies a line with the commands and their exit codes once all have
ended. Each command: ``{"name", "args": [script, ...], "cwd", "env", "stdout": path, "stderr": path, "pid": path
(written once it started), "timeout": s, "after": name or None}``."""

_SERVER_ENV = dict(os.environ)
"""The environment the server imports in: this worker's, before any test changed it."""

ConsoleScripts = Callable[..., Dict[str, subprocess.CompletedProcess]]


class _ConsoleScriptServer:
    """A CONSOLE_SCRIPT_SERVER process of this test session, started on its first request."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.process: Optional[subprocess.Popen] = None
        self.replies: queue.Queue[Optional[str]] = queue.Queue()

    def _start(self) -> subprocess.Popen:
        log = open(self.log_dir / "server.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-c", CONSOLE_SCRIPT_SERVER, str(Path(sys.executable).parent)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=_SERVER_ENV, cwd=self.log_dir,
            text=True, start_new_session=True,
        )  # fmt: skip
        log.close()
        replies = self.replies = queue.Queue()
        stdout = process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                replies.put(line)
            replies.put(None)

        threading.Thread(target=read, daemon=True).start()
        return process

    def run(self, jobs: List[Dict[str, Any]], timeout: float) -> List[Dict[str, Any]]:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        process = self.process
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(jobs) + "\n")
            process.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = self.replies.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    raise AssertionError(f"the console scripts did not end within {timeout:.0f} s: {jobs}") from None
                if line is None:
                    log = (self.log_dir / "server.log").read_text(errors="replace")
                    raise AssertionError(f"the console script server exited ({process.wait()}): {log[-3000:]}")
                if line.startswith("@@console_scripts "):
                    return json.loads(line[len("@@console_scripts ") :])
        except BaseException:
            self.close()  # the next request starts a fresh server
            raise

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # and any command still running
        except ProcessLookupError:
            pass
        process.wait()


@pytest.fixture(scope="session")
def console_scripts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleScripts]:
    """``console_scripts({name: (["ns-train", *args], cwd)}, env, logs, timeout=600, after={name: earlier})``: runs
    the venv's console scripts side by side, each in its own process, with the environment ``env`` (or this
    process's); a command named in ``after`` starts once the one it names has ended. Their output goes to
    ``logs/<name>.out`` and ``.err``, and each one's process id, once it started, to ``logs/<name>.pid``. Returns each
    one's exit code and output by name.

    The processes are forked from one server process of this worker that made the imports every nerfstudio command
    makes first (~15 s of CPU each time), once (CONSOLE_SCRIPT_SERVER)."""
    server = _ConsoleScriptServer(tmp_path_factory.mktemp("console_scripts"))

    def run(
        commands: Dict[str, Tuple[List[str], Path]],
        env: Optional[Dict[str, str]],
        logs: Path,
        timeout: int = 600,
        after: Optional[Dict[str, str]] = None,
    ) -> Dict[str, subprocess.CompletedProcess]:
        after = after or {}
        assert set(after) <= set(commands) and set(after.values()) <= set(commands), after
        logs.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        jobs = [
            {
                "name": name,
                "args": [str(bin_dir / args[0]), *args[1:]],
                "cwd": str(cwd),
                "env": dict(os.environ if env is None else env),
                "stdout": str(logs / f"{name}.out"),
                "stderr": str(logs / f"{name}.err"),
                "pid": str(logs / f"{name}.pid"),
                "timeout": timeout,
                "after": after.get(name),
            }
            for name, (args, cwd) in commands.items()
        ]
        done = server.run(jobs, timeout=timeout * (1 + len(after)) + 60)
        return {
            job["name"]: subprocess.CompletedProcess(
                job["args"], job["returncode"], Path(job["stdout"]).read_text(), Path(job["stderr"]).read_text()
            )
            for job in done
        }

    yield run
    server.close()


@pytest.fixture(scope="session")
def irt_scene() -> Callable[[str], Path]:
    """``irt_scene("townA")``: a real scene under ``$SEMSPLAT_DATA``; skips the test when it is absent."""

    def scene(name: str) -> Path:
        root = os.environ.get("SEMSPLAT_DATA")
        if not root:
            pytest.skip(f"real scene {name}: set SEMSPLAT_DATA to the folder that holds it")
        path = Path(root) / name
        if not (path / "train" / "color").is_dir():
            pytest.skip(f"real scene {name}: {path} has no train/color")
        return path

    return scene


@pytest.fixture(scope="module", autouse=True)
def same_random_state_for_each_module():
    """Every test module starts from the same random state (torch, numpy, random), whatever ran before it on its
    worker: under xdist that depends on timing, and an unseeded module fixture (test_label_render's few-step trainer)
    once met a state whose model painted one class everywhere."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def one_cpu_thread():
    """Small CPU work runs far faster on one thread than with OpenMP threads fighting over busy cores (use it with
    ``pytestmark = pytest.mark.usefixtures("one_cpu_thread")`` in a module of small trainings)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
