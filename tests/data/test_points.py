"""Seed points (data/points.py: PLY cache I/O) and their triangulation (data/triangulation.py: input checks,
view pairing, real pycolmap triangulation on townA)."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semsplat_ns.data import points
from semsplat_ns.data.points import (
    FewPointsWarning,
    PointsFileError,
    load_or_triangulate_points,
    read_points_ply,
    write_points_ply,
)
from semsplat_ns.data.triangulation import (
    PointsInputError,
    TriangulationOptions,
    _collect,
    resolve_matcher,
    select_image_pairs,
    triangulate,
)


def _read_matrix(path: Path) -> np.ndarray:
    return np.loadtxt(path).reshape(4, 4)  # [4, 4]


def _downscaled_views(town_a: Path, folder: Path, stems: list[str], size: int = 256):
    """Half-size copies of townA train views with K scaled to match (corner-origin pixels: K scales exactly)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, Ks, c2ws = [], [], []
    for stem in stems:
        with Image.open(town_a / "train" / "color" / f"{stem}.jpg") as photo:
            scale = size / photo.width
            photo.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(folder / f"{stem}.png")
        K = _read_matrix(town_a / "train" / "intrinsics" / f"{stem}.txt")[:3, :3].copy()  # [3, 3]
        K[:2] *= scale
        paths.append(folder / f"{stem}.png")
        Ks.append(K)
        c2ws.append(_read_matrix(town_a / "train" / "pose" / f"{stem}.txt"))
    return paths, np.stack(Ks), np.stack(c2ws)  # [N, 3, 3], [N, 4, 4]


def _train_stems(town_a: Path) -> list[str]:
    return sorted(path.stem for path in (town_a / "train" / "color").glob("*.jpg"))


# ---------------------------------------------------------------- PLY I/O


def test_ply_round_trip_keeps_points_colours_and_comment(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(57, 3)).astype(np.float32)  # [P, 3]
    rgb = rng.integers(0, 256, size=(57, 3)).astype(np.uint8)  # [P, 3]
    path = tmp_path / "sparse" / "points3D.ply"
    write_points_ply(path, xyz, rgb, comment="semsplat-points key=abc123")
    loaded = read_points_ply(path)
    np.testing.assert_array_equal(loaded.xyz, xyz)
    np.testing.assert_array_equal(loaded.rgb, rgb)
    assert loaded.xyz.dtype == np.float32 and loaded.rgb.dtype == np.uint8
    assert "semsplat-points key=abc123" in loaded.comments
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["points3D.ply"]  # no temp file left behind


def test_empty_point_set_round_trips(tmp_path):
    path = tmp_path / "points3D.ply"
    write_points_ply(path, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    loaded = read_points_ply(path)
    assert loaded.xyz.shape == (0, 3) and loaded.rgb.shape == (0, 3)


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "points3D.ply"
    write_points_ply(path, np.ones((3, 3), np.float32), np.full((3, 3), 7, np.uint8), comment="first")
    before = path.read_bytes()

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_points_ply(path, np.zeros((5, 3), np.float32), np.zeros((5, 3), np.uint8), comment="second")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points3D.ply"]


def test_ascii_ply_with_extra_properties_is_read(tmp_path):
    path = tmp_path / "ascii.ply"
    path.write_text(
        "ply\nformat ascii 1.0\ncomment made by hand\nelement vertex 2\nproperty float x\n"
        "property float y\nproperty float z\nproperty float nx\nproperty uchar red\n"
        "property uchar green\nproperty uchar blue\nend_header\n"
        "1 2 3 0 10 20 30\n-1.5 0 0.25 0 255 0 1\n"
    )
    loaded = read_points_ply(path)
    np.testing.assert_allclose(loaded.xyz, [[1, 2, 3], [-1.5, 0, 0.25]])
    np.testing.assert_array_equal(loaded.rgb, [[10, 20, 30], [255, 0, 1]])
    assert loaded.comments == ["made by hand"]


def test_bad_ply_files_raise_one_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"\x00\x01not a ply")
    with pytest.raises(PointsFileError, match="garbage.ply"):
        read_points_ply(garbage)
    no_colour = tmp_path / "no_colour.ply"
    no_colour.write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n"
    )
    with pytest.raises(PointsFileError, match=r"no_colour.ply.*red, green, blue"):
        read_points_ply(no_colour)
    with pytest.raises(PointsFileError, match="missing.ply"):
        read_points_ply(tmp_path / "missing.ply")
    assert issubclass(PointsFileError, ValueError)


