"""Depth of the training views for the pseudo-label backends: which source ``--depth`` / ``--depth-config`` /
``--depth-dir`` select, and the z-depth maps from it (triangulated or the capture's own sparse points, a trained
model's renders, or ``.npy`` files; :mod:`semsplat_ns.geometry.depth` does the work)."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
import types
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Sequence

import numpy as np
import torch

from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.geometry.depth import (
    DepthError,
    DepthView,
    PointsDepthSettings,
    depth_maps_from_points,
    load_depth_dir,
    render_depths_from_config,
)
from semsplat_ns.pseudo.scene import TrainSplit

DepthSource = Literal["points", "config", "dir"]
"""Where depth comes from."""

VIEWS_PER_DEPTH_TASK = 4
"""Most views of one task when depth from points runs in worker processes (the points travel once per task); fewer
when that leaves cores idle (:func:`views_per_task`)."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""What OpenMP and BLAS libraries read for their thread count when they load."""


def select_depth_source(depth: DepthSource, depth_config: Optional[Path], depth_dir: Optional[Path]) -> DepthSource:
    """The depth source the flags select: ``--depth-config`` or ``--depth-dir`` when given, else ``--depth``.

    Raises:
        DepthError: Both files given, or a source named without its file.
    """
    if depth_config is not None and depth_dir is not None:
        raise DepthError(f"{depth_config}, {depth_dir}: give --depth-config or --depth-dir, not both")
    if depth_config is not None:
        return "config"
    if depth_dir is not None:
        return "dir"
    if depth == "config":
        raise DepthError("--depth config needs --depth-config PATH (a trained run's config.yml)")
    if depth == "dir":
        raise DepthError("--depth dir needs --depth-dir DIR (a folder of <stem>.npy depth maps)")
    return "points"


def compute_depths(
    scene: TrainSplit,
    indices: Sequence[int],
    source: DepthSource,
    depth_dir: Optional[Path] = None,
    depth_config: Optional[Path] = None,
    points_settings: Optional[PointsDepthSettings] = None,
    depth_workers: Optional[int] = None,
) -> Dict[int, torch.Tensor]:
    """z-depth maps (input-world units, 0 = unknown) of the given training views.

    Args:
        scene: The training split.
        indices: Views whose depth is wanted.
        source: "points", "config" or "dir" (:func:`select_depth_source`).
        depth_dir: The folder of ``<stem>.npy`` maps (source "dir").
        depth_config: A trained run's config.yml (source "config").
        points_settings: How points become depth (source "points"); default settings when None.
        depth_workers: Processes that make depth from points (source "points"); None: one per core this process
            may run on (:func:`usable_cores`, at most one per task); 1: in this process.

    Returns:
        view index -> float32 [H, W] depth.
    """
    stems = [scene.stems[i] for i in indices]
    sizes = [scene.sizes[i] for i in indices]
    if source == "dir":
        assert depth_dir is not None  # select_depth_source says "dir" only with --depth-dir
        by_stem = load_depth_dir(depth_dir, stems, sizes)
        return {i: by_stem[s] for i, s in zip(indices, stems)}
    if source == "config":
        assert depth_config is not None  # select_depth_source says "config" only with --depth-config
        with _progress() as progress:
            task = progress.add_task("Rendering depth with the trained model", total=len(indices))
            by_stem = render_depths_from_config(
                depth_config, stems, sizes, progress=lambda _stem: progress.advance(task)
            )
        return {i: by_stem[s] for i, s in zip(indices, stems)}
    points = np.asarray(scene_points(scene), dtype=np.float64)  # [P, 3]
    settings = points_settings or PointsDepthSettings()
    views: List[DepthView] = [
        (i, np.asarray(scene.Ks[i], dtype=np.float64), np.asarray(scene.c2ws[i], dtype=np.float64), *scene.sizes[i])
        for i in indices
    ]
    # Each view's mesh and lookup run in scipy holding the GIL: processes, not threads, use the cores. Not torch's
    # thread count: a trainer may set it to 1, and the workers are single-threaded.
    wanted = usable_cores() if depth_workers is None else depth_workers
    per_task = views_per_task(len(views), wanted)
    tasks = [views[start : start + per_task] for start in range(0, len(views), per_task)]
    workers = min(len(tasks), wanted)
    depths: Dict[int, np.ndarray] = {}
    with _progress() as progress:
        bar = progress.add_task(f"Depth from {len(points)} points", total=len(views))
        if workers <= 1:
            for task in tasks:
                depths.update(depth_maps_from_points(points, settings, task))
                progress.advance(bar, len(task))
        else:
            context = multiprocessing.get_context("spawn")  # no fork of a process that may hold CUDA or threads
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                with _single_threaded_children(), _children_skip_main():  # the workers start at these submissions
                    running = {pool.submit(depth_maps_from_points, points, settings, task): len(task) for task in tasks}
                for done in as_completed(running):
                    depths.update(done.result())
                    progress.advance(bar, running[done])
    return {i: torch.from_numpy(depths[i]) for i in indices}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a container's cpuset, else every core), at most
    ``OMP_NUM_THREADS`` when that is set: a run that shares the machine (``semsplat-batch --threads-per-scene``, or
    several trainings with a share each) is given its share there. Four ns-train runs of 16 shared cores, each
    starting one worker per core of the 64, took 47-66 s for depth where one alone takes 11 s (H100 box, 2f8478d)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        cores = max(1, os.cpu_count() or 1)
    share = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(cores, int(share)) if share.isdigit() and int(share) >= 1 else cores


