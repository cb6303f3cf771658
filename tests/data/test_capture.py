"""Captures beyond the IRT layout (issue #14): a nerfstudio capture (transforms.json as ns-process-data writes
it) and a COLMAP model, each with a few labels/<stem>.png, read by the ``semsplat-data`` dataparser.

The demo town is written in both forms from the generator's exact cameras
(:mod:`semsplat_ns.synthetic.capture_writer`); each must give the IRT form's cameras (within 1e-4 px on
world points), the capture's own sparse points as seeds, nerfstudio's eval split for its format, labels
brought to nerfstudio's (downscaled, undistorted) pictures, and one error line naming a bad file; the inverse
(a prediction brought back to the distorted photo) must undo nerfstudio's undistortion to a tenth of a pixel. Both
train with a real ``ns-train semsplat --data capture/`` as the README walkthrough writes it (with the preset's
automatic prior pseudo labels; run side by side, each in its own process forked from one that made their common
imports once), the walkthrough's
semsplat-predict runs as written, and the runs export and evaluate in the capture's frame.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
from nerfstudio.cameras.camera_utils import get_distortion_params
from nerfstudio.cameras.cameras import Cameras, CameraType
from PIL import Image

from semsplat_ns.data import irt_io
from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig, capture_layout, detect_layout
from semsplat_ns.data.capture_labels import PREPARED_DIR, undistort_label
from semsplat_ns.data.irt_dataparser import IRTDataParserConfig
from semsplat_ns.data.irt_io import IRTDataError
from semsplat_ns.synthetic.capture_writer import CaptureLayout, surface_points, write_capture

TOWN = dict(n_views=12, resolution=32, n_labelled=2, seed=5)
"""12 frames of 32x32 (the town the error tests share): frames 3 and 9 labelled, frame 5 the test view."""
METADATA_KEYS = {
    "semantic_filenames",
    "pseudo_filenames",
    "boundary_filenames",
    "confidence_filenames",
    "stems",
    "scene_dir",
    "class_names",
    "class_colors",
    "num_classes",
    "label_is_color",
}
"""What irt-data puts in the metadata; a capture's outputs carry the same keys."""
FORMS = [("nerfstudio", "OPENCV"), ("nerfstudio", "PINHOLE"), ("colmap", "OPENCV"), ("colmap", "PINHOLE")]


@pytest.fixture(scope="module")
def town(demo_town) -> Path:
    return demo_town(**TOWN)


