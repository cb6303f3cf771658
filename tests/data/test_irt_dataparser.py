"""The irt-data dataparser and its file readers, on small scenes built by hand in tmp_path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsplat_ns.data import classes, irt_io
from semsplat_ns.data.irt_dataparser import IRTDataParserConfig, resolve_scene_dir
from semsplat_ns.data.irt_io import IRTDataError
from tests.conftest import look_at_opencv

WIDTH, HEIGHT = 16, 12  # non-square, so a width/height swap shows
NUM_CLASSES = 3
METADATA_KEYS = {
    "semantic_filenames",
    "pseudo_filenames",
    "boundary_filenames",
    "stems",
    "scene_dir",
    "class_names",
    "class_colors",
    "num_classes",
    "label_is_color",
}


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{v:.10g}" for v in row) for row in matrix) + "\n")


def _intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    K = np.eye(4)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = fx, fy, cx, cy
    return K


def _build_view(split_dir: Path, stem: str, index: int, label: np.ndarray | None, rng) -> None:
    angle = 0.7 * index
    position = np.array([3.0 * np.cos(angle) + 0.5, 3.0 * np.sin(angle) - 0.2, 2.0 + 0.1 * index])
    _write_matrix(split_dir / "pose" / f"{stem}.txt", look_at_opencv(position, np.array([0.5, -0.2, 0.0])))
    _write_matrix(split_dir / "intrinsics" / f"{stem}.txt", _intrinsics(20.0 + index, 21.0 + index, 8.0, 6.0))
    (split_dir / "color").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(split_dir / "color" / f"{stem}.png")
    if label is not None:
        (split_dir / "rgb").mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(split_dir / "rgb" / f"{stem}.png")


def make_hand_scene(root: Path, classes_json: bool = True, test_max_id: int = 1) -> Path:
    """4 train views (v0, v2 labelled) and 2 test views; labels use ids 0..2 (test: 0..test_max_id)."""
    rng = np.random.default_rng(0)
    scene = root / "scene"
    for i, stem in enumerate(["v0", "v1", "v2", "v3"]):
        label = rng.integers(0, 2, (HEIGHT, WIDTH), dtype=np.uint8) if stem in ("v0", "v2") else None
        if label is not None and stem == "v2":
            label[0, 0] = 2
            label[1, 1] = 255  # ignore
        _build_view(scene / "train", stem, i, label, rng)
    for i, stem in enumerate(["t0", "t1"]):
        label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        label[2, 3] = test_max_id
        _build_view(scene / "test", stem, 10 + i, label, rng)
    if classes_json:
        (scene / "classes.json").write_text(
            json.dumps({"names": ["road", "roof", "tree"], "colors": [[128, 64, 128], [70, 70, 70], [107, 142, 35]]})
        )
    return scene


def parse(scene: Path, split: str = "train", **config):
    config.setdefault("load_points", False)
    return IRTDataParserConfig(data=scene, **config).setup().get_dataparser_outputs(split=split)


@pytest.fixture
def scene(tmp_path) -> Path:
    return make_hand_scene(tmp_path)


# ----------------------------------------------------------------------------------------- happy path


def test_parses_hand_scene(scene):
    train = parse(scene, "train")
    test = parse(scene, "test")
    assert [p.name for p in train.image_filenames] == ["v0.png", "v1.png", "v2.png", "v3.png"]
    assert [p.name for p in test.image_filenames] == ["t0.png", "t1.png"]
    # At least these (other per-view file kinds, such as pseudo-label confidence, may be listed too).
    assert METADATA_KEYS <= set(train.metadata)
    assert METADATA_KEYS <= set(test.metadata)
    assert "points3D_xyz" not in train.metadata
    meta = train.metadata
    assert meta["stems"] == ["v0", "v1", "v2", "v3"]
    assert [p is not None for p in meta["semantic_filenames"]] == [True, False, True, False]
    assert meta["semantic_filenames"][2] == scene / "train" / "rgb" / "v2.png"
    assert all(p is not None for p in test.metadata["semantic_filenames"])
    assert meta["class_names"] == ["road", "roof", "tree"]
    assert meta["num_classes"] == 3 and meta["label_is_color"] is False
    assert meta["class_colors"].dtype == np.uint8 and meta["class_colors"][1].tolist() == [70, 70, 70]
    assert meta["scene_dir"] == scene
    assert meta["pseudo_filenames"] == [None] * 4 and meta["boundary_filenames"] == [None] * 4
    cams = train.cameras
    assert cams.fx[:, 0].tolist() == [20.0, 21.0, 22.0, 23.0]
    assert cams.fy[:, 0].tolist() == [21.0, 22.0, 23.0, 24.0]
    assert cams.cx[:, 0].tolist() == [8.0] * 4 and cams.cy[:, 0].tolist() == [6.0] * 4
    assert cams.width[:, 0].tolist() == [WIDTH] * 4 and cams.height[:, 0].tolist() == [HEIGHT] * 4
    assert torch.allclose(train.dataparser_transform, torch.eye(4)[:3])
    assert train.dataparser_scale == 1.0
    assert train.scene_box.aabb.tolist() == [[-1.0] * 3, [1.0] * 3]


def _project_opencv(K: np.ndarray, c2w: np.ndarray, point: np.ndarray) -> np.ndarray:
    cam = c2w[:3, :3].T @ (point - c2w[:3, 3])  # [3]
    assert cam[2] > 0
    return (K @ cam)[:2] / cam[2]  # [2] (u, v)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"orientation_method": "up", "center_method": "poses", "auto_scale_poses": True},
        {"orientation_method": "pca", "center_method": "focus", "scale_factor": 0.5},
    ],
)
def test_pose_conversion_projects_like_opencv(scene, config):
    """A world point seen at pixel (u, v) through the OpenCV pose + K lies on nerfstudio's ray for (u, v)."""
    point = np.array([0.3, 0.1, 0.2])
    for split, folder in (("train", "train"), ("test", "test")):
        outputs = parse(scene, split, **config)
        transform = outputs.dataparser_transform.double()  # [3, 4]
        point_out = (transform[:, :3] @ torch.from_numpy(point) + transform[:, 3]) * outputs.dataparser_scale  # [3]
        for i, stem in enumerate(outputs.metadata["stems"]):
            K = irt_io.read_intrinsics(scene / folder / "intrinsics" / f"{stem}.txt")
            c2w = irt_io.read_pose(scene / folder / "pose" / f"{stem}.txt")
            u, v = _project_opencv(K, c2w, point)
            # nerfstudio coords are (row, col) in pixel units, pixel centres at +0.5 as in IRT's K.
            rays = outputs.cameras.generate_rays(camera_indices=i, coords=torch.tensor([[v, u]], dtype=torch.float32))
            origin = rays.origins[0].double()  # [3]
            direction = rays.directions[0].double()  # [3]
            to_point = point_out - origin  # [3]
            assert torch.dot(to_point, direction) > 0, "point behind the converted camera"
            miss = torch.linalg.norm(torch.linalg.cross(to_point, direction)) / torch.linalg.norm(to_point)
            assert miss < 1e-5, f"{split} view {stem}: ray misses the point (sin angle {miss:.2e})"