# ---------------------------------------------------------------- inputs and pairing


def _blank_views(folder: Path, count: int, size: int = 64):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        Image.fromarray(np.full((size, size, 3), 40 * index, np.uint8)).save(folder / f"{index:06d}.png")
        paths.append(folder / f"{index:06d}.png")
    K = np.array([[60.0, 0, size / 2], [0, 60.0, size / 2], [0, 0, 1]])  # [3, 3]
    c2ws = np.repeat(np.eye(4)[None], count, axis=0)  # [N, 4, 4]
    c2ws[:, 0, 3] = np.arange(count)
    return paths, np.repeat(K[None], count, axis=0), c2ws


def test_bad_inputs_raise_one_clear_error(tmp_path):
    paths, Ks, c2ws = _blank_views(tmp_path / "views", 3)
    with pytest.raises(PointsInputError, match=r"Ks must be \[3, 3, 3\]"):
        triangulate(paths, Ks[:2], c2ws)
    with pytest.raises(PointsInputError, match="at least 2 views"):
        triangulate(paths[:1], Ks[:1], c2ws[:1])
    with pytest.raises(PointsInputError, match="nowhere.png: image not found"):
        triangulate(paths[:2] + [tmp_path / "nowhere.png"], Ks, c2ws)
    big_K = Ks.copy()
    big_K[1, :2, 2] = 256.0  # a K meant for a 512x512 image
    with pytest.raises(PointsInputError, match=r"000001.png: principal point .* outside the 64x64 image"):
        triangulate(paths, big_K, c2ws)
    sheared = c2ws.copy()
    sheared[2, 0, 1] = 0.3
    with pytest.raises(PointsInputError, match=r"000002.png: pose \(view 2\) is not a rigid"):
        triangulate(paths, Ks, sheared)
    with pytest.raises(PointsInputError, match="ground-truth"):
        load_or_triangulate_points(paths, Ks, c2ws, tmp_path / "train" / "rgb" / "points3D.ply")


def test_pairs_come_from_nearest_cameras_and_close_an_orbit():
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    c2ws = np.repeat(np.eye(4)[None], 12, axis=0)  # [12, 4, 4]
    c2ws[:, 0, 3], c2ws[:, 1, 3] = np.cos(angles), np.sin(angles)
    pairs = select_image_pairs(c2ws, num_neighbors=2)
    assert pairs == sorted({(min(i, (i + 1) % 12), max(i, (i + 1) % 12)) for i in range(12)})
    assert (0, 11) in pairs  # the orbit's seam is matched
    assert len(select_image_pairs(c2ws[:4], num_neighbors=10)) == 6  # small N: every pair once


