"""Depth of the training views for the pseudo-label backends: which source ``--depth`` / ``--depth-config`` /
``--depth-dir`` select, and the z-depth maps from it (triangulated or the capture's own sparse points, a trained
model's renders, or ``.npy`` files; :mod:`semsplat_ns.geometry.depth` does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Literal, Optional, Sequence

import numpy as np
import torch

from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.geometry.depth import (
    DepthError,
    PointsDepthSettings,
    depth_from_points,
    load_depth_dir,
    render_depths_from_config,
)
from semsplat_ns.pseudo.scene import TrainSplit

DepthSource = Literal["points", "config", "dir"]
"""Where depth comes from."""


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
) -> Dict[int, torch.Tensor]:
    """z-depth maps (input-world units, 0 = unknown) of the given training views.

    Args:
        scene: The training split.
        indices: Views whose depth is wanted.
        source: "points", "config" or "dir" (:func:`select_depth_source`).
        depth_dir: The folder of ``<stem>.npy`` maps (source "dir").
        depth_config: A trained run's config.yml (source "config").
        points_settings: How points become depth (source "points"); default settings when None.

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
    points = torch.from_numpy(np.asarray(scene_points(scene), dtype=np.float64))  # [P, 3]
    settings = points_settings or PointsDepthSettings()
    depths: Dict[int, torch.Tensor] = {}
    with _progress() as progress:
        task = progress.add_task(f"Depth from {len(points)} points", total=len(indices))
        for i in indices:
            height, width = scene.sizes[i]
            depths[i] = depth_from_points(
                points, torch.from_numpy(scene.Ks[i]), torch.from_numpy(scene.c2ws[i]), height, width, settings
            )  # [H, W]
            progress.advance(task)
    return depths


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
    if scene.points_cache is None:
        raise DepthError(
            f"{scene.scene_dir}: the capture gives no sparse points (no points3D in its COLMAP model, no "
            "ply_file_path, or fewer than the 100 worth using) for --depth points; pass depth with --depth-dir DIR "
            "(<stem>.npy) or --depth-config a trained run's config.yml"
        )
    from semsplat_ns.data.points import load_or_triangulate_points

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
