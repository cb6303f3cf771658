"""Pinhole camera geometry shared by depth providers and visibility: pixel <-> world.

Conventions (the IRT layout's): OpenCV camera axes, pixel centres at +0.5, z-depth along the camera's
z axis (not the ray length).
"""

from __future__ import annotations

from typing import Tuple

import torch


def backproject_depth(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """World points of every pixel centre of a z-depth map.

    Args:
        depth: z-depth [H, W] in the camera frame (the OpenCV z axis, not the ray length).
        K: Intrinsics [3, 3]; pixel (row r, col c) has its centre at (c + 0.5, r + 0.5).
        c2w: Camera-to-world [4, 4], OpenCV axes.

    Returns:
        float64 world points [H, W, 3].
    """
    height, width = depth.shape
    K = K.to(device=depth.device, dtype=torch.float64)
    c2w = c2w.to(device=depth.device, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64, device=depth.device) + 0.5  # [W]
    rows = torch.arange(height, dtype=torch.float64, device=depth.device) + 0.5  # [H]
    x = (cols[None, :] - K[0, 2]) / K[0, 0]  # [1, W]
    y = (rows[:, None] - K[1, 2]) / K[1, 1]  # [H, 1]
    z = depth.to(torch.float64)  # [H, W]
    points_cam = torch.stack([x * z, y * z, z], dim=-1)  # [H, W, 3]
    return points_cam @ c2w[:3, :3].T + c2w[:3, 3]  # [H, W, 3]


def project_points(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Projects world points into a camera.

    Args:
        points: World points [..., 3].
        K: Intrinsics [3, 3].
        c2w: Camera-to-world [4, 4], OpenCV axes.

    Returns:
        Pixel coordinates [..., 2] (x right, y down; pixel centres at +0.5) and camera z [...].
        Points with z <= 0 get meaningless coordinates; test z before using them.
    """
    u, v, z = project_points_uvz(points, K, c2w)  # [...] each
    return torch.stack([u, v], dim=-1), z


def project_points_uvz(
    points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`project_points` with the pixel coordinates apart (no stacked copy): u [...], v [...], z [...]."""
    K = K.to(device=points.device, dtype=torch.float64)
    c2w = c2w.to(device=points.device, dtype=torch.float64)
    rotation = c2w[:3, :3]  # [3, 3]
    points_cam = (points.to(torch.float64) - c2w[:3, 3]) @ rotation  # [..., 3] = R^T (p - t)
    z = points_cam[..., 2]  # [...]
    safe_z = torch.where(z > 0, z, torch.ones_like(z))  # [...]
    u = K[0, 0] * points_cam[..., 0] / safe_z + K[0, 2]  # [...]
    v = K[1, 1] * points_cam[..., 1] / safe_z + K[1, 2]  # [...]
    return u, v, z