def test_eval_split_uses_train_transform(scene):
    parser = IRTDataParserConfig(
        data=scene, orientation_method="up", center_method="poses", auto_scale_poses=True, load_points=False
    ).setup()
    test = parser.get_dataparser_outputs("test")  # parsed first: transform must still come from train
    train = parser.get_dataparser_outputs("train")
    fresh_train = parse(scene, "train", orientation_method="up", center_method="poses", auto_scale_poses=True)
    assert torch.equal(test.dataparser_transform, train.dataparser_transform)
    assert torch.equal(train.dataparser_transform, fresh_train.dataparser_transform)
    assert test.dataparser_scale == train.dataparser_scale
    assert not torch.allclose(train.dataparser_transform, torch.eye(4)[:3])
    # auto scale: the farthest train camera centre sits at 1 on some axis.
    assert train.cameras.camera_to_worlds[:, :, 3].abs().max().item() == pytest.approx(1.0, abs=1e-5)


def test_validation_split_and_unknown_split(scene, capsys):
    (scene / "test").rename(scene / "validation")
    outputs = parse(scene, "val", eval_split="validation")
    assert outputs.metadata["stems"] == ["t0", "t1"]
    with pytest.raises(IRTDataError, match="test"):
        parse(scene, "test", eval_interval=0)
    # Without test/, views of train/ are held out; the console line points at validation/.
    assert parse(scene, "test", eval_interval=3).metadata["stems"] == ["v3"]
    assert "--pipeline.datamanager.dataparser.eval-split validation" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown split"):
        parse(scene, "bogus")