@pytest.fixture(scope="module")
def make_capture(town: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_capture(layout, **write_capture_options)``: a fresh capture of the town in its own folder."""

    def make(layout: str, **options) -> Path:
        return write_capture(town, tmp_path_factory.mktemp("capture") / layout, layout, **options)  # type: ignore[arg-type]

    return make


def _parse(data: Path, split: str = "train", **options):
    return SemSplatDataParserConfig(data=data, **options).setup().get_dataparser_outputs(split)


def _project(outputs, world: np.ndarray) -> Dict[str, np.ndarray]:
    """Pixel positions [P, 2] of world points in every camera of a split (nan behind it), by stem."""
    transform = outputs.dataparser_transform.double().numpy()  # [3, 4] input frame -> training frame
    points = (world @ transform[:, :3].T + transform[:, 3]) * float(outputs.dataparser_scale)  # [P, 3]
    cameras = outputs.cameras
    result = {}
    for i, stem in enumerate(outputs.metadata["stems"]):
        c2w = cameras.camera_to_worlds[i].double().numpy()  # [3, 4] OpenGL axes
        cam = (points - c2w[:, 3]) @ c2w[:, :3]  # [P, 3], the camera looks down -z
        u = cameras.fx[i, 0].item() * cam[:, 0] / -cam[:, 2] + cameras.cx[i, 0].item()
        v = -cameras.fy[i, 0].item() * cam[:, 1] / -cam[:, 2] + cameras.cy[i, 0].item()
        result[stem] = np.where(cam[:, 2:3] < 0, np.stack([u, v], axis=-1), np.nan)  # [P, 2]
    return result


# ------------------------------------------------------------------------------------------------ detection


def test_layout_detection(town: Path, make_capture, tmp_path: Path):
    nerfstudio, colmap = make_capture("nerfstudio"), make_capture("colmap")
    assert detect_layout(town) == ("irt", town)
    assert detect_layout(nerfstudio) == ("nerfstudio", nerfstudio / "transforms.json")
    assert detect_layout(nerfstudio / "transforms.json")[0] == "nerfstudio"
    assert detect_layout(colmap) == ("colmap", colmap / "sparse" / "0")
    assert capture_layout(colmap) == "colmap"
    # COLMAP's model where ns-process-data leaves it, without transforms.json
    (colmap / "colmap").mkdir()
    shutil.move(str(colmap / "sparse"), str(colmap / "colmap" / "sparse"))
    assert detect_layout(colmap) == ("colmap", colmap / "colmap" / "sparse" / "0")
    assert len(_parse(colmap).image_filenames) == 11
    (tmp_path / "photos").mkdir()
    with pytest.raises(IRTDataError) as err:
        detect_layout(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: not a scene semsplat reads") and "folder has: photos" in message
    assert all(part in message for part in ("train/", "transforms.json", "sparse/0/", "colmap/sparse/0/"))


def test_entry_point_registers_semsplat_data(tmp_path: Path):
    """The entry-point module imports alone (no method configs), and nerfstudio lists semsplat-data.

    Run outside the repository, whose stale build metadata (semsplat_ns.egg-info) would shadow the installed one.
    """
    code = """
import sys
from semsplat_ns.data.capture_spec import semsplat_data
bad = [m for m in ("semsplat_ns.config", "nerfstudio.configs.method_configs") if m in sys.modules]
assert not bad, bad
from nerfstudio.configs.dataparser_configs import all_dataparsers
assert type(all_dataparsers["semsplat-data"]).__name__ == "SemSplatDataParserConfig"
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_irt_scene_reads_as_irt_data(town: Path, tmp_path: Path):
    from semsplat_ns.config import semsplat_trainer_config
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig

    datamanager = semsplat_trainer_config().pipeline.datamanager
    assert isinstance(datamanager, SemSplatDataManagerConfig)
    assert isinstance(datamanager.dataparser, SemSplatDataParserConfig)  # the method's default
    for split in ("train", "test"):
        ours = _parse(town, split, load_points=False)
        theirs = IRTDataParserConfig(data=town, load_points=False).setup().get_dataparser_outputs(split)
        assert ours.image_filenames == theirs.image_filenames
        assert torch.equal(ours.cameras.camera_to_worlds, theirs.cameras.camera_to_worlds)
        assert set(ours.metadata) == set(theirs.metadata)
        assert ours.metadata["semantic_filenames"] == theirs.metadata["semantic_filenames"]
    # and the same errors
    broken = tmp_path / "broken"
    shutil.copytree(town, broken)
    (broken / "classes.json").write_text("{broken")
    with pytest.raises(IRTDataError) as ours_error:
        _parse(broken, load_points=False)
    with pytest.raises(IRTDataError) as theirs_error:
        IRTDataParserConfig(data=broken, load_points=False).setup().get_dataparser_outputs("train")
    assert str(ours_error.value) == str(theirs_error.value)


# -------------------------------------------------------------------------------------------------- cameras


@pytest.mark.parametrize("layout,camera_model", FORMS, ids=[f"{a}-{b}" for a, b in FORMS])
def test_capture_cameras_points_and_labels_match_the_irt_form(town: Path, make_capture, layout, camera_model):
    capture = make_capture(layout, camera_model=camera_model)
    meta = json.loads((town / "meta.json").read_text())
    world = np.array([mark["xyz"] for mark in meta["landmarks"]])  # [P, 3] the town's frame
    irt = IRTDataParserConfig(data=town, load_points=False).setup()
    parser = SemSplatDataParserConfig(data=capture).setup()
    for split in ("train", "test"):
        theirs, ours = irt.get_dataparser_outputs(split), parser.get_dataparser_outputs(split)
        assert ours.metadata["stems"] == theirs.metadata["stems"]
        assert METADATA_KEYS <= set(ours.metadata)
        expected, got = _project(theirs, world), _project(ours, world)
        for stem in expected:
            assert np.isfinite(expected[stem]).any()
            np.testing.assert_allclose(got[stem], expected[stem], atol=1e-4, rtol=0)
        labelled = [p is not None for p in ours.metadata["semantic_filenames"]]
        assert labelled == [p is not None for p in theirs.metadata["semantic_filenames"]]
        for path in ours.metadata["semantic_filenames"]:
            assert path is None or path.parent == capture / "labels"  # no distortion: the files as they are
        assert ours.metadata["class_names"] == theirs.metadata["class_names"]
        assert np.array_equal(ours.metadata["class_colors"], theirs.metadata["class_colors"])
        assert ours.metadata["pseudo_filenames"] == [None] * len(ours.image_filenames)

    # Seed points: the capture's own, each back on the pixel it was seen at in the training frame.
    train = parser.get_dataparser_outputs("train")
    xyz, rgb, seen = surface_points(town, n_points=400)
    seeds = train.metadata["points3D_xyz"].double().numpy()  # [P, 3]
    assert seeds.shape == xyz.shape and np.array_equal(train.metadata["points3D_rgb"].numpy(), rgb)
    transform = train.dataparser_transform.double().numpy()
    np.testing.assert_allclose(seeds, (xyz @ transform[:, :3].T + transform[:, 3]) * train.dataparser_scale, atol=1e-5)
    stems = train.metadata["stems"]
    pixels = _project(train, xyz)
    checked = 0
    for index, (frame, x, y) in enumerate(seen):
        stem = f"{frame:06d}"
        if stem in stems:
            np.testing.assert_allclose(pixels[stem][index], [x, y], atol=1e-3)
            checked += 1
    assert checked > 100


# ------------------------------------------------------------------------------------------- the eval split


def test_eval_split_follows_nerfstudio_and_says_when_no_eval_image_has_a_label(make_capture, capsys):
    from nerfstudio.data.utils.dataparsers_utils import (
        get_train_eval_split_fraction,
        get_train_eval_split_interval,
    )

    stems = [f"{i:06d}" for i in range(12)]
    for layout, (_, eval_indices) in (
        ("nerfstudio", get_train_eval_split_fraction(stems, 0.9)),  # nerfstudio-data's default
        ("colmap", get_train_eval_split_interval(stems, 8)),  # colmap's default
    ):
        capture = make_capture(layout, keep_split=False)
        parser = SemSplatDataParserConfig(data=capture).setup()
        train, evaluation = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("val")
        assert evaluation.metadata["stems"] == [stems[i] for i in eval_indices]
        assert sorted(train.metadata["stems"] + evaluation.metadata["stems"]) == stems
        # the labels (frames 3, 5, 9) all fall in training here
        assert all(path is None for path in evaluation.metadata["semantic_filenames"])
        out = capsys.readouterr().out
        assert "no evaluation image has a label, so evaluation gives RGB metrics only" in out, out
        assert f"--pipeline.datamanager.dataparser.{layout}.eval-mode" in out

    # with a labelled evaluation image, that image is scored (and says so)
    capture = make_capture("colmap", keep_split=False, label_stems=["000003", "000008"])
    evaluation = _parse(capture, "val")
    assert [p.name if p else None for p in evaluation.metadata["semantic_filenames"]] == [None, "000008.png"]
    assert "1 evaluation (000008) for segmentation metrics" in capsys.readouterr().out

    # labels only on evaluation images: training has none
    capture = make_capture("colmap", keep_split=False, label_stems=["000000"])
    with pytest.raises(IRTDataError, match="every labelled image .* is in the evaluation split") as err:
        _parse(capture)
    assert "--pipeline.datamanager.dataparser.colmap.eval-mode" in str(err.value)
    # nerfstudio's options for the format change the split
    evaluation = _parse(capture, "val", colmap=_colmap_options(eval_mode="all"))
    assert len(evaluation.image_filenames) == 12


def _colmap_options(**options):
    """nerfstudio's colmap options with ``options`` changed."""
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    return ColmapDataParserConfig(**options)


# --------------------------------------------------------------------------------------------- bad captures


def _break_missing_image(capture: Path) -> Tuple[Path, str]:
    path = capture / "images" / "000007.png"
    path.unlink()
    return path, "image (listed by"


def _break_first_image(capture: Path) -> Tuple[Path, str]:
    # nerfstudio's parsers open the first image themselves (to choose a downscale factor)
    path = capture / "images" / "000000.png"
    path.unlink()
    return path, "file does not exist (nerfstudio's"


def _break_unknown_label(capture: Path) -> Tuple[Path, str]:
    path = capture / "labels" / "000099.png"
    shutil.copyfile(capture / "labels" / "000003.png", path)
    return path, "no image of the capture has the stem '000099'"


def _break_label_size(capture: Path) -> Tuple[Path, str]:
    path = capture / "labels" / "000009.png"
    Image.fromarray(np.zeros((32, 30), np.uint8)).save(path)
    return path, "size 30x32 differs from its photo 000009.png (32x32"


def _break_jpeg_label(capture: Path) -> Tuple[Path, str]:
    path = capture / "labels" / "000003.jpg"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    return path, "labels must be PNG"


def _break_no_labels(capture: Path) -> Tuple[Path, str]:
    shutil.rmtree(capture / "labels")
    return capture / "labels", "no label; semsplat needs at least one"


def _break_class_id(capture: Path) -> Tuple[Path, str]:
    path = capture / "labels" / "000003.png"
    Image.fromarray(np.full((32, 32), 40, np.uint8)).save(path)
    return path, "class id 40 found"


def _break_photo_size(capture: Path) -> Tuple[Path, str]:
    path = capture / "images" / "000002.png"
    Image.fromarray(np.zeros((30, 32, 3), np.uint8)).save(path)
    return path, "size 32x30 differs from its camera"


BREAKS = [
    _break_missing_image,
    _break_first_image,
    _break_unknown_label,
    _break_label_size,
    _break_jpeg_label,
    _break_no_labels,
    _break_class_id,
    _break_photo_size,
]


@pytest.mark.parametrize("layout", ["nerfstudio", "colmap"])
def test_bad_captures_name_the_file(make_capture, layout):
    base = make_capture(layout)
    for index, damage in enumerate(BREAKS):
        capture = base.parent / f"{layout}_{index}"
        shutil.copytree(base, capture)
        path, words = damage(capture)
        with pytest.raises(IRTDataError) as err:
            _parse(capture)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and words in message, (damage.__name__, message)
        assert "\n" not in message


# --------------------------------------------------------------------------- downscaled and distorted photos


def test_labels_follow_nerfstudio_downscaled_photos(make_capture):
    capture = make_capture("nerfstudio")
    (capture / "images_2").mkdir()
    for photo in (capture / "images").iterdir():
        Image.open(photo).resize((16, 16), Image.Resampling.BILINEAR).save(capture / "images_2" / photo.name)
    nerfstudio = SemSplatDataParserConfig().nerfstudio
    nerfstudio.downscale_factor = 2
    train = _parse(capture, nerfstudio=nerfstudio)
    assert int(train.cameras.width[0, 0]) == 16
    labelled = [(s, p) for s, p in zip(train.metadata["stems"], train.metadata["semantic_filenames"]) if p]
    assert [s for s, _ in labelled] == ["000003", "000009"]
    for stem, path in labelled:
        assert path == capture / PREPARED_DIR / "images_2" / f"{stem}.png"
        full = irt_io.read_label(capture / "labels" / f"{stem}.png", None, 20)  # [32, 32]
        small = np.asarray(Image.open(path))  # [16, 16]
        # PIL's nearest neighbour takes the source pixel under each new pixel's centre: 2i + 1.
        assert np.array_equal(small, full[1::2, 1::2])


def test_labels_are_undistorted_as_nerfstudio_undistorts_the_photos(make_capture):
    from nerfstudio.data.datamanagers.full_images_datamanager import _undistort_image

    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig

    capture = make_capture("nerfstudio", distortion=(-0.08, 0.02, 0.002, -0.001))
    train = _parse(capture, load_points=False)
    camera = train.cameras[0].reshape(())
    # A ramp of column (row) indices, undistorted as a label (nearest) and as a photo (nerfstudio's bilinear):
    # the two agree to half a pixel wherever the label is defined.
    ramp_x = np.broadcast_to(np.arange(32, dtype=np.uint8), (32, 32)).copy()  # [32, 32]
    for ramp in (ramp_x, ramp_x.T.copy()):
        nearest = undistort_label(ramp, camera).astype(np.float64)  # [h, w]
        photo = np.repeat(ramp[..., None], 3, axis=2).astype(np.float32)  # [32, 32, 3]
        K = camera.get_intrinsics_matrices().numpy()
        _, bilinear, _ = _undistort_image(camera, camera.distortion_params.numpy().copy(), {}, photo, K)
        assert nearest.shape == bilinear.shape[:2] and nearest.shape != (32, 32)  # cropped to the valid region
        defined = nearest != irt_io.IGNORE_ID
        assert defined.mean() > 0.95
        assert np.abs(nearest - bilinear[..., 0])[defined].max() <= 0.5 + 1e-3

    # The datamanager serves each labelled view's semantics at its undistorted photo's size.
    config = SemSplatDataManagerConfig(dataparser=SemSplatDataParserConfig(data=capture, load_points=False))
    datamanager = config.setup(device="cpu", test_mode="val")
    served = [data for data in datamanager.cached_train if "semantics" in data]
    assert len(served) == 2
    for data in served:
        assert tuple(data["semantics"].shape) == tuple(data["image"].shape[:2]) != (32, 32)
    for path in train.metadata["semantic_filenames"]:
        assert path is None or path.parent == capture / PREPARED_DIR / "images_undistorted"


# ------------------------------------------------- predictions brought back to the distorted photo (inverse)


FISHEYE624_RADIAL = [0.03, -0.01, 0.004, -0.001, 0.0005, -0.0001]
"""Small FISHEYE624 radial coefficients k0..k5 (on the ray's angle)."""
FISHEYE624_SYMMETRIC = FISHEYE624_RADIAL + [0.0004, 0.0004, 0.0003, -0.0001, 0.0003, -0.0001]
"""... with tangential p0 = p1 and thin prism s0 = s2, s1 = s3: a lens symmetric about the image diagonal, the
one kind whose photo nerfstudio 1.1.5 undistorts right (its remap swaps x and y)."""
FISHEYE624_CROP_RADIUS = 24.0
"""The photo's valid circle (px; transforms.json's ``fisheye_crop_radius``), nerfstudio's mask of the undistorted
picture, which is 48x48 (twice the radius)."""
LENS_KINDS = ["perspective", "fisheye", "fisheye624"]


def _fisheye624_camera(params: List[float], fx: float, fy: float, cx: float, cy: float, width: int) -> Cameras:
    """A FISHEYE624 camera 48 pixels high with the crop radius nerfstudio's undistortion needs in its metadata."""
    return Cameras(
        camera_to_worlds=torch.eye(4)[:3],
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        width=width,
        height=48,
        distortion_params=torch.tensor(params),
        camera_type=CameraType.FISHEYE624,
        metadata={"fisheye_crop_radius": FISHEYE624_CROP_RADIUS},
    )


def _lens_camera(kind: str) -> Cameras:
    """A 64x48 camera with an off-centre principal point and strong distortion: perspective (k1, k2, k3, p1, p2)
    or fisheye (OpenCV's k1..k4); or fisheye624, 48x48 with its principal point off-centre along the diagonal and
    :data:`FISHEYE624_SYMMETRIC` (the lens nerfstudio can undistort)."""
    if kind == "fisheye624":
        return _fisheye624_camera(FISHEYE624_SYMMETRIC, fx=50.0, fy=50.0, cx=24.3, cy=24.3, width=48)
    if kind == "perspective":
        params, camera_type = (
            get_distortion_params(k1=-0.3, k2=0.08, k3=0.01, p1=0.002, p2=-0.001),
            CameraType.PERSPECTIVE,
        )
    else:
        params, camera_type = get_distortion_params(k1=0.05, k2=-0.02, k3=0.01, k4=-0.003), CameraType.FISHEYE
    return Cameras(
        camera_to_worlds=torch.eye(4)[:3],
        fx=50.0,
        fy=52.0,
        cx=32.7,
        cy=23.6,
        width=64,
        height=48,
        distortion_params=params,
        camera_type=camera_type,
    )


@pytest.mark.parametrize("kind", LENS_KINDS)
def test_distorted_pixels_land_where_nerfstudio_undistorts_them(kind: str):
    """The inverse of nerfstudio's undistortion: a map of where each photo pixel lands in the undistorted picture,
    undistorted by nerfstudio's own ``_undistort_image`` like a photo, puts every undistorted pixel on its own
    centre."""
    from nerfstudio.data.datamanagers.full_images_datamanager import _undistort_image

    from semsplat_ns.eval.distorted import distorted_pixel_positions, undistorted_camera

    camera = _lens_camera(kind)
    picture = undistorted_camera(camera)  # [1] the pinhole camera of nerfstudio's undistorted photo
    height, width = int(picture.height.item()), int(picture.width.item())
    positions = distorted_pixel_positions(camera, picture).numpy()  # [48, 64, 2] in the undistorted picture
    picture = np.concatenate([positions, np.ones_like(positions[..., :1])], axis=-1)  # [48, 64, 3]
    K = camera.get_intrinsics_matrices().numpy()  # [3, 3]
    assert camera.distortion_params is not None
    _, moved, mask = _undistort_image(camera, camera.distortion_params.numpy().copy(), {}, picture, K)  # [h, w, 3]
    assert moved.shape[:2] == (height, width)
    centres = np.stack(np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5), axis=-1)  # [h, w, 2]
    covered = moved[..., 2] > 0.999  # [h, w] nerfstudio read this pixel from inside the photo
    error = np.linalg.norm(moved[..., :2] - centres, axis=-1)  # [h, w] pixels
    # fisheye624: nerfstudio's square picture around the photo's valid circle; its mask [h, w, 1] is that circle
    valid = np.ones_like(covered) if mask is None else mask[..., 0].numpy()  # [h, w]
    assert valid.mean() > 0.7
    assert covered[valid].mean() > 0.95
    assert error[covered].max() < 0.1, f"{kind}: worst {error[covered].max():.3f} px"
    if kind == "fisheye624":
        _assert_fisheye624_positions_follow_its_projection(camera, positions)