def test_auto_matcher_is_torch_on_cuda_and_colmap_elsewhere(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_matcher("auto") == "torch"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_matcher("auto") == "colmap"
    assert resolve_matcher("torch") == "torch" and resolve_matcher("colmap") == "colmap"
    with pytest.raises(ValueError, match="unknown matcher 'flann'; one of auto, torch, colmap"):
        resolve_matcher("flann")


def test_points_are_read_back_from_colmaps_binary_files(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    reconstruction = pycolmap.Reconstruction()
    names = ["b.png", "a.png"]  # view order differs from the images' ids
    for image_id, name in ((1, "a.png"), (2, "b.png")):
        camera = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50.0, 50.0, 32.0, 24.0])
        camera.camera_id = image_id
        reconstruction.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=name, camera_id=image_id, image_id=image_id)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(np.array([k + 0.5, 2.0 * k])) for k in range(5)])
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d())
    # point A: seen in both images (track 2); point B: in one only (dropped by min_track_length 2)
    track_a = pycolmap.Track()
    track_a.add_element(1, 3)
    track_a.add_element(2, 0)
    id_a = reconstruction.add_point3D(np.array([1.0, 2.0, 3.0]), track_a, np.array([10, 20, 30], dtype=np.uint8))
    track_b = pycolmap.Track()
    track_b.add_element(2, 4)
    reconstruction.add_point3D(np.array([4.0, 5.0, 6.0]), track_b, np.array([1, 2, 3], dtype=np.uint8))
    reconstruction.point3D(id_a).error = 0.25
    result = _collect(reconstruction, tmp_path / "points", names, TriangulationOptions())
    np.testing.assert_allclose(result.xyz, [[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(result.rgb, [[10, 20, 30]])
    np.testing.assert_allclose(result.errors, [0.25])
    observations = sorted(zip(result.obs_point.tolist(), result.obs_image.tolist(), result.obs_xy.tolist()))
    # image 1 ("a.png") is view 1 and saw point A at its 2D point 3; image 2 ("b.png"), view 0, at its 2D point 0
    assert observations == [(0, 0, [0.5, 0.0]), (0, 1, [3.5, 6.0])]


# ---------------------------------------------------------------- real triangulation on townA


@pytest.fixture(scope="module")
def town_a(irt_scene):
    return irt_scene("townA")


@pytest.fixture(scope="module")
def town_a_views(town_a, tmp_path_factory):
    stems = _train_stems(town_a)[:20]
    return _downscaled_views(town_a, tmp_path_factory.mktemp("townA_256") / "color", stems)


@pytest.fixture(scope="module")
def town_a_triangulation(town_a_views):
    paths, Ks, c2ws = town_a_views
    return triangulate(paths, Ks, c2ws, TriangulationOptions())


def test_town_a_triangulates_thousands_of_clean_points(town_a_triangulation):
    result = town_a_triangulation
    assert result.num_points > 2000, result.num_points
    assert result.xyz.dtype == np.float32 and result.rgb.dtype == np.uint8
    assert result.track_lengths().min() >= 2
    assert result.errors.max() < 2.0
    # Colours come from the photos: a town render is not one flat colour.
    assert result.rgb.astype(float).std(axis=0).min() > 10


def test_points_project_onto_their_observed_features(town_a_views, town_a_triangulation):
    _, Ks, c2ws = town_a_views
    result = town_a_triangulation
    world_from_cam = c2ws[result.obs_image]  # [M, 4, 4]
    cam_from_world = np.linalg.inv(world_from_cam)  # [M, 4, 4]
    xyz = result.xyz[result.obs_point].astype(np.float64)  # [M, 3]
    in_cam = np.einsum("mij,mj->mi", cam_from_world[:, :3, :3], xyz) + cam_from_world[:, :3, 3]  # [M, 3]
    assert (in_cam[:, 2] > 0).all()  # in front of every camera that sees it (OpenCV: +z forward)
    pixels = np.einsum("mij,mj->mi", Ks[result.obs_image], in_cam)  # [M, 3]
    pixels = pixels[:, :2] / pixels[:, 2:]  # [M, 2]
    distance = np.linalg.norm(pixels - result.obs_xy, axis=1)  # [M]
    assert np.median(distance) < 0.5
    assert (distance < 1.0).mean() > 0.85
    # Points with a small error land within 1 px of their feature in every view that sees them (>= 2 views).
    good = np.flatnonzero(result.errors < 0.3)  # [G]
    assert len(good) > 500
    assert (distance[np.isin(result.obs_point, good)] < 1.0).mean() > 0.97


def test_torch_matcher_triangulates_the_points_pycolmaps_matcher_does(town_a_views, town_a_triangulation):
    paths, Ks, c2ws = town_a_views
    colmap = town_a_triangulation  # the default matcher on a CPU machine
    result = triangulate(paths, Ks, c2ws, TriangulationOptions(matcher="torch"))
    assert abs(result.num_points - colmap.num_points) < 0.1 * colmap.num_points, (result.num_points, colmap.num_points)
    assert result.errors.max() < 2.0 and np.median(result.errors) < 1.5 * np.median(colmap.errors)
    # the same points: nine in ten lie within 1e-5 scene units (~1.6 mm in townA) of one of pycolmap's (measured:
    # more than 95 % at 0, where both matchers kept the same observations)
    chunks = np.array_split(result.xyz, 50)
    nearest = np.concatenate(
        [np.linalg.norm(colmap.xyz[None] - chunk[:, None], axis=-1).min(axis=1) for chunk in chunks]
    )
    assert (nearest < 1e-5).mean() > 0.9, np.quantile(nearest, [0.5, 0.9])


def test_points_lie_where_the_town_is(town_a, town_a_triangulation):
    meta = json.loads((town_a / "meta.json").read_text())
    scale = meta["scale"]
    radius = meta["town_radius_m"] * scale  # ~1: the region of interest is the unit sphere
    tallest = meta["max_building_h_m"] * scale
    xyz = town_a_triangulation.xyz.astype(np.float64)  # [P, 3]
    z = xyz[:, 2]  # [P]
    distance_from_axis = np.linalg.norm(xyz[:, :2], axis=1)  # [P]
    assert abs(np.median(z)) < 0.05  # most features are on the ground (z = 0)
    assert ((z > -0.05) & (z < tallest + 0.05)).mean() > 0.98  # between the ground and the tallest roof
    # The town fills the unit disc; the views also see some ground beyond it, but not far beyond.
    assert (distance_from_axis < 1.1 * radius).mean() > 0.85
    assert (distance_from_axis < 2.5 * radius).all()
    # Roofs exist: some points stand well above the ground, as high as buildings do.
    assert (z > 0.3 * tallest).sum() > 50


def test_cache_is_reused_until_a_pose_changes(town_a, tmp_path):
    paths, Ks, c2ws = _downscaled_views(town_a, tmp_path / "color", _train_stems(town_a)[10:18])
    cache = tmp_path / "sparse" / "points3D.ply"
    first = load_or_triangulate_points(paths, Ks, c2ws, cache, min_points=100)
    assert first is not None and len(first[0]) > 500
    stamp = cache.stat().st_mtime_ns
    key_line = [line for line in read_points_ply(cache).comments if line.startswith(points.CACHE_KEY_PREFIX)]
    assert len(key_line) == 1

    started = time.perf_counter()
    second = load_or_triangulate_points(paths, Ks, c2ws, cache, min_points=100)
    assert time.perf_counter() - started < 1.0
    assert second is not None
    assert cache.stat().st_mtime_ns == stamp  # not re-triangulated, not rewritten
    np.testing.assert_array_equal(second[0], first[0])
    np.testing.assert_array_equal(second[1], first[1])

    # Too few points for the caller: one warning, None, and the cache is still not rewritten.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_or_triangulate_points(paths, Ks, c2ws, cache, min_points=10**9) is None
    few = [w for w in caught if issubclass(w.category, FewPointsWarning)]
    assert len(few) == 1 and "random initialisation" in str(few[0].message)
    assert cache.stat().st_mtime_ns == stamp

    moved = c2ws.copy()
    moved[3, :3, 3] += 0.002  # one camera moved by ~30 cm
    third = load_or_triangulate_points(paths, Ks, moved, cache, min_points=100)
    assert third is not None
    new_key = [line for line in read_points_ply(cache).comments if line.startswith(points.CACHE_KEY_PREFIX)]
    assert new_key != key_line
    assert cache.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in cache.parent.iterdir()) == ["points3D.ply"]