# -------------------------------------------------------------------------- running without test/


def test_missing_test_split_holds_out_every_nth_unlabelled_train_view(scene, capsys):
    """nerfstudio's eval_mode "interval": views 0, N, 2N, ... of train/ become the eval split, except labelled views."""
    irt_io.atomic_write_png(scene / "train" / "pseudo" / "v3.png", np.full((HEIGHT, WIDTH), 255, np.uint8))
    with_test = parse(scene, "train")
    shutil.rmtree(scene / "test")
    parser = IRTDataParserConfig(data=scene, load_points=False, eval_interval=3).setup()
    train = parser.get_dataparser_outputs("train")
    held = parser.get_dataparser_outputs("test")
    assert train.metadata["stems"] == ["v0", "v1", "v2"]  # v0 is labelled: it stays in training
    assert held.metadata["stems"] == ["v3"]
    assert [p.name for p in held.image_filenames] == ["v3.png"]
    assert held.metadata["semantic_filenames"] == [None]  # unlabelled: RGB metrics only
    assert held.metadata["pseudo_filenames"] == [None] and held.metadata["boundary_filenames"] == [None]
    assert [p is not None for p in train.metadata["semantic_filenames"]] == [True, False, True]
    assert held.cameras.fx[:, 0].tolist() == [23.0] and held.cameras.width[:, 0].tolist() == [WIDTH]
    # Same frame as with test/ present: the transform comes from every pose in train/.
    assert torch.equal(train.dataparser_transform, with_test.dataparser_transform)
    lines = [line for line in capsys.readouterr().out.splitlines() if "holding out" in line]
    assert len(lines) == 1, lines  # said once, on one line, for both splits
    assert f"{scene} has no test/ folder" in lines[0] and "1 of its 4 training views" in lines[0]
    assert "eval-interval" in lines[0]
    # interval 2 would only hold out labelled views (v0, v2): nothing left to hold out
    with pytest.raises(IRTDataError, match="no training view can be held out"):
        parse(scene, "test", eval_interval=2)


def test_missing_test_split_with_holdout_off_says_how_to_run_without_it(scene):
    shutil.rmtree(scene / "test")
    with pytest.raises(IRTDataError) as err:
        parse(scene, "train", eval_interval=0)
    message = str(err.value)
    assert f"{scene / 'test'}: split folder does not exist (scene has: train)" in message
    assert "--pipeline.datamanager.dataparser.eval-interval 8" in message
    with pytest.raises(ValueError, match="eval-interval must be 0"):
        parse(scene, "train", eval_interval=-1)


@pytest.mark.parametrize("break_test_split", ["nan in K", "test view without label", "truncated test photo"])
def test_eval_split_is_checked_before_any_slow_train_step(scene, break_test_split, monkeypatch):
    """A bad test/ file stops parsing the TRAIN split, before its photos are decoded or points triangulated."""
    if break_test_split == "nan in K":
        _nan_in_k(scene)
    elif break_test_split == "test view without label":
        (scene / "test" / "rgb" / "t1.png").unlink()
    else:
        _truncate(scene / "test" / "color" / "t0.png")
    decoded = []
    read_photo_size = irt_io.read_photo_size
    monkeypatch.setattr(irt_io, "read_photo_size", lambda path: decoded.append(path) or read_photo_size(path))
    with pytest.raises(IRTDataError, match=str(scene / "test")):
        parse(scene, "train", load_points=True)
    assert not (scene / "sparse").exists(), "points were triangulated before the test split was checked"
    train_photos = [p for p in decoded if p.parent.parent.name == "train"]
    if break_test_split != "truncated test photo":
        assert decoded == [], "photos were decoded before the cheap checks of every split"
    else:
        assert len(train_photos) == 4  # images are decoded train first, then test, all before triangulation


