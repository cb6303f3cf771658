"""The aerial camera orbit around the demo town, like the real IRT scenes.

Cameras fly a full 360 degree orbit at 35-50 degree pitch with a small altitude jitter, looking at the town
centre. Poses are camera-to-world with OpenCV axes (x right, y down, z forward); K has pixel centres at
``+0.5`` (the ray of pixel ``(u, v)`` passes through ``(u + 0.5, v + 0.5)``).
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

__all__ = ["HFOV_DEG", "orbit_cameras"]

HFOV_DEG = 50.0  # horizontal field of view of every camera
PITCH_RANGE_DEG = (35.0, 50.0)  # lowest and steepest pitch below the horizon
ALTITUDE = 0.75  # mean camera height above the ground, world units


def orbit_cameras(
    n_views: int, resolution: int, seed: int = 0, hfov_deg: float = HFOV_DEG
) -> Tuple[np.ndarray, np.ndarray]:
    """Intrinsics and camera-to-world poses of an aerial orbit around the town centre.

    Args:
        n_views: Number of frames; frame i sits at azimuth ``az0 + 360 * i / n_views`` degrees.
        resolution: Image width and height in pixels.
        seed: Seed of the start azimuth and the altitude / pitch / target jitter.
        hfov_deg: Horizontal field of view in degrees.

    Returns:
        K ``[3, 3]`` (fx = fy, cx = cy = resolution / 2) and c2w ``[n_views, 4, 4]`` (OpenCV axes).
    """
    rng = np.random.default_rng([seed, 1])
    focal = 0.5 * resolution / math.tan(math.radians(hfov_deg) / 2)
    K = np.array([[focal, 0, resolution / 2], [0, focal, resolution / 2], [0, 0, 1.0]])  # [3, 3]
    az0, phase_pitch, phase_alt = rng.uniform(0, 2 * math.pi, 3)
    az = az0 + 2 * math.pi * np.arange(n_views) / n_views  # [V]
    lo, hi = PITCH_RANGE_DEG
    pitch = (lo + hi) / 2 + 5.0 * np.sin(az + phase_pitch) + rng.uniform(-1.5, 1.5, n_views)  # [V] degrees
    pitch = np.radians(np.clip(pitch, lo, hi))  # [V]
    altitude = ALTITUDE * (1 + 0.06 * np.sin(2 * az + phase_alt) + rng.uniform(-0.02, 0.02, n_views))  # [V]
    target = np.zeros((n_views, 3))  # [V, 3]
    target[:, :2] = rng.uniform(-0.04, 0.04, (n_views, 2))
    ground_range = altitude / np.tan(pitch)  # [V] horizontal distance camera -> target
    centre = target + np.stack([ground_range * np.cos(az), ground_range * np.sin(az), altitude], axis=1)  # [V, 3]
    forward = target - centre  # [V, 3]
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))  # [V, 3]
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)  # [V, 3]
    c2w = np.tile(np.eye(4), (n_views, 1, 1))  # [V, 4, 4]
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, centre
    return K, c2w