def _assert_fisheye624_positions_follow_its_projection(camera: Cameras, positions: np.ndarray) -> None:
    """Ground truth independent of semsplat's mapping, from nerfstudio's FISHEYE624 model
    (``fisheye624_unproject_helper``, checked against ``fisheye624_project``): nerfstudio's undistortion reads
    the photo with ``cv2.remap``, whose pixel (col, row) is centred on the integer (col, row), through the
    undistorted picture's K of centre ((w - 1) / 2, (h - 1) / 2), also integer-centred; so the photo pixel
    (col, row) lands at K @ unproject(col, row) there, + 0.5 in the +0.5-centred pixels semsplat returns."""
    from nerfstudio.cameras.camera_utils import fisheye624_project, fisheye624_unproject_helper

    from semsplat_ns.data.capture_labels import training_geometry

    K, (height, width) = training_geometry(camera.reshape(()))  # float64 [3, 3]
    assert (height, width) == (int(2 * FISHEYE624_CROP_RADIUS),) * 2
    assert camera.distortion_params is not None
    intrinsics = [float(v.item()) for v in (camera.fx, camera.fy, camera.cx, camera.cy)]
    params = torch.tensor([*intrinsics, *camera.distortion_params.tolist()], dtype=torch.float64)[None]  # [1, 16]
    photo_h, photo_w = positions.shape[:2]
    rows, cols = np.mgrid[0:photo_h, 0:photo_w]  # [H, W] each
    uv = torch.from_numpy(np.stack([cols, rows], axis=-1).reshape(1, -1, 2).astype(np.float64))  # [1, N, 2]
    rays = fisheye624_unproject_helper(uv, params, max_iters=20)  # [1, N, 3], z = 1
    assert (fisheye624_project(rays, params) - uv).abs().max() < 1e-6  # an exact inverse
    rays = rays[0].numpy()  # [N, 3]
    truth = (rays[:, :2] * np.diag(K)[:2] + K[:2, 2] + 0.5).reshape(photo_h, photo_w, 2)  # [H, W, 2]
    seen = (truth[..., 0] >= 0) & (truth[..., 0] < width) & (truth[..., 1] >= 0) & (truth[..., 1] < height)
    assert seen.mean() > 0.7
    error = np.linalg.norm(positions - truth, axis=-1)  # [H, W] px
    assert error[seen].max() < 0.01, f"fisheye624: worst {error[seen].max():.3f} px off nerfstudio's projection"


