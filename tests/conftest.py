"""Fixtures shared by the whole suite.

``demo_town``: the procedural town (semsplat_ns.synthetic) in the IRT layout, built once per session for
each set of arguments and shared read-only; ``writable=True`` hands out a private copy for tests that
write into the scene (pseudo labels, caches).

``console_scripts``: runs nerfstudio's console scripts (ns-train, ns-eval, ...), each in a process of its own, side by
side, forked from one driver process that imported what every one of them imports first (~15 s of CPU each).

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
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from semsplat_ns.synthetic.scene_writer import make_scene

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


FORKED_CONSOLE_SCRIPTS = r"""
import json, os, runpy, signal, sys

commands = json.loads(sys.argv[1])
sys.path[0] = os.path.dirname(commands[0]["args"][0])  # a console script's sys.path[0]: its own folder
# What every nerfstudio command imports before its entry point runs (with semsplat's modules, through its entry
# points, and so its excepthook); each command's console script imports the rest in its own process.
import nerfstudio.configs.method_configs  # noqa: F401

children = {}
for command in commands:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        break
    children[pid] = command
else:
    while children:
        pid, status = os.wait()
        children.pop(pid)["returncode"] = os.waitstatus_to_exitcode(status)
    print(json.dumps(commands))
    sys.exit(0)
# A command's own process: its console script as the interpreter runs one, from its folder, its output in its own
# files; an exception it leaves uncaught reaches sys.excepthook at the top level, as in the console script.
os.chdir(command["cwd"])
with open(command["stdout"], "wb") as stdout, open(command["stderr"], "wb") as stderr:
    os.dup2(stdout.fileno(), 1)
    os.dup2(stderr.fileno(), 2)
signal.alarm(command["timeout"])  # a command that does not end (a viewer serving) is killed, not left behind
sys.argv = command["args"]
runpy.run_path(command["args"][0], run_name="__main__")
"""
"""``python -c FORKED_CONSOLE_SCRIPTS '[{"args": [script, ...], "cwd": ..., "stdout": path, "stderr": path,
"timeout": s}, ...]'``: forks a process for each command, all side by side, which runs its console script; prints the
commands with their exit codes once all have ended."""

ConsoleScripts = Callable[..., Dict[str, subprocess.CompletedProcess]]


@pytest.fixture(scope="session")
def console_scripts() -> ConsoleScripts:
    """``console_scripts({name: (["ns-train", *args], cwd)}, env, logs, timeout=600)``: runs the venv's console scripts
    side by side, each in its own process (see FORKED_CONSOLE_SCRIPTS), with the environment ``env``; their output
    goes to ``logs/<name>.out`` and ``.err``. Returns each one's exit code and output by name."""
    bin_dir = Path(sys.executable).parent

    def run(
        commands: Dict[str, Tuple[List[str], Path]], env: Dict[str, str], logs: Path, timeout: int = 600
    ) -> Dict[str, subprocess.CompletedProcess]:
        logs.mkdir(parents=True, exist_ok=True)
        jobs = [
            {
                "args": [str(bin_dir / args[0]), *args[1:]],
                "cwd": str(cwd),
                "stdout": str(logs / f"{name}.out"),
                "stderr": str(logs / f"{name}.err"),
                "timeout": timeout,
            }
            for name, (args, cwd) in commands.items()
        ]
        driver = subprocess.run(
            [sys.executable, "-c", FORKED_CONSOLE_SCRIPTS, json.dumps(jobs)],
            env=env, cwd=logs, capture_output=True, text=True, timeout=timeout + 60,
        )  # fmt: skip
        assert driver.returncode == 0, driver.stderr[-3000:]
        done = json.loads(driver.stdout.splitlines()[-1])
        return {
            name: subprocess.CompletedProcess(
                job["args"], job["returncode"], Path(job["stdout"]).read_text(), Path(job["stderr"]).read_text()
            )
            for name, job in zip(commands, done, strict=True)
        }

    return run


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


@pytest.fixture
def one_cpu_thread():
    """Small CPU work runs far faster on one thread than with OpenMP threads fighting over busy cores (use it with
    ``pytestmark = pytest.mark.usefixtures("one_cpu_thread")`` in a module of small trainings)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
