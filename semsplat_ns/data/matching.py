"""SIFT matching of view pairs whose cameras are known, in torch (on the GPU when there is one).

pycolmap's matcher (CPU only in its wheel) pairs each feature with its nearest neighbour in the other view when
both are each other's nearest and pass Lowe's ratio test, then verifies each pair by RANSAC of a two-view model.
Here the same tests run as one matrix product per pair, and the verification needs no RANSAC: the cameras are
known, so a match is kept when its Sampson distance to the pair's true epipolar geometry is small.

Descriptors are COLMAP's: uint8 SIFT vectors of L2 norm ~512. Their integer dot products stay below 2**24, so
float32 sums them exactly on any device (with TF32 too: uint8 values are exact in its 10-bit mantissa), and the
same descriptors give the same matches on the CPU and on a GPU up to ties between equally near neighbours.
On townA (90 views of 512x512, 392 pairs) the points triangulated from these matches are the ones pycolmap's own
matching gives (39.7k either way, mean error 0.336 against 0.333 px, nine in ten at distance 0 from one of those:
benchmarks/results/triangulation_variants.json). The 392 pairs took 0.9 s on an H200 against 2.7 s for pycolmap's
matcher on 16 cores, but 24 s against 10 s on the 2-core CPU box: the CPU keeps pycolmap's matcher by default
(:attr:`~semsplat_ns.data.triangulation.TriangulationOptions.matcher`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

DESCRIPTOR_NORM = 512.0
"""L2 norm of COLMAP's uint8 SIFT descriptors (unit vectors scaled by 512, then rounded)."""


@dataclass(frozen=True)
class MatchTests:
    """The tests a match must pass; the first two are pycolmap's SIFT matching defaults."""

    max_ratio: float = 0.8
    """Lowe's ratio test on descriptor angles: nearest < max_ratio * second nearest, in both directions."""
    max_distance: float = 0.7
    """Largest angle (radians) between the descriptors of a match."""
    max_epipolar_error: float = 4.0
    """Largest Sampson distance (pixels) of a match from the epipolar geometry of the pair's known cameras
    (pycolmap's RANSAC verification keeps inliers within the same 4 px of the model it estimates)."""


def fundamental_matrix(K1: np.ndarray, K2: np.ndarray, c2w1: np.ndarray, c2w2: np.ndarray) -> np.ndarray:
    """Fundamental matrix F of two known pinhole cameras: ``x2^T F x1 = 0`` for pixels of one 3D point.

    Args:
        K1: Intrinsics of view 1 [3, 3].
        K2: Intrinsics of view 2 [3, 3].
        c2w1: Camera-to-world pose of view 1 [4, 4], OpenCV axes.
        c2w2: Camera-to-world pose of view 2 [4, 4], OpenCV axes.

    Returns:
        F [3, 3] (float64), unnormalised.
    """
    cam2_from_cam1 = np.linalg.inv(c2w2) @ c2w1  # [4, 4]
    essential = _cross_matrix(cam2_from_cam1[:3, 3]) @ cam2_from_cam1[:3, :3]  # [3, 3]
    return np.linalg.inv(K2).T @ essential @ np.linalg.inv(K1)  # [3, 3]


def _cross_matrix(vector: np.ndarray) -> np.ndarray:
    """The matrix [v]x with [v]x w = v x w, [3, 3]."""
    x, y, z = vector
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def mutual_nearest(descriptors1: Tensor, descriptors2: Tensor, tests: MatchTests) -> Tuple[Tensor, Tensor]:
    """For every feature of view 1, its nearest feature in view 2, and whether the pair is a match: each is the
    other's nearest, and both pass the distance and ratio tests (pycolmap's cross-checked SIFT matching).

    Args:
        descriptors1: uint8 SIFT descriptors of view 1 [M1, 128].
        descriptors2: uint8 SIFT descriptors of view 2 [M2, 128], on the same device.
        tests: The distance and ratio thresholds.

    Returns:
        (nearest int64 [M1]: index into view 2, is_match bool [M1]).
    """
    assert descriptors1.dim() == 2 and descriptors2.dim() == 2, "descriptors must be [M, D]"
    count1, count2 = descriptors1.shape[0], descriptors2.shape[0]
    device = descriptors1.device
    if count1 == 0 or count2 == 0:
        return torch.zeros(count1, dtype=torch.int64, device=device), torch.zeros(
            count1, dtype=torch.bool, device=device
        )
    dots = descriptors1.float() @ descriptors2.float().T  # [M1, M2], exact integers
    row_best, row_second, nearest = _two_nearest(dots, dim=1)  # [M1] each
    col_best, col_second, nearest_back = _two_nearest(dots, dim=0)  # [M2] each
    row_ok = _passes(row_best, row_second, tests)  # [M1]
    col_ok = _passes(col_best, col_second, tests)  # [M2]
    mutual = nearest_back[nearest] == torch.arange(count1, device=device)  # [M1]
    return nearest, row_ok & col_ok[nearest] & mutual


