"""Depth from points gives the maps the code gave before its numpy rewrite (z-buffer as shifted minima, workers
without torch), bit for bit, on real points: a fifth of townA's triangulated points and three of its views at 128²."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semsplat_ns.geometry.depth import PointsDepthSettings, depth_from_points, depth_maps_from_points

SAVED = Path(__file__).resolve().parents[1] / "data" / "depth_from_points_townA.npz"
"""points float32 [P, 3], Ks [3, 3, 3] (townA's, scaled to 128²), c2ws [3, 4, 4], depths float32 [3, 128, 128]:
made by depth_from_points at 76868a3, the scatter z-buffer in torch, before the rewrite."""


def test_depth_from_points_equals_the_saved_maps_bit_for_bit():
    saved = np.load(SAVED)
    points = torch.from_numpy(saved["points"])  # [P, 3]; widened to float64 inside, as at 76868a3
    for K, c2w, expected in zip(saved["Ks"], saved["c2ws"], saved["depths"]):
        depth = depth_from_points(points, torch.from_numpy(K), torch.from_numpy(c2w), 128, 128)  # [H, W]
        assert depth.dtype == torch.float32
        # Every step keeps its float64 operations in the old order (minima are exact), so nothing may move.
        assert np.array_equal(depth.numpy(), expected)
        assert (expected > 0).mean() > 0.5  # the maps are mostly known: the comparison covers the interpolation


def _visible_by_scatter(u: np.ndarray, v: np.ndarray, z: np.ndarray, size: int, radius: float) -> np.ndarray:
    """The z-buffer as it was: every point scattered into each pixel of its disc, then its own pixel read back."""
    reach = int(np.floor(radius))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]  # [S, S]
    inside = dx**2 + dy**2 <= radius**2 + 1e-9
    cols = np.floor(u).astype(np.int64)[:, None] + dx[inside]  # [P, O]
    rows = np.floor(v).astype(np.int64)[:, None] + dy[inside]  # [P, O]
    zs = np.broadcast_to(z[:, None], cols.shape)  # [P, O]
    hit = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    zbuffer = np.full(size * size, np.inf)  # [H*W]
    np.minimum.at(zbuffer, rows[hit] * size + cols[hit], zs[hit])
    own_col, own_row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)  # [P]
    in_image = (own_col >= 0) & (own_col < size) & (own_row >= 0) & (own_row < size)
    own = zbuffer[own_row.clip(0, size - 1) * size + own_col.clip(0, size - 1)]  # [P]
    return ~in_image | (z <= own * 1.02)


def test_visibility_by_shifted_minima_equals_the_scatter_at_other_radii():
    from semsplat_ns.geometry.depth import _project, _visible

    saved = np.load(SAVED)
    points = saved["points"].astype(np.float64)  # [P, 3]
    u, v, z = _project(points, saved["Ks"][1], saved["c2ws"][1])  # [P] each
    front = z > 1e-9
    u, v, z = u[front], v[front], z[front]
    for radius in (0.5, 1.0, 2.5, 3.7):
        settings = PointsDepthSettings(visibility_radius=radius)
        expected = _visible_by_scatter(u, v, z, 128, radius)
        assert np.array_equal(_visible(u, v, z, 128, 128, settings), expected)
        assert 0 < expected.sum() < len(z)  # some points hidden, some not


def test_worker_task_equals_depth_from_points():
    saved = np.load(SAVED)
    points = saved["points"].astype(np.float64)  # [P, 3]
    settings = PointsDepthSettings(visibility_radius=3.5, outlier_tolerance=0.05)
    views = [(7 + i, K, c2w, 128, 96) for i, (K, c2w) in enumerate(zip(saved["Ks"], saved["c2ws"]))]
    maps = depth_maps_from_points(points, settings, views)
    assert list(maps) == [7, 8, 9]
    for i, K, c2w, height, width in views:
        alone = depth_from_points(
            torch.from_numpy(points), torch.from_numpy(K), torch.from_numpy(c2w), height, width, settings
        )
        assert maps[i].shape == (height, width) and np.array_equal(maps[i], alone.numpy())