def views_per_task(views: int, workers: int) -> int:
    """Views of one depth task: at most :data:`VIEWS_PER_DEPTH_TASK`, and few enough for about three tasks per worker,
    so the last round of tasks leaves few cores idle (93 views on 16 workers: 2 per task, 47 tasks)."""
    return max(1, min(VIEWS_PER_DEPTH_TASK, math.ceil(views / (3 * max(1, workers)))))


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Processes started inside run their OpenMP / BLAS libraries on one thread: each depth worker is one of
    several processes on the cores, and a library spinning on threads of its own made them 10x slower on 2
    cores. A spawned child reads the variables when it imports numpy and torch, before any initializer runs."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _children_skip_main() -> Iterator[None]:
    """Processes spawned inside do not run the parent's main script again. A spawned child imports the parent's
    ``__main__`` before its task; under ``ns-train`` that is nerfstudio's training script, whose imports (every
    method config) took 12-17 s per worker on the 2-core box, against 0.5 s for what the depth task imports. The
    task needs nothing from ``__main__``, so an empty module stands in for it while the children start."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def scene_points(scene: TrainSplit) -> np.ndarray:
    """The points of ``--depth points``, float64 [P, 3]: a capture's own sparse points, or points triangulated
    from an IRT scene's known poses (cached in its ``sparse/points3D.ply``, shared with the seed points).

    Raises:
        DepthError: Too few points, or a capture without sparse points (naming the scene).
    """
    if scene.points is not None:
        if len(scene.points) < 3:
            raise DepthError(
                f"{scene.scene_dir}: the capture's sparse model holds {len(scene.points)} points, too few for "
                "--depth points; pass depth with --depth-dir DIR (<stem>.npy) or --depth-config a trained run's "
                "config.yml"
            )
        return scene.points
    from semsplat_ns.data.points import MIN_SEED_POINTS, load_or_triangulate_points

    if scene.points_cache is None:
        raise DepthError(
            f"{scene.scene_dir}: the capture gives no sparse points (no points3D in its COLMAP model, no "
            f"ply_file_path, or fewer than the {MIN_SEED_POINTS} worth using) for --depth points; pass depth with "
            "--depth-dir DIR (<stem>.npy) or --depth-config a trained run's config.yml"
        )

    # Same inputs as the dataparser's seed points, so both share one cache. A handful of points still
    # gives depth somewhere; the mesh needs 3.
    cache = scene.points_cache
    result = load_or_triangulate_points(list(scene.photo_paths), scene.Ks, scene.c2ws, cache, min_points=3)
    if result is None:
        raise DepthError(
            f"{cache}: too few points were triangulated for --depth points; pass depth with "
            "--depth-dir DIR (<stem>.npy) or --depth-config a trained run's config.yml"
        )
    return np.asarray(result[0], dtype=np.float64)  # [P, 3]