def _two_nearest(dots: Tensor, dim: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Largest and second largest dot product along ``dim`` and the index of the largest; with a single candidate
    the second is 0 (an orthogonal descriptor, as pycolmap's matcher starts it)."""
    if dots.shape[dim] == 1:
        best, index = dots.max(dim=dim)
        return best, torch.zeros_like(best), index
    values, indices = dots.topk(2, dim=dim)
    if dim == 1:
        return values[:, 0], values[:, 1], indices[:, 0]
    return values[0], values[1], indices[0]


def _passes(best: Tensor, second: Tensor, tests: MatchTests) -> Tensor:
    """The distance and ratio tests on the angles of the nearest and second nearest descriptors."""
    scale = 1.0 / (DESCRIPTOR_NORM * DESCRIPTOR_NORM)
    best_angle = torch.acos(torch.clamp(best * scale, max=1.0))
    second_angle = torch.acos(torch.clamp(second * scale, max=1.0))
    return (best_angle <= tests.max_distance) & (best_angle < tests.max_ratio * second_angle)


def sampson_distance(F: Tensor, points1: Tensor, points2: Tensor) -> Tensor:
    """First-order geometric distance (pixels) of correspondences from the epipolar geometry F.

    Args:
        F: Fundamental matrix [3, 3], ``x2^T F x1 = 0``.
        points1: Pixels in view 1 [M, 2].
        points2: Pixels in view 2 [M, 2].

    Returns:
        Distances [M] (the square root of the Sampson error).
    """
    ones = torch.ones_like(points1[:, :1])
    x1 = torch.cat([points1, ones], dim=1)  # [M, 3]
    x2 = torch.cat([points2, ones], dim=1)  # [M, 3]
    line2 = x1 @ F.T  # [M, 3]: epipolar lines in view 2
    line1 = x2 @ F  # [M, 3]: epipolar lines in view 1
    residual = (x2 * line2).sum(dim=1)  # [M]
    gradient = line2[:, 0] ** 2 + line2[:, 1] ** 2 + line1[:, 0] ** 2 + line1[:, 1] ** 2  # [M]
    return residual.abs() / gradient.clamp_min(1e-30).sqrt()


def match_pairs(
    descriptors: Sequence[Tensor],
    keypoints: Sequence[Tensor],
    pairs: Sequence[Tuple[int, int]],
    Ks: np.ndarray,
    c2ws: np.ndarray,
    tests: MatchTests = MatchTests(),
    device: Optional[torch.device] = None,
    on_pair: Optional[Callable[[int], None]] = None,
) -> List[np.ndarray]:
    """Matches of every pair that pass :func:`mutual_nearest` and lie within ``tests.max_epipolar_error`` of the
    pair's known epipolar geometry.

    Args:
        descriptors: Per view, uint8 SIFT descriptors [M_i, 128] (on any device).
        keypoints: Per view, feature positions [M_i, 2] in pixels (top-left image corner at (0, 0); any device).
        pairs: View index pairs (i, j) to match.
        Ks: Intrinsics [N, 3, 3].
        c2ws: Camera-to-world poses [N, 4, 4], OpenCV axes.
        tests: Match thresholds.
        device: Where to compute; None: CUDA when available, else the CPU.
        on_pair: Called with 1 after each pair is queued (a progress bar's advance).

    Returns:
        Per pair, in order, its matches as uint32 [K, 2] (feature index in view i, in view j).
    """
    assert len(descriptors) == len(keypoints) == len(Ks) == len(c2ws), "one descriptor and keypoint set per view"
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    views_descriptors = [d.to(device) for d in descriptors]  # [M_i, 128] each
    views_keypoints = [k.to(device, torch.float64) for k in keypoints]  # [M_i, 2] each
    Fs = torch.from_numpy(
        np.stack([fundamental_matrix(Ks[i], Ks[j], c2ws[i], c2ws[j]) for i, j in pairs] or [np.eye(3)])
    )
    Fs = Fs.to(device)  # [P, 3, 3]
    # Every pair's masks stay on the device until all are queued: one wait for the device, not one per pair.
    queued: List[Tuple[Tensor, Tensor]] = []
    for index, (i, j) in enumerate(pairs):
        nearest, is_match = mutual_nearest(views_descriptors[i], views_descriptors[j], tests)  # [M_i] each
        if len(nearest):
            distance = sampson_distance(Fs[index], views_keypoints[i], views_keypoints[j][nearest])  # [M_i]
            is_match = is_match & (distance <= tests.max_epipolar_error)
        queued.append((nearest, is_match))
        if on_pair is not None:
            on_pair(1)
    matches = []
    for nearest, is_match in queued:
        kept = torch.nonzero(is_match).squeeze(1)  # [K]
        matches.append(torch.stack([kept, nearest[kept]], dim=1).cpu().numpy().astype(np.uint32))  # [K, 2]
    return matches
