"""SIFT matching of view pairs with known cameras (data/matching.py): the mutual nearest-neighbour and ratio tests,
the Sampson distance, and whole pairs of synthetic views whose true matches are known."""

from __future__ import annotations

import numpy as np
import torch

from semsplat_ns.data.matching import (
    DESCRIPTOR_NORM,
    MatchTests,
    fundamental_matrix,
    match_pairs,
    mutual_nearest,
    sampson_distance,
)
from tests.conftest import look_at_opencv


def _descriptors(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random SIFT-like descriptors: non-negative, L2 norm ~512, uint8 [count, 128]."""
    values = rng.random((count, 128)) ** 4  # peaky, like SIFT histograms
    values *= DESCRIPTOR_NORM / np.linalg.norm(values, axis=1, keepdims=True)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _noisy(rng: np.random.Generator, descriptors: np.ndarray, noise: float) -> np.ndarray:
    """The same descriptors seen again: perturbed, renormalised to ~512."""
    values = descriptors.astype(np.float64) + rng.normal(0, noise, descriptors.shape).clip(min=0)
    values *= DESCRIPTOR_NORM / np.linalg.norm(values, axis=1, keepdims=True)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _project(K: np.ndarray, c2w: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Pixels [P, 2] of world points [P, 3]."""
    w2c = np.linalg.inv(c2w)
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]  # [P, 3]
    pixels = cam @ K.T  # [P, 3]
    return pixels[:, :2] / pixels[:, 2:]


def test_mutual_nearest_finds_the_same_features_and_drops_ambiguous_ones():
    rng = np.random.default_rng(0)
    first = _descriptors(rng, 200)  # [200, 128]
    order = rng.permutation(200)
    second = _noisy(rng, first[order], noise=2.0)  # view 2 sees every feature of view 1, shuffled
    # feature 0 of view 1 gets a twin in view 2 (repeated texture): two equally near neighbours fail the ratio test
    twin = int(np.flatnonzero(order == 0)[0])
    second = np.concatenate([second, second[twin : twin + 1]])  # [201, 128]
    nearest, is_match = mutual_nearest(torch.from_numpy(first), torch.from_numpy(second), MatchTests())
    truth = np.argsort(order)  # feature i of view 1 is feature truth[i] of view 2
    nearest, is_match = nearest.numpy(), is_match.numpy()
    assert not is_match[0]
    assert is_match[1:].all()
    np.testing.assert_array_equal(nearest[1:], truth[1:])

    # unrelated descriptors are farther apart than max_distance allows: no match at all
    unrelated = _descriptors(np.random.default_rng(1), 150)
    _, is_match = mutual_nearest(torch.from_numpy(first), torch.from_numpy(unrelated), MatchTests(max_distance=0.3))
    assert not is_match.any()


def test_mutual_nearest_keeps_only_matches_that_are_nearest_both_ways():
    rng = np.random.default_rng(2)
    first = _descriptors(rng, 3)
    # view 2 holds one feature close to first[0]; first[1] is a noisier copy of first[0]: both find the same
    # nearest in view 2, and only the nearer of the two (feature 0) is its nearest back
    second = _noisy(rng, first[:1], noise=1.0)  # [1, 128]
    first[1] = _noisy(rng, first[:1], noise=6.0)[0]
    nearest, is_match = mutual_nearest(torch.from_numpy(first), torch.from_numpy(second), MatchTests(max_ratio=1.0))
    assert nearest.tolist() == [0, 0, 0]
    assert is_match.tolist() == [True, False, False]
    # a view without features matches nothing
    nearest, is_match = mutual_nearest(torch.from_numpy(first), torch.zeros(0, 128, dtype=torch.uint8), MatchTests())
    assert nearest.shape == (3,) and not is_match.any()


