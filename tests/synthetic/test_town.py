"""The procedural demo town: IRT layout, splits, labels, camera conventions, depth, determinism, CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semsplat_ns.data.classes import CARLA8_COLORS, CARLA8_NAMES
from semsplat_ns.scripts.make_scene import entrypoint
from semsplat_ns.synthetic.orbit import orbit_cameras
from semsplat_ns.synthetic.render import render_view
from semsplat_ns.synthetic.scene_writer import make_scene, split_frames
from semsplat_ns.synthetic.town import DemoSceneError, build_town

N_VIEWS, RES, N_LABELLED, SEED = 30, 96, 3, 1
BUILDING, SIDEWALK, VEGETATION, TERRAIN, ROAD = 0, 3, 4, 5, 10


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    return make_scene(root / "town", n_views=N_VIEWS, resolution=RES, n_labelled=N_LABELLED, seed=SEED)


def _meta(scene: Path) -> dict:
    return json.loads((scene / "meta.json").read_text())


def _matrix(path: Path) -> np.ndarray:
    values = np.array(path.read_text().split(), dtype=np.float64)  # [16]
    assert values.shape == (16,), path
    return values.reshape(4, 4)


def _label(path: Path) -> np.ndarray:
    image = np.asarray(Image.open(path))  # [H, W, 3]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, path
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all(), path
    return image[..., 0]


def _cameras(scene: Path) -> dict:
    """stem -> (K [3, 3], c2w [4, 4]) read back from the files."""
    out = {}
    for split in ("train", "test"):
        for pose in (scene / split / "pose").glob("*.txt"):
            K4 = _matrix(scene / split / "intrinsics" / pose.name)
            out[pose.stem] = (K4[:3, :3], _matrix(pose))
    return out


def _project(K: np.ndarray, c2w: np.ndarray, xyz: np.ndarray):
    """Pixel coordinates (u, v) ``[N, 2]`` (pixel centres at +0.5) and camera depth ``[N]`` of ``xyz`` ``[N, 3]``."""
    cam = (xyz - c2w[:3, 3]) @ c2w[:3, :3]  # [N, 3] world -> camera (R^T (x - t))
    uv = (cam[:, :2] / cam[:, 2:3]) * np.diag(K)[:2] + K[:2, 2]  # [N, 2]
    return uv, cam[:, 2]


def test_layout_pairs_by_stem(scene):
    meta = _meta(scene)
    train, test, labelled = meta["train_stems"], meta["test_stems"], meta["labelled_train_stems"]
    assert len(train) + len(test) == N_VIEWS and not set(train) & set(test)
    assert test == ["000005", "000015", "000025"]
    for split, stems in (("train", train), ("test", test)):
        assert sorted(p.stem for p in (scene / split / "color").glob("*.png")) == stems
        assert sorted(p.stem for p in (scene / split / "pose").glob("*.txt")) == stems
        assert sorted(p.stem for p in (scene / split / "intrinsics").glob("*.txt")) == stems
    # labels: only the labelled train stems, every test stem
    assert sorted(p.stem for p in (scene / "train" / "rgb").iterdir()) == labelled
    assert sorted(p.stem for p in (scene / "test" / "rgb").iterdir()) == test
    assert len(labelled) == N_LABELLED and set(labelled) <= set(train)
    assert sorted(p.stem for p in (scene / "gt_all").iterdir()) == sorted(train + test)
    photo = Image.open(scene / "train" / "color" / f"{train[0]}.png")
    assert photo.mode == "RGB" and photo.size == (RES, RES)
    classes = json.loads((scene / "classes.json").read_text())
    assert classes["names"] == list(CARLA8_NAMES) and len(classes["names"]) == 20
    assert classes["colors"][ROAD] == [128, 64, 128] and classes["colors"][BUILDING] == [70, 70, 70]
    assert classes["colors"] == CARLA8_COLORS.tolist()  # the palette of the data side, the one source
    # atomic writes and the temp-folder rename leave nothing behind
    leftovers = [p for p in scene.parent.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_split_spreads_labelled_views_like_the_real_data():
    train, test, labelled = split_frames(100, 3, 10)
    assert test == list(range(5, 100, 10))
    assert labelled == [17, 50, 83]  # what townA / townB use
    assert set(labelled) <= set(train) and len(train) == 90
    _, test, labelled = split_frames(24, 4, 10)
    assert test == [5, 15] and 5 not in labelled and 15 not in labelled
    gaps = np.diff(labelled + [labelled[0] + 24])  # cyclic spacing around the orbit
    assert gaps.min() >= 4 and gaps.max() <= 8
    with pytest.raises(DemoSceneError, match="n_labelled"):
        split_frames(12, 20, 10)
    with pytest.raises(DemoSceneError, match="no test view"):
        split_frames(4, 1, 10)


def test_labels_hold_valid_ids_and_the_main_classes(scene):
    meta = _meta(scene)
    present = set()
    for stem in meta["labelled_train_stems"]:
        label = _label(scene / "train" / "rgb" / f"{stem}.png")
        assert label.shape == (RES, RES) and label.max() < 20
        assert len(np.unique(label)) >= 5, stem
        assert np.array_equal(label, _label(scene / "gt_all" / f"{stem}.png"))
    for stem in meta["test_stems"]:
        label = _label(scene / "test" / "rgb" / f"{stem}.png")
        assert np.array_equal(label, _label(scene / "gt_all" / f"{stem}.png"))
    counts = np.zeros(20, np.int64)
    for path in (scene / "gt_all").iterdir():
        counts += np.bincount(_label(path).reshape(-1), minlength=20)
        present |= set(np.unique(_label(path)).tolist())
    assert {BUILDING, SIDEWALK, VEGETATION, TERRAIN, ROAD} <= present
    assert len(present) >= 8 and max(present) < 20
    freq = counts / counts.sum()
    assert np.allclose(freq, [meta["class_pixel_freq_all_frames"][n] for n in CARLA8_NAMES])
    assert freq[BUILDING] > 0.05 and freq[ROAD] > 0.05 and freq[VEGETATION] > 0.005


def test_poses_and_intrinsics_follow_the_conventions(scene):
    meta = _meta(scene)
    cameras = _cameras(scene)
    assert len(cameras) == N_VIEWS
    for stem, (K, c2w) in cameras.items():
        R = c2w[:3, :3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-6) and np.isclose(np.linalg.det(R), 1.0, atol=1e-6)
        assert np.allclose(c2w[3], [0, 0, 0, 1])
        assert K[0, 0] == K[1, 1] and K[0, 2] == RES / 2 and K[1, 2] == RES / 2
        hfov = np.degrees(2 * np.arctan(RES / 2 / K[0, 0]))
        assert 45 < hfov < 55
        # OpenCV axes: looking down at 35-50 degrees, image x horizontal, camera high above the ground
        pitch = np.degrees(np.arcsin(-R[2, 2]))
        assert 35 - 1e-6 <= pitch <= 50 + 1e-6, stem
        assert abs(R[2, 0]) < 1e-9 and R[2, 1] < 0  # x has no vertical part; y (down) points downwards
        assert 0.6 < c2w[2, 3] < 0.9  # aerial: well above the tallest roof
        # the optical axis passes near the town centre
        t = -c2w[2, 3] / R[2, 2]
        assert np.linalg.norm((c2w[:3, 3] + t * R[:, 2])[:2]) < 0.1
    # a full orbit: azimuths cover the circle
    azimuth = np.sort([np.arctan2(c[1][1, 3], c[1][0, 3]) for c in cameras.values()])
    assert np.diff(np.r_[azimuth, azimuth[0] + 2 * np.pi]).max() < 2 * (2 * np.pi / N_VIEWS)
    # the town is inside the unit sphere
    xyz = np.array([lm["xyz"] for lm in meta["landmarks"]])
    assert (np.linalg.norm(xyz, axis=1) < 1).all()
    town = build_town(SEED)
    assert np.linalg.norm(np.abs(np.stack([town.box_lo, town.box_hi])).max(axis=0), axis=1).max() < 1


def test_roof_landmarks_project_onto_buildings(scene):
    meta = _meta(scene)
    landmarks = {lm["name"]: np.array(lm["xyz"]) for lm in meta["landmarks"]}
    tallest = meta["content"]["tallest_building"]
    centre = landmarks[f"{tallest}_roof_centre"]
    # points on the tallest roof: its centre and 70% of the way towards each corner
    points = np.stack([centre] + [centre + 0.7 * (landmarks[f"{tallest}_roof_corner_{c}"] - centre) for c in range(4)])
    seen, hits, others_seen, others_hit = 0, 0, 0, 0
    for stem, (K, c2w) in _cameras(scene).items():
        label = _label(scene / "gt_all" / f"{stem}.png")
        uv, z = _project(K, c2w, points)
        inside = (z > 0) & (uv >= 0).all(axis=1) & (uv < RES).all(axis=1)
        px = np.floor(uv[inside]).astype(int)
        seen += int(inside.sum())
        hits += int((label[px[:, 1], px[:, 0]] == BUILDING).sum())
        # every roof centre, some hidden behind taller buildings or trees
        names = [n for n in landmarks if n.endswith("_roof_centre")]
        uv, z = _project(K, c2w, np.stack([landmarks[n] for n in names]))
        inside = (z > 0) & (uv >= 0).all(axis=1) & (uv < RES).all(axis=1)
        px = np.floor(uv[inside]).astype(int)
        others_seen += int(inside.sum())
        others_hit += int((label[px[:, 1], px[:, 0]] == BUILDING).sum())
    assert seen >= 20
    assert hits == seen  # nothing stands above the tallest roof
    assert others_seen >= 100 and others_hit / others_seen > 0.85


def test_depth_is_consistent_between_views():
    town = build_town(SEED)
    res = 64
    K, c2w = orbit_cameras(N_VIEWS, res, SEED)
    _, label_a, depth_a = render_view(town, K, c2w[0], res, res, supersample=1)
    _, label_b, depth_b = render_view(town, K, c2w[1], res, res, supersample=1)
    assert np.isfinite(depth_a).all() and (depth_a > 0).all()
    # back-project every pixel centre of A with its depth
    v, u = np.mgrid[0:res, 0:res] + 0.5  # [H, W]
    cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) * depth_a[..., None]
    world = cam.reshape(-1, 3) @ c2w[0][:3, :3].T + c2w[0][:3, 3]  # [H * W, 3]

    def agreement(c2w_b: np.ndarray, depth_map: np.ndarray, label_map: np.ndarray):
        uv, z = _project(K, c2w_b, world)
        # bilinear lookup between the pixel centres around (u, v)
        x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
        inside = (z > 0) & (x >= 0) & (y >= 0) & (x < res - 1) & (y < res - 1)
        x0, y0 = np.floor(x[inside]).astype(int), np.floor(y[inside]).astype(int)
        fx, fy = x[inside] - x0, y[inside] - y0
        d = (depth_map[y0, x0] * (1 - fx) * (1 - fy) + depth_map[y0, x0 + 1] * fx * (1 - fy)
             + depth_map[y0 + 1, x0] * (1 - fx) * fy + depth_map[y0 + 1, x0 + 1] * fx * fy)  # fmt: skip
        match = np.abs(d - z[inside]) < 0.005 * z[inside]
        nearest = label_map[np.round(y[inside]).astype(int), np.round(x[inside]).astype(int)]
        same = nearest == label_a.reshape(-1)[inside]
        return inside.sum(), match.mean(), same[match].mean()

    count, matched, same_label = agreement(c2w[1], depth_b, label_b)
    assert count > 0.6 * res * res
    assert matched > 0.8, matched  # the rest: occluded in B or at depth edges
    assert same_label > 0.9, same_label
    # control: the same check against the wrong view's depth fails
    _, wrong, _ = agreement(c2w[1], render_view(town, K, c2w[3], res, res, supersample=1)[2], label_b)
    assert wrong < 0.3, wrong


def test_photos_have_features_that_match_across_views(scene):
    cv2 = pytest.importorskip("cv2")
    meta = _meta(scene)
    cameras = _cameras(scene)
    a, b = meta["train_stems"][0], meta["train_stems"][1]
    photos = [np.asarray(Image.open(scene / "train" / "color" / f"{s}.png")) for s in (a, b)]
    gray = [cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY) for photo in photos]
    sift = cv2.SIFT_create()
    (k1, d1), (k2, d2) = (sift.detectAndCompute(g, None) for g in gray)
    good = [m for m, n in cv2.BFMatcher().knnMatch(d1, d2, k=2) if m.distance < 0.8 * n.distance]
    assert len(good) >= 20
    # fundamental matrix from the known poses: matches must lie on their epipolar lines
    (K, c2w_a), (_, c2w_b) = cameras[a], cameras[b]
    rel = np.linalg.inv(c2w_b) @ c2w_a  # [4, 4] camera a -> camera b
    t = rel[:3, 3]
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ rel[:3, :3]
    F = np.linalg.inv(K).T @ E @ np.linalg.inv(K)
    p1 = np.c_[np.array([k1[m.queryIdx].pt for m in good]) + 0.5, np.ones(len(good))]  # OpenCV: centre at 0
    p2 = np.c_[np.array([k2[m.trainIdx].pt for m in good]) + 0.5, np.ones(len(good))]
    lines = p1 @ F.T
    dist = np.abs((p2 * lines).sum(1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert (dist < 1.0).mean() > 0.75


def test_same_seed_same_bytes_other_seed_other_town(tmp_path):
    make = functools.partial(make_scene, n_views=6, resolution=24, n_labelled=2, test_every=3)
    first = make(tmp_path / "a", seed=5)
    second = make(tmp_path / "b", seed=5)
    other = make(tmp_path / "c", seed=6)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) > 20
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    photos = sorted(p.relative_to(first) for p in (first / "train" / "color").iterdir())
    assert all((first / rel).read_bytes() != (other / rel).read_bytes() for rel in photos)


def test_bad_input_gets_one_clear_error(tmp_path):
    target = tmp_path / "scene"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(DemoSceneError, match="not empty") as err:
        make_scene(target, n_views=4, resolution=16, n_labelled=1, test_every=2)
    assert str(target) in str(err.value) and isinstance(err.value, ValueError)
    with pytest.raises(DemoSceneError, match="n_labelled"):
        make_scene(tmp_path / "x", n_views=4, resolution=16, n_labelled=9, test_every=2)
    with pytest.raises(DemoSceneError, match="resolution"):
        make_scene(tmp_path / "x", n_views=4, resolution=2, test_every=2)
    assert not (tmp_path / "x").exists()
    town = build_town(0)
    K, c2w = orbit_cameras(2, 16)
    with pytest.raises(DemoSceneError, match="K must be"):
        render_view(town, K[:2], c2w[0], 16, 16)
    with pytest.raises(DemoSceneError, match="orthonormal"):
        render_view(town, K, 2 * c2w[0], 16, 16)
    # overwrite replaces the folder as a whole
    make_scene(target, n_views=4, resolution=16, n_labelled=1, test_every=2, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "meta.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_cli_writes_a_scene_and_a_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    entrypoint([str(out), "--views", "5", "--res", "16", "--seed", "2", "--labelled", "1", "--test-every", "5"])
    printed = capsys.readouterr().out
    assert "5 (4 train, 1 test)" in printed and "Road" in printed and "Building" in printed
    meta = _meta(out)
    assert meta["seed"] == 2 and meta["res"] == [16, 16] and meta["labelled_train_stems"] == ["000003"]
    assert sorted(p.stem for p in (out / "test" / "rgb").iterdir()) == ["000002"]
    with pytest.raises(SystemExit) as exit_info:
        entrypoint([str(out), "--views", "5", "--res", "16", "--test-every", "5"])
    assert exit_info.value.code == 2
    assert "not empty" in capsys.readouterr().err