@pytest.mark.parametrize("kind", LENS_KINDS)
def test_label_pattern_undistorted_then_brought_back_lands_within_one_pixel(kind: str):
    """A label pattern drawn on the distorted photo, undistorted as training undistorts labels, then read back at
    every photo pixel as semsplat-predict reads its render: each pixel gets the id of a pixel at most 1 px away.
    Reading the undistorted picture as a pinhole camera at the photo's K (what prediction did before) does not."""
    from semsplat_ns.eval.distorted import distorted_frame

    camera = _lens_camera(kind)
    H, W = int(camera.height.item()), int(camera.width.item())  # 48, 64 (fisheye624: 48)
    rows, cols = np.mgrid[0:H, 0:W]  # [H, W] each
    pattern = (cols // 4 + 16 * (rows // 4)).astype(np.uint8)  # [H, W] one id per 4x4 block, all below 255
    undistorted = undistort_label(pattern, camera.reshape(()))  # [h, w] what training sees
    frame = distorted_frame(camera, max_supersample=1.0)  # read nerfstudio's picture itself
    back = frame.sample(torch.from_numpy(undistorted), irt_io.IGNORE_ID).numpy()  # [H, W]

    def within_one_pixel(ids: np.ndarray) -> np.ndarray:
        """Whether each pixel's id is the pattern's id at that pixel or one of its 8 neighbours [H, W]."""
        padded = np.pad(pattern.astype(np.int64), 1, constant_values=-1)  # [H + 2, W + 2]
        near = np.zeros(ids.shape, dtype=bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                near |= ids == padded[dy : dy + H, dx : dx + W]
        return near

    defined = back != irt_io.IGNORE_ID  # [H, W]
    inside = frame.inside.numpy()  # [H, W]
    if kind == "fisheye624":
        # nerfstudio's square picture around the valid circle has pixels that read across the photo's edge
        # (blended with black, 255 in the label): the photo's border pixels that land on them stay undefined
        assert not (defined & ~inside).any()
        border = np.minimum(np.minimum(rows, H - 1 - rows), np.minimum(cols, W - 1 - cols))  # [H, W] px to the edge
        assert (border[inside & ~defined] == 0).all() and (inside & ~defined).mean() < 0.02
    else:
        assert np.array_equal(defined, inside)
    assert defined.mean() > 0.8  # only the rim nerfstudio's picture leaves out
    assert within_one_pixel(back)[defined].all()
    assert (back == pattern)[defined].mean() > 0.85

    # Before: the undistorted picture rendered as a pinhole camera with the photo's own K and size.
    K, Ku = camera.get_intrinsics_matrices().numpy(), frame.camera.get_intrinsics_matrices()[0].numpy()  # [3, 3]
    x = Ku[0, 0] * (cols + 0.5 - K[0, 2]) / K[0, 0] + Ku[0, 2]  # [H, W] same ray, undistorted picture
    y = Ku[1, 1] * (rows + 0.5 - K[1, 2]) / K[1, 1] + Ku[1, 2]  # [H, W]
    h, w = undistorted.shape
    seen = (x >= 0) & (x < w) & (y >= 0) & (y < h)  # [H, W]
    pinhole = undistorted[np.floor(y).clip(0, h - 1).astype(int), np.floor(x).clip(0, w - 1).astype(int)]
    # measured: 16-17 % of the pixels more than 1 px off (perspective, fisheye), 4 % (fisheye624's milder lens),
    # against none above
    assert within_one_pixel(pinhole)[seen].mean() < (0.97 if kind == "fisheye624" else 0.9)


def test_fisheye624_lens_nerfstudio_undistorts_wrongly_is_refused_naming_the_photo(tmp_path: Path):
    """nerfstudio 1.1.5's ``_undistort_image`` swaps x and y for FISHEYE624 photos: for a 64x48 photo with
    fx != fy, cx != cy and asymmetric tangential / thin-prism terms its picture reads the photo pixels away from
    where nerfstudio's own ``fisheye624_project`` puts each ray. Preparing a label, the picture's geometry and
    the predict lookup refuse the camera with one line naming the photo and the camera model; without the crop
    radius nerfstudio needs, likewise."""
    from nerfstudio.cameras.camera_utils import fisheye624_project
    from nerfstudio.data.datamanagers.full_images_datamanager import _undistort_image

    from semsplat_ns.data.capture_labels import prepare_label, training_geometry
    from semsplat_ns.eval.distorted import distorted_frame

    asymmetric = FISHEYE624_RADIAL + [0.0005, -0.0003, 0.0004, -0.0001, -0.0002, 5e-5]
    camera = _fisheye624_camera(asymmetric, fx=50.0, fy=52.0, cx=32.7, cy=23.6, width=64).reshape(())
    # Independent of semsplat: the photo pixel nerfstudio's picture reads at its centre vs the projected ray.
    rows, cols = np.mgrid[0:48, 0:64].astype(np.float32)  # [48, 64] each
    grid = np.stack([cols, rows, np.ones_like(cols)], axis=-1)  # [48, 64, 3]
    assert camera.distortion_params is not None
    K = camera.get_intrinsics_matrices().numpy()  # [3, 3]
    new_K, warped, _ = _undistort_image(camera, camera.distortion_params.numpy().copy(), {}, grid, K)  # [48, 48, 3]
    centre = torch.tensor([[[(warped.shape[1] - 1) / 2 - new_K[0, 2], (warped.shape[0] - 1) / 2 - new_K[1, 2], 1.0]]])
    lens = torch.tensor([[50.0, 52.0, 32.7, 23.6, *asymmetric]], dtype=torch.float64)  # [1, 16]
    truth = fisheye624_project(centre.double(), lens)[0, 0].numpy()  # [2] the principal point (32.7, 23.6)
    read = warped[warped.shape[0] // 2, warped.shape[1] // 2, :2]  # [2] what nerfstudio read there
    assert np.linalg.norm(read - truth) > 5.0  # swapped: about (cy, cx)

    photo = tmp_path / "images" / "frame_00001.jpg"
    label = tmp_path / "labels" / "frame_00001.png"
    ids = np.zeros((48, 64), dtype=np.uint8)
    with pytest.raises(IRTDataError) as refused:
        prepare_label(tmp_path, label, ids, photo, (64, 48), camera)
    message = str(refused.value)
    assert (
        "\n" not in message and message.startswith(f"{photo}: camera model FISHEYE624") and "swaps x and y" in message
    )
    for call in (
        lambda: training_geometry(camera),
        lambda: undistort_label(ids, camera),
        lambda: distorted_frame(camera),
    ):
        with pytest.raises(IRTDataError, match="camera model FISHEYE624"):
            call()
    assert not (tmp_path / PREPARED_DIR).exists()

    no_radius = copy.deepcopy(_lens_camera("fisheye624")).reshape(())
    no_radius.metadata = {}
    with pytest.raises(IRTDataError, match=r"frame_00001.jpg: camera model FISHEYE624 without a fisheye_crop_radius"):
        prepare_label(tmp_path, label, np.zeros((48, 48), dtype=np.uint8), photo, (48, 48), no_radius)


# --------------------------------------------------------------- ns-train, the README walkthrough, export

README = Path(__file__).resolve().parents[2] / "README.md"
WALKTHROUGH = "## From a folder of drone photos"
LABELLED = {"000003": "frame_00004", "000009": "frame_00010", "000010": "frame_00011"}
"""The walkthrough's three labelled images: town frame -> image stem after ns-process-data's renaming
(frame_00011 is the one evaluation image of nerfstudio's default split of 12 images, "fraction")."""
TIMESTAMP = "run"
APPENDED = [
    # Few CPU steps and a tiny prior, so a run takes seconds; label support weights the pseudo loss.
    *("--max-num-iterations", "10", "--machine.device-type", "cpu", "--vis", "tensorboard"),
    *("--timestamp", TIMESTAMP, "--pipeline.model.pseudo-weight-by-label-support", "True"),
    *("--pipeline.datamanager.pseudo-prior.steps", "20", "--pipeline.datamanager.pseudo-prior.crop", "16"),
    *("--pipeline.datamanager.pseudo-prior.width", "4", "--pipeline.datamanager.pseudo-prior.levels", "2"),
    *("--pipeline.datamanager.pseudo-prior.threshold", "0.5"),
]
"""Flags the test appends to the walkthrough's ns-train line."""


def walkthrough_commands() -> List[List[str]]:
    """The commands of the README walkthrough's code block, comments left out, each split as a shell splits it."""
    text = README.read_text()
    section = text[text.index(WALKTHROUGH) :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)]
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _processed_capture(town: Path, folder: Path, layout: CaptureLayout) -> Path:
    """Step 1's result, ``folder/capture`` as ns-process-data leaves it (photos renamed frame_00001.png, ...; no
    split lists), from the town's exact cameras; then step 2: three class-id PNGs named by the image stem, as a
    labelling tool writes them."""
    capture = write_capture(
        town,
        folder / "capture",
        layout,
        keep_split=False,
        label_stems=[],
        image_names="ns-process-data",
    )
    (capture / "labels").mkdir()
    for frame, stem in LABELLED.items():
        ids = np.asarray(Image.open(town / "gt_all" / f"{frame}.png"))[..., 0]  # [32, 32] channel 0 = class id
        Image.fromarray(np.ascontiguousarray(ids)).save(capture / "labels" / f"{stem}.png")
    return capture


def _digests(folder: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def runs(town: Path, make_capture, tmp_path_factory: pytest.TempPathFactory, console_scripts) -> Dict[str, dict]:
    """Four ns-train processes side by side, forked from one that made their common imports (which dominate a
    10-step CPU run; the ``console_scripts`` fixture):

    * nerfstudio: the README walkthrough's step 3 as written, on a nerfstudio capture as ns-process-data leaves
      it, run from the folder that holds capture/ (the preset makes the prior's pseudo labels first; APPENDED
      makes that prior tiny);
    * colmap: the same command on the same images as a COLMAP model, with nerfstudio's colmap parser told to
      split as nerfstudio-data does (eval-mode fraction), so both runs train on the same views;
    * broken: a capture with a label of an unknown image;
    * sparse: a COLMAP model whose sparse model holds a handful of points (too few to seed or give depth).
    """
    root = tmp_path_factory.mktemp("runs")
    command = walkthrough_commands()[1]
    assert command[:4] == ["ns-train", "semsplat", "--data", "capture/"]
    folders = {name: root / name for name in ("nerfstudio", "colmap")}
    captures = {
        "nerfstudio": _processed_capture(town, folders["nerfstudio"], "nerfstudio"),
        "colmap": _processed_capture(town, folders["colmap"], "colmap"),
    }
    before = {name: (_digests(c / "labels"), _digests(c / "images")) for name, c in captures.items()}
    commands = {
        "nerfstudio": (command + APPENDED, folders["nerfstudio"]),
        "colmap": (
            command + APPENDED + ["--pipeline.datamanager.dataparser.colmap.eval-mode", "fraction"],
            folders["colmap"],
        ),
    }
    broken = make_capture("colmap")
    shutil.copyfile(broken / "labels" / "000003.png", broken / "labels" / "000042.png")
    captures["broken"], folders["broken"] = broken, root / "broken"
    commands["broken"] = (
        ["ns-train", "semsplat", "--data", str(broken), *APPENDED[:8], "--output-dir", str(folders["broken"])],
        root,
    )
    sparse = make_capture("colmap", n_points=2)
    captures["sparse"], folders["sparse"] = sparse, root / "sparse"
    commands["sparse"] = (
        ["ns-train", "semsplat", "--data", str(sparse), *APPENDED, "--output-dir", str(folders["sparse"] / "outputs")]
        + ["--experiment-name", "capture"],
        root,
    )
    env = {k: v for k, v in os.environ.items() if k != "SEMSPLAT_TRACEBACK"}
    done = console_scripts(commands, env, root / "logs")
    results = {}
    for name, process in done.items():
        run_dir = folders[name] / "outputs" / "capture" / "semsplat" / TIMESTAMP
        results[name] = dict(
            capture=captures[name],
            rc=process.returncode,
            stdout=process.stdout,
            stderr=process.stderr,
            run_dir=run_dir,
            untouched=name in ("broken", "sparse")
            or (_digests(captures[name] / "labels"), _digests(captures[name] / "images")) == before[name],
        )
    return results


def _means(run: dict) -> Tuple[torch.Tensor, dict]:
    """The trained Gaussians' centres [N, 3] and the run's dataparser_transforms.json."""
    checkpoint = next((run["run_dir"] / "nerfstudio_models").glob("step-*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
    means = next(v for k, v in state.items() if k.endswith("gauss_params.means"))
    return means, json.loads((run["run_dir"] / "dataparser_transforms.json").read_text())


@pytest.mark.slow
def test_ns_train_on_captures_trains_comparably_with_automatic_pseudo_labels(runs):
    for name in ("nerfstudio", "colmap"):
        run = runs[name]
        assert run["rc"] == 0, run["stderr"][-3000:]
        out = " ".join(run["stdout"].split())  # rich wraps long lines
        kind = "a nerfstudio capture" if name == "nerfstudio" else "a COLMAP model"
        assert f"capture is {kind}" in out
        assert "2 training (frame_00004, frame_00010), 1 evaluation (frame_00011)" in out
        # The prior's pseudo labels were made first, then listed by the dataparser (11 training images, 2 labelled).
        assert "none in capture/semsplat_pseudo/pseudo; making them with the prior" in out
        assert "pseudo labels for 9 unlabelled training images (semsplat_pseudo/, 9 with confidence)" in out
        meta = json.loads((run["capture"] / "semsplat_pseudo" / "pseudo" / "meta.json").read_text())
        assert meta["origin"] == "auto" and meta["counts"]["written"] == 9
        assert run["untouched"]  # labels/ and images/ were only read
    # Same photos, cameras, split, seed points and pseudo labels in the same training frame: the runs match closely.
    means_ns, transform_ns = _means(runs["nerfstudio"])
    means_colmap, transform_colmap = _means(runs["colmap"])
    assert means_ns.shape == means_colmap.shape and means_ns.shape[0] > 200
    np.testing.assert_allclose(transform_ns["transform"], transform_colmap["transform"], atol=1e-5)
    assert float((means_ns - means_colmap).abs().max()) < 1e-3


@pytest.mark.slow
def test_ns_train_bad_capture_is_one_line(runs):
    run = runs["broken"]
    assert run["rc"] == 2, run["stderr"][-3000:]
    assert "Traceback" not in run["stderr"]
    last = run["stderr"].rstrip("\n").splitlines()[-1]
    label = run["capture"] / "labels" / "000042.png"
    assert last.startswith(f"ns-train: error: {label}: no image of the capture has the stem '000042'"), last


@pytest.mark.slow
def test_ns_train_on_a_capture_with_too_few_sparse_points_trains_from_random_points(runs):
    run = runs["sparse"]
    assert run["rc"] == 0, run["stderr"][-3000:]
    said = " ".join((run["stdout"] + run["stderr"]).split())  # rich and warnings wrap long lines
    points_file = run["capture"] / "sparse" / "0" / "points3D.txt"
    count = len([line for line in points_file.read_text().splitlines() if line and not line.startswith("#")])
    assert count < 100
    assert (
        f"{points_file}: the capture's sparse model holds {count} points (fewer than 100); random initialisation "
        "will be used" in said
    )
    # No depth for reprojection either: the automatic prior learns from the labelled images alone.
    assert "prior: no depth" in said and "the prior trains on the labelled views alone" in said
    meta = json.loads((run["capture"] / "semsplat_pseudo" / "pseudo" / "meta.json").read_text())
    assert meta["origin"] == "auto" and meta["counts"]["written"] == 9
    means = _means(run)[0]
    assert means.shape[0] >= 100  # splatfacto's random initialisation, not the handful of points


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(runs, monkeypatch: pytest.MonkeyPatch):
    """The README's "From a folder of drone photos", its commands read from README.md. Step 1 (ns-process-data)
    needs the colmap binary, which the install does not bring: the runs start from the capture it leaves. Step 2
    labels three images (``runs``); step 3's ns-train is the ``nerfstudio`` run; semsplat-predict runs here (its
    console script's entry point, in this process); ns-viewer is started by tests/scripts/test_viewer_browser.py."""
    commands = walkthrough_commands()
    assert [command[0] for command in commands] == ["ns-process-data", "ns-train", "semsplat-predict", "ns-viewer"]
    assert commands[0][1:] == ["images", "--data", "photos/", "--output-dir", "capture/"]
    assert "capture/labels/frame_00012.png" in README.read_text()  # step 2's naming example
    run = runs["nerfstudio"]
    assert run["rc"] == 0, run["stderr"][-3000:]
    folder = run["capture"].parent
    assert sorted(p.name for p in (run["capture"] / "images").iterdir())[:2] == ["frame_00001.png", "frame_00002.png"]

    # semsplat-predict as written, <time> being the run's timestamp.
    predict = [argument.replace("<time>", TIMESTAMP) for argument in commands[2]]
    config = folder / predict[predict.index("--load-config") + 1]
    assert config == run["run_dir"] / "config.yml" and config.is_file()
    from semsplat_ns.scripts.predict import entrypoint

    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", predict)
    entrypoint()
    summary = json.loads((run["run_dir"] / "predict" / "predict.json").read_text())
    train, test = summary["splits"]["train"]["stems"], summary["splits"]["test"]["stems"]
    assert sorted(train + test) == [f"frame_{i:05d}" for i in range(1, 13)] and test == ["frame_00011"]
    for split, stems in (("train", train), ("test", test)):
        for stem in stems:
            ids = irt_io.read_label(run["run_dir"] / "predict" / split / "labels" / f"{stem}.png", None, None)
            assert ids.shape == (32, 32) and int(ids.max()) < len(summary["class_names"])

    # ns-viewer opens the same run.
    viewer = [argument.replace("<time>", TIMESTAMP) for argument in commands[3]]
    assert folder / viewer[viewer.index("--load-config") + 1] == config


@pytest.mark.slow
def test_export_and_eval_in_the_capture_frame_and_predict_refusals(
    runs, town: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from plyfile import PlyData

    from semsplat_ns.scripts.export import ExportArgs
    from semsplat_ns.scripts.export import run as export

    seeds, _, _ = surface_points(town, n_points=400)  # [N, 3] the town's (= COLMAP's world) frame
    for name in ("nerfstudio", "colmap"):
        run = runs[name]
        assert run["rc"] == 0, run["stderr"][-3000:]
        config = run["run_dir"] / "config.yml"
        monkeypatch.chdir(run["capture"].parent)  # the run's --data is capture/, relative, as the README has it
        summary = export(ExportArgs(load_config=config, output_dir=tmp_path / "export" / name))
        # nerfstudio oriented, centred and scaled the capture (its default "up" / "poses" / auto scale) ...
        transform = np.array(summary["dataparser_transform"])  # [3, 4]
        assert not np.allclose(transform[:, :3], np.eye(3), atol=1e-2) and abs(summary["dataparser_scale"] - 1) > 0.01
        vertex = PlyData.read(str(tmp_path / "export" / name / "semantic_points.ply"))["vertex"]
        exported = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=-1).astype(np.float64)  # [N, 3]
        assert summary["n_gaussians"] == len(seeds)
        # ... and the export undoes it: 10 steps barely move a Gaussian, so each exported centre lies by its seed
        # point, in the town's frame.
        nearest = np.linalg.norm(exported[:, None] - seeds[None], axis=-1).min(axis=1)  # [N]
        assert np.median(nearest) < 5e-3 and nearest.max() < 0.05, name

    run = runs["colmap"]
    config = run["run_dir"] / "config.yml"
    # Predictions never land among the capture's own files (checked before the checkpoint is loaded).
    from semsplat_ns.eval.predict import PredictionError
    from semsplat_ns.scripts.predict import PredictArgs
    from semsplat_ns.scripts.predict import run as predict

    for inside in ("labels", "images", "images_2/x", "colmap", "sparse", "semsplat_pseudo", "."):
        with pytest.raises(PredictionError, match="refusing to write predictions"):
            predict(PredictArgs(load_config=config, output_dir=run["capture"] / inside))
    assert not (run["capture"] / "train").exists() and not (run["capture"] / "labels" / "train").exists()

    # semsplat-eval scores the capture's eval images that have labels (nerfstudio's split, not test/).
    from semsplat_ns.scripts.eval import EvalArgs
    from semsplat_ns.scripts.eval import run as evaluate

    metrics = evaluate(EvalArgs(load_config=config, output_dir=tmp_path / "eval", save_images=False))
    assert metrics["n_views"] == 1 and 0.0 <= metrics["acc"] <= 1.0