def test_pseudo_and_boundary_files(scene):
    irt_io.atomic_write_png(scene / "train" / "pseudo" / "v1.png", np.full((HEIGHT, WIDTH), 255, np.uint8))
    irt_io.atomic_write_png(scene / "train" / "boundary" / "v1.png", np.zeros((HEIGHT, WIDTH), bool))
    meta = parse(scene, "train").metadata
    assert meta["pseudo_filenames"] == [None, scene / "train" / "pseudo" / "v1.png", None, None]
    assert meta["boundary_filenames"] == [None, scene / "train" / "boundary" / "v1.png", None, None]
    assert parse(scene, "train", load_pseudo_labels=False).metadata["pseudo_filenames"] == [None] * 4
    assert parse(scene, "test").metadata["pseudo_filenames"] == [None, None]


def test_without_classes_json_counts_ids_over_all_splits(tmp_path):
    scene = make_hand_scene(tmp_path, classes_json=False, test_max_id=4)  # train max id 2, test 4
    meta = parse(scene, "train").metadata
    assert meta["num_classes"] == 5
    assert meta["class_names"] == [f"class_{i}" for i in range(5)]
    assert np.array_equal(meta["class_colors"], classes.default_palette(5))


def test_colour_coded_labels(scene):
    colors = np.array([[128, 64, 128], [70, 70, 70], [107, 142, 35]], np.uint8)
    ids = np.asarray(Image.open(scene / "train" / "rgb" / "v0.png"))  # [H, W], ids 0..1
    Image.fromarray(colors[ids]).save(scene / "train" / "rgb" / "v0.png")
    # Only the grey class (roof = 70,70,70): equal channels, yet colour-coded.
    Image.fromarray(np.broadcast_to(colors[1], (HEIGHT, WIDTH, 3)).copy()).save(scene / "test" / "rgb" / "t0.png")
    meta = parse(scene, "train").metadata
    assert meta["label_is_color"] is True
    assert np.array_equal(irt_io.read_label(scene / "train" / "rgb" / "v0.png", colors, 3), ids)
    assert (irt_io.read_label(scene / "test" / "rgb" / "t0.png", colors, 3) == 1).all()


def test_never_writes_into_rgb(scene):
    rgb = scene / "train" / "rgb"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in rgb.iterdir()}
    parse(scene, "train")
    parse(scene, "test")
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in rgb.iterdir()} == before
    with pytest.raises(IRTDataError, match="ground-truth"):
        irt_io.atomic_write_png(rgb / "v1.png", np.zeros((HEIGHT, WIDTH), np.uint8))
    assert not (rgb / "v1.png").exists()


# ------------------------------------------------------------------------------------ --data lookup