def test_sampson_distance_is_zero_on_true_correspondences_and_grows_off_the_epipolar_line():
    rng = np.random.default_rng(3)
    K = np.array([[500.0, 0, 256], [0, 500.0, 256], [0, 0, 1]])
    c2w1 = look_at_opencv(np.array([0.0, -3.0, 2.0]), np.zeros(3))
    c2w2 = look_at_opencv(np.array([1.5, -2.5, 2.2]), np.zeros(3))
    xyz = rng.uniform(-0.8, 0.8, (50, 3))  # [50, 3]
    pixels1, pixels2 = _project(K, c2w1, xyz), _project(K, c2w2, xyz)
    F = torch.from_numpy(fundamental_matrix(K, K, c2w1, c2w2))
    on_line = sampson_distance(F, torch.from_numpy(pixels1), torch.from_numpy(pixels2))
    assert on_line.max() < 1e-6
    # moved along the normal of its epipolar line by 3 px, a point is ~3 px off (Sampson: to first order)
    line = torch.cat([torch.from_numpy(pixels1), torch.ones(50, 1, dtype=torch.float64)], dim=1) @ F.T  # [50, 3]
    normal = line[:, :2] / line[:, :2].norm(dim=1, keepdim=True)  # [50, 2]
    moved = sampson_distance(F, torch.from_numpy(pixels1), torch.from_numpy(pixels2) + 3.0 * normal)
    assert (moved > 1.4).all() and (moved < 3.1).all()


def test_match_pairs_keeps_true_matches_and_drops_those_off_the_known_geometry():
    rng = np.random.default_rng(4)
    K = np.array([[500.0, 0, 256], [0, 500.0, 256], [0, 0, 1]])
    Ks = np.stack([K, K, K])
    c2ws = np.stack(
        [look_at_opencv(np.array(c), np.zeros(3)) for c in ([0.0, -3.0, 2.0], [1.5, -2.5, 2.2], [-1.5, -2.5, 2.2])]
    )
    xyz = rng.uniform(-0.8, 0.8, (300, 3))  # [300, 3]: every view sees every point
    features = _descriptors(rng, 300)  # one descriptor per 3D point
    descriptors, keypoints, orders = [], [], []
    for view in range(3):
        order = rng.permutation(300)  # each view lists its features in its own order
        pixels = _project(K, c2ws[view], xyz)[order] + rng.normal(0, 0.3, (300, 2))  # [300, 2]
        view_descriptors = _noisy(rng, features[order], noise=2.0)
        if view == 2:
            # the first 40 features of view 2 look like points they are not (repeated texture): same descriptor,
            # pixel of another point, so they break the epipolar geometry
            pixels[:40] = pixels[40:80]
        descriptors.append(view_descriptors)
        keypoints.append(pixels)
        orders.append(order)
    pairs = [(0, 1), (0, 2), (1, 2)]
    advanced = []
    matches = match_pairs(
        [torch.from_numpy(d) for d in descriptors],
        [torch.from_numpy(k) for k in keypoints],
        pairs,
        Ks,
        c2ws,
        device=torch.device("cpu"),
        on_pair=advanced.append,
    )
    assert sum(advanced) == 3 and [m.dtype for m in matches] == [np.uint32] * 3
    wrong = set(orders[2][:40].tolist())  # the 3D points whose pixels view 2 got wrong
    for (i, j), pair_matches in zip(pairs, matches):
        point_i = orders[i][pair_matches[:, 0]]  # the 3D point of each match, seen from view i
        point_j = orders[j][pair_matches[:, 1]]
        np.testing.assert_array_equal(point_i, point_j)  # every kept match is a true one
        expected = 300 - (len(wrong) if j == 2 else 0)
        assert len(pair_matches) >= expected - 3, (i, j, len(pair_matches))  # nearly all the true ones are kept
        if j == 2:
            # a misplaced feature survives only where the other point's pixel happens to lie within 4 px of the
            # epipolar line (a band a few % of the image wide)
            assert len(set(point_j.tolist()) & wrong) <= 4, sorted(set(point_j.tolist()) & wrong)
    # without the epipolar test the misplaced features are matched as well: their descriptors are right
    unverified = match_pairs(
        [torch.from_numpy(d) for d in descriptors],
        [torch.from_numpy(k) for k in keypoints],
        [(0, 2)],
        Ks,
        c2ws,
        MatchTests(max_epipolar_error=float("inf")),
        device=torch.device("cpu"),
    )[0]
    assert len(set(orders[2][unverified[:, 1]].tolist()) & wrong) >= 36
