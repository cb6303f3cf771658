"""Fixtures shared by the whole suite.

``demo_town``: the procedural town (semsplat_ns.synthetic) in the IRT layout, built once per session for
each set of arguments and shared read-only; ``writable=True`` hands out a private copy for tests that
write into the scene (pseudo labels, caches).

``irt_scene``: a real IRT scene by name (townA, townB, ...), looked up in the folder that
``$SEMSPLAT_DATA`` names, as ``ns-train`` does; the test is skipped when the variable is unset or the
scene is absent. Nothing in the suite points outside the repository.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``) every worker is its own session: its own
``tmp_path_factory`` folder, so its own ``demo_town`` cache, and each test file runs whole on one worker, so
module fixtures are built once. The files that take longest are handed out first (``HEAVY_FIRST``) and each
worker, with its subprocesses, uses one CPU thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from semsplat_ns.synthetic.scene_writer import make_scene

DemoTown = Callable[..., Path]

HEAVY_FIRST = (
    "tests/scripts/test_viewer_browser.py",  # ~115 s with -n 2 on the 2-core box at load ~2 (2026-11-26)
    "tests/scripts/test_batch.py",  # ~114 s
    "tests/data/test_process_data.py",  # ~57 s
    "tests/scripts/test_user_errors.py",  # ~53 s
    "tests/model/test_model_training.py",  # ~47 s
    "tests/data/test_capture.py",  # ~44 s
    "tests/model/test_resume.py",  # ~34 s
    "tests/scripts/test_predict.py",  # ~30 s
    "tests/pseudo/test_pseudo_labels.py",  # ~26 s
    "tests/benchmarks/test_semantic_nerfw.py",  # ~20 s
    "tests/model/test_label_render.py",  # ~19 s (alone)
    "tests/scripts/test_umask.py",  # ~15 s
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