def test_bare_name_resolution(scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEMSPLAT_DATA", raising=False)
    # ./data/<name>
    (tmp_path / "data").mkdir()
    (scene).rename(tmp_path / "data" / "townX")
    assert resolve_scene_dir(Path("townX")) == tmp_path / "data" / "townX"
    assert parse(Path("townX")).metadata["stems"] == ["v0", "v1", "v2", "v3"]
    # $SEMSPLAT_DATA/<name> comes first
    env_root = tmp_path / "envroot"
    env_root.mkdir()
    (tmp_path / "data" / "townX").rename(env_root / "townX")
    (tmp_path / "data" / "townX").mkdir()
    monkeypatch.setenv("SEMSPLAT_DATA", str(env_root))
    assert resolve_scene_dir(Path("townX")) == env_root / "townX"
    with pytest.raises(IRTDataError) as err:
        resolve_scene_dir(Path("nowhere"))
    message = str(err.value)
    assert str(env_root / "nowhere") in message and str((tmp_path / "data" / "nowhere").resolve()) in message
    assert str(tmp_path / "nowhere") in message
    with pytest.raises(IRTDataError, match="not found"):
        resolve_scene_dir(tmp_path / "missing" / "scene")


# ------------------------------------------------------------------------------------- bad input


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _write_bad_pose(kind: str):
    def apply(scene: Path) -> Path:
        path = scene / "train" / "pose" / "v1.txt"
        c2w = irt_io.read_pose(path)
        if kind == "scaled":
            c2w[:3, :3] *= 1.5
        elif kind == "reflected":
            c2w[:3, 0] *= -1
        elif kind == "last_row":
            c2w[3, 0] = 0.2
        _write_matrix(path, c2w)
        return path

    return apply


def _nan_in_k(scene: Path) -> Path:
    path = scene / "test" / "intrinsics" / "t1.txt"
    K = _intrinsics(20.0, 20.0, 8.0, 6.0)
    K[1, 1] = np.nan
    _write_matrix(path, K)
    return path


def _rm(relative: str):
    def apply(scene: Path) -> Path:
        target = scene / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        return target

    return apply


def _label_size(scene: Path) -> Path:
    path = scene / "train" / "rgb" / "v2.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH + 1), np.uint8)).save(path)
    return path


def _unknown_colour(scene: Path) -> Path:
    path = scene / "train" / "rgb" / "v0.png"
    label = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    label[:] = [128, 64, 128]
    label[3, 5] = [1, 2, 3]
    Image.fromarray(label).save(path)
    return path


def _id_too_large(scene: Path) -> Path:
    path = scene / "test" / "rgb" / "t0.png"
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[4, 4] = 7
    Image.fromarray(label).save(path)
    return path


def _old_arrangement(scene: Path) -> Path:
    _rm("train/color")(scene)
    return scene / "train"


def _truncated_jpeg(scene: Path) -> Path:
    png = scene / "train" / "color" / "v3.png"
    jpg = png.with_suffix(".jpg")
    Image.open(png).save(jpg, quality=95)
    png.unlink()
    return _truncate(jpg)


def _bad_pseudo(scene: Path) -> Path:
    path = scene / "train" / "pseudo" / "v3.png"
    irt_io.atomic_write_png(path, np.full((HEIGHT, WIDTH), 9, np.uint8))
    return path


def _bad_boundary(scene: Path) -> Path:
    path = scene / "train" / "boundary" / "v3.png"
    irt_io.atomic_write_png(path, np.full((HEIGHT, WIDTH), 128, np.uint8))
    return path


def _bad_classes_json(scene: Path) -> Path:
    path = scene / "classes.json"
    path.write_text(json.dumps({"names": ["a", "b", "c"], "colors": [[1, 2, 3], [1, 2, 3], [4, 5, 6]]}))
    return path


BAD_CASES = {
    # name: (make the scene bad -> path the message must name, split, words the message must hold)
    "missing split": (_rm("train"), "test", "does not exist"),
    "missing subfolder": (_rm("train/pose"), "train", "pose/"),
    "unpaired stems": (lambda s: _rm("train/intrinsics/v1.txt")(s).parent, "train", "lacks v1"),
    "truncated png": (lambda s: _truncate(s / "train" / "color" / "v2.png"), "train", "truncated"),
    "truncated jpeg": (_truncated_jpeg, "train", "truncated"),
    "label size mismatch": (_label_size, "train", "differs from its photo"),
    "non-rigid pose": (_write_bad_pose("scaled"), "train", "not orthonormal"),
    "det -1 pose": (_write_bad_pose("reflected"), "test", "determinant"),
    "pose last row": (_write_bad_pose("last_row"), "train", "last row"),
    "nan in K": (_nan_in_k, "test", "NaN"),
    "old arrangement": (_old_arrangement, "train", "photo-only"),
    "unknown label colour": (_unknown_colour, "train", "(1, 2, 3)"),
    "id >= num_classes": (_id_too_large, "test", "class id 7"),
    "no labelled view": (_rm("train/rgb"), "train", "no labelled training view"),
    "test view without label": (_rm("test/rgb/t1.png"), "test", "t1"),
    "pseudo id out of range": (_bad_pseudo, "train", "pseudo class id 9"),
    "boundary not 0/255": (_bad_boundary, "train", "0 and 255"),
    "duplicate class colours": (_bad_classes_json, "train", "more than one class"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_the_file(scene, case):
    make_bad, split, words = BAD_CASES[case]
    bad_path = make_bad(scene)
    with pytest.raises(IRTDataError) as err:
        parse(scene, split)
    message = str(err.value)
    assert str(bad_path) in message, message
    assert words in message, message
    assert isinstance(err.value, ValueError)


def test_unpaired_stems_lists_stems_and_folders(scene):
    (scene / "train" / "intrinsics" / "v1.txt").unlink()
    (scene / "train" / "pose" / "v9.txt").write_text((scene / "train" / "pose" / "v0.txt").read_text())
    with pytest.raises(IRTDataError) as err:
        irt_io.find_split_stems(scene / "train")
    message = str(err.value)
    assert f"{scene / 'train' / 'intrinsics'}/ lacks v1, v9" in message
    assert f"{scene / 'train' / 'color'}/ lacks v9" in message


def test_missing_scene_folder_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMSPLAT_DATA", str(tmp_path / "env"))
    with pytest.raises(IRTDataError) as err:
        parse(Path("ghost"))
    assert str(tmp_path / "env" / "ghost") in str(err.value) and "data/ghost" in str(err.value)


# ------------------------------------------------------------------------------------ file readers


def test_read_matrix4_and_intrinsics_errors(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0")
    with pytest.raises(IRTDataError, match="15 numbers"):
        irt_io.read_matrix4(path)
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 inf")
    with pytest.raises(IRTDataError, match="NaN or infinite"):
        irt_io.read_matrix4(path)
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 x")
    with pytest.raises(IRTDataError, match="'x' is not a number"):
        irt_io.read_matrix4(path)
    _write_matrix(path, _intrinsics(-5.0, 5.0, 1.0, 1.0))
    with pytest.raises(IRTDataError, match="fx=-5"):
        irt_io.read_intrinsics(path)
    with pytest.raises(IRTDataError, match="does not exist|cannot read"):
        irt_io.read_pose(tmp_path / "absent.txt")


def test_read_photo_modes(tmp_path):
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert irt_io.read_photo(tmp_path / "rgba.png").shape == (5, 7, 3)
    assert (irt_io.read_photo(tmp_path / "rgba.png")[..., 0] == 200).all()
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(irt_io.read_photo(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, -1))
    deep = np.array([[0, 257, 65535, 30000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert irt_io.read_photo(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 1, 255, 117]
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(IRTDataError, match="junk.png"):
        irt_io.read_photo(tmp_path / "junk.png")


def test_read_label_variants(tmp_path):
    ids = np.array([[0, 1, 255], [2, 2, 0]], np.uint8)
    Image.fromarray(np.stack([ids] * 3, -1)).save(tmp_path / "equal.png")
    assert np.array_equal(irt_io.read_label(tmp_path / "equal.png", None, 3), ids)  # 255 kept as ignore
    with pytest.raises(IRTDataError, match="class id 2"):
        irt_io.read_label(tmp_path / "equal.png", None, 2)
    colors = classes.default_palette(3)
    Image.fromarray(colors[[[0, 1], [2, 0]]]).save(tmp_path / "colour.png")
    with pytest.raises(IRTDataError, match="no classes.json"):
        irt_io.read_label(tmp_path / "colour.png", None, None)
    assert irt_io.read_label(tmp_path / "colour.png", colors, 3).tolist() == [[0, 1], [2, 0]]
    Image.fromarray(np.zeros((2, 2, 4), np.uint16)[..., 0]).save(tmp_path / "deep.png")
    with pytest.raises(IRTDataError, match="8-bit"):
        irt_io.read_label(tmp_path / "deep.png", None, None)


def test_pseudo_and_boundary_readers(tmp_path):
    irt_io.atomic_write_png(tmp_path / "p.png", np.array([[3, 255]], np.uint8))
    assert irt_io.read_pseudo_label(tmp_path / "p.png").tolist() == [[3, 255]]
    irt_io.atomic_write_png(tmp_path / "b.png", np.array([[True, False]]))
    assert irt_io.read_boundary_mask(tmp_path / "b.png").tolist() == [[True, False]]
    irt_io.atomic_write_png(tmp_path / "rgb3.png", np.zeros((1, 2, 3), np.uint8))
    with pytest.raises(IRTDataError, match="1-channel"):
        irt_io.read_pseudo_label(tmp_path / "rgb3.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "p.png", "rgb3.png"]  # no temp files left


def test_default_palette_and_classes_json(tmp_path):
    palette = classes.default_palette(255)
    assert palette.shape == (255, 3) and palette.dtype == np.uint8
    assert np.array_equal(palette[:20], classes.CARLA8_COLORS)
    assert len({tuple(c) for c in palette.tolist()}) == 255
    assert np.array_equal(classes.default_palette(4), palette[:4])
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"names": ["a", "b"]}))
    names, colors = classes.read_classes_json(path)
    assert names == ["a", "b"] and np.array_equal(colors, palette[:2])
    path.write_text(json.dumps({"names": ["a", "b"], "colors": [[1, 2, 3]]}))
    with pytest.raises(IRTDataError, match="one \\[r, g, b\\] per name"):
        classes.read_classes_json(path)
    path.write_text("{broken")
    with pytest.raises(IRTDataError, match="not valid JSON"):
        classes.read_classes_json(path)


def test_entry_point_module_avoids_circular_imports():
    """The entry-point module imports alone (no method configs), and nerfstudio lists irt-data when installed."""
    code = """
import sys
from importlib.metadata import entry_points
from semsplat_ns.data.dataparser_config import irt_data
from semsplat_ns.data.irt_dataparser import IRTDataParserConfig
assert isinstance(irt_data.config, IRTDataParserConfig)
bad = [m for m in ("semsplat_ns.config", "nerfstudio.configs.method_configs") if m in sys.modules]
assert not bad, bad
if any(e.name == "irt-data" for e in entry_points(group="nerfstudio.dataparser_configs")):
    from nerfstudio.configs.dataparser_configs import all_dataparsers
    assert isinstance(all_dataparsers["irt-data"], IRTDataParserConfig)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


# -------------------------------------------------------------------------------- seed points


def test_seed_points_in_transformed_frame(demo_town):
    points = pytest.importorskip("semsplat_ns.data.points")
    # 20 views of 96^2: the smallest demo scene that triangulates comfortably over 100 points (~280).
    scene = demo_town(n_views=20, resolution=96, n_labelled=2, seed=1, test_every=6, writable=True)
    config = {"orientation_method": "up", "center_method": "poses", "auto_scale_poses": True, "load_points": True}
    outputs = parse(scene, "train", **config)
    meta = outputs.metadata
    assert "points3D_xyz" in meta and "points3D_rgb" in meta
    assert METADATA_KEYS | {"points3D_xyz", "points3D_rgb"} <= set(meta)
    assert (scene / "sparse" / "points3D.ply").is_file()
    files = irt_io.find_split_stems(scene / "train")
    Ks = np.stack([irt_io.read_intrinsics(p) for p in files.intrinsics_paths])
    c2ws = np.stack([irt_io.read_pose(p) for p in files.pose_paths])
    xyz, rgb = points.load_or_triangulate_points(files.photo_paths, Ks, c2ws, scene / "sparse" / "points3D.ply")
    transform = outputs.dataparser_transform
    expected = (torch.from_numpy(xyz) @ transform[:, :3].T + transform[:, 3]) * outputs.dataparser_scale
    assert meta["points3D_xyz"].dtype == torch.float32 and meta["points3D_rgb"].dtype == torch.uint8
    assert torch.allclose(meta["points3D_xyz"], expected, atol=1e-5)
    assert np.array_equal(meta["points3D_rgb"].numpy(), rgb)
    assert "points3D_xyz" not in parse(scene, "test", **config).metadata


# ------------------------------------------------------------------------------ the shared scene


def test_town_a_counts_and_landmarks(irt_scene):
    scene = irt_scene("townA")
    parser = IRTDataParserConfig(data=scene, load_points=False).setup()
    train = parser.get_dataparser_outputs("train")
    test = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 90 and len(test.image_filenames) == 10
    assert sum(p is not None for p in train.metadata["semantic_filenames"]) == 3
    assert train.metadata["num_classes"] == 20 and train.metadata["class_names"][0] == "Building"
    # Roof centres (world frame, meta.json) seen by a test camera fall on Building pixels of its label.
    meta = json.loads((scene / "meta.json").read_text())
    landmarks = [np.array(mark["xyz"]) for mark in meta["landmarks"] if mark["name"].endswith("roof_centre")]
    cams = test.cameras
    hits = seen = 0
    for i, label_path in enumerate(test.metadata["semantic_filenames"]):
        label = irt_io.read_label(label_path, None, 20)  # [H, W]
        c2w = cams.camera_to_worlds[i].double().numpy()  # [3, 4] nerfstudio axes
        for point in landmarks:
            cam = c2w[:, :3].T @ (point - c2w[:, 3])  # [3], looking down -z
            if cam[2] >= 0:
                continue
            u = cams.fx[i, 0].item() * cam[0] / -cam[2] + cams.cx[i, 0].item()
            v = -cams.fy[i, 0].item() * cam[1] / -cam[2] + cams.cy[i, 0].item()
            if 0 <= u < label.shape[1] and 0 <= v < label.shape[0]:
                seen += 1
                hits += label[int(v), int(u)] == 0
    assert seen > 20 and hits / seen > 0.9
