"""Writes a demo town (an IRT scene made by :func:`~semsplat_ns.synthetic.scene_writer.make_scene`) as the
captures a mapping engineer brings: a nerfstudio capture as ``ns-process-data`` leaves it, or a bare COLMAP
model, each with a few label PNGs.

Cameras come from the generator itself (:func:`~semsplat_ns.synthetic.orbit.orbit_cameras` with the seed,
frame count and resolution of the scene's ``meta.json``), not from the scene's text files, and the sparse
points are surface points of the town (:func:`~semsplat_ns.synthetic.render.render_view` depth, back-projected),
so a reader can be checked against exact geometry. The photos are the scene's own files, so a capture and its
IRT form train on the same pixels.

Both layouts::

    <capture>/images/<stem>.png            every photo (train and test views of the scene)
    <capture>/labels/<stem>.png            labels of the chosen views (class id in channel 0, as in rgb/)
    <capture>/classes.json                 the scene's classes
    nerfstudio:  transforms.json, sparse_pc.ply (nerfstudio's own colmap_to_json), colmap/sparse/0/*.bin
    colmap:      sparse/0/{cameras,images,points3D}.txt (COLMAP TEXT model)

``keep_split`` also writes the scene's train/test split in each format's own way (``train_filenames`` /
``test_filenames`` in transforms.json; ``train_list.txt`` / ``test_list.txt`` beside a COLMAP model), so a
capture's evaluation views are the scene's test views; without it the format's default rule applies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from semsplat_ns.atomic import write_bytes_atomic, write_json_atomic
from semsplat_ns.synthetic.orbit import orbit_cameras
from semsplat_ns.synthetic.render import render_view
from semsplat_ns.synthetic.town import DemoSceneError, build_town

CaptureLayout = Literal["nerfstudio", "colmap"]
"""The capture layouts this module writes."""

CameraModelName = Literal["OPENCV", "PINHOLE"]
"""Camera models written: OPENCV (what ns-process-data writes by default) or PINHOLE."""

ImageNames = Literal["stems", "ns-process-data"]
"""How photos are named in a capture: the scene's stems, or ``frame_%05d`` from 1 as ns-process-data names them."""


def capture_stem(stems: Sequence[str], stem: str, image_names: ImageNames) -> str:
    """The capture's image stem of a scene frame (``stem`` among all frames ``stems``, in frame order)."""
    if image_names == "stems":
        return stem
    return f"frame_{list(stems).index(stem) + 1:05d}"


def _scene_meta(scene: Path) -> dict:
    """The scene's meta.json, which records how the generator made it."""
    path = scene / "meta.json"
    if not path.is_file():
        raise DemoSceneError(f"{path}: missing; write_capture needs a scene made by semsplat-make-scene")
    return json.loads(path.read_text())


def generator_cameras(scene: Union[str, Path]) -> Tuple[List[str], np.ndarray, np.ndarray, int]:
    """The exact cameras of a demo scene, recomputed by the generator from its meta.json.

    Args:
        scene: A scene written by :func:`~semsplat_ns.synthetic.scene_writer.make_scene`.

    Returns:
        Stems of all frames [N], K [3, 3] (pixel centres at +0.5), OpenCV camera-to-world [N, 4, 4], and the
        image size in pixels (square images).
    """
    meta = _scene_meta(Path(scene))
    frames, resolution = int(meta["frames"]), int(meta["res"][0])
    K, c2ws = orbit_cameras(frames, resolution, int(meta["seed"]), float(meta["hfov_deg"]))
    return [f"{i:06d}" for i in range(frames)], K, c2ws, resolution


def surface_points(
    scene: Union[str, Path], n_points: int = 400, n_views: int = 6
) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, float, float]]]:
    """Points on the town's surfaces, seen by a few frames (what an SfM model holds, without its noise).

    Each point is the hit of the ray through a pixel centre of one frame (its depth from the generator),
    coloured by that frame's photo.

    Args:
        scene: A demo scene (its meta.json names the town and cameras; its photos give the colours).
        n_points: About how many points to make.
        n_views: How many frames, spread over the orbit, the points come from.

    Returns:
        World points [P, 3] (float64), their colours [P, 3] (uint8), and per point the frame index and the
        pixel position (x, y) it was seen at, COLMAP's convention (the top-left pixel's centre is (0.5, 0.5)).
    """
    scene = Path(scene)
    meta = _scene_meta(scene)
    stems, K, c2ws, size = generator_cameras(scene)
    town = build_town(int(meta["seed"]))
    frames = np.linspace(0, len(stems), n_views, endpoint=False).astype(int)  # [V] spread over the orbit
    step = max(1, int(np.ceil(np.sqrt(size * size * n_views / max(n_points, 1)))))
    xyz: List[np.ndarray] = []
    rgb: List[np.ndarray] = []
    seen: List[Tuple[int, float, float]] = []
    for frame in frames:
        photo = _read_rgb(_photo_path(scene, stems[frame]))  # [H, W, 3]
        _, _, depth = render_view(town, K, c2ws[frame], size, size, supersample=1)  # [H, W]
        offset = (frame * 7) % step  # other pixels in each frame, so points do not line up across frames
        for v in range(offset, size, step):
            for u in range(offset, size, step):
                if not np.isfinite(depth[v, u]):
                    continue  # sky
                ray = np.linalg.solve(K, np.array([u + 0.5, v + 0.5, 1.0]))  # [3] camera frame, z = 1
                point = c2ws[frame][:3, :3] @ (depth[v, u] * ray) + c2ws[frame][:3, 3]  # [3]
                xyz.append(point)
                rgb.append(photo[v, u])
                seen.append((int(frame), u + 0.5, v + 0.5))
    if not xyz:
        raise DemoSceneError(f"{scene}: no surface point seen by the chosen frames")
    return np.stack(xyz), np.stack(rgb).astype(np.uint8), seen


def _photo_path(scene: Path, stem: str) -> Path:
    """The photo of a frame, in whichever split folder holds it."""
    for split in ("train", "test", "validation"):
        for suffix in (".png", ".jpg", ".jpeg"):
            path = scene / split / "color" / f"{stem}{suffix}"
            if path.is_file():
                return path
    raise DemoSceneError(f"{scene}: no photo of frame {stem} in train/color or test/color")


def _read_rgb(path: Path) -> np.ndarray:
    from semsplat_ns.data.irt_io import read_photo

    return read_photo(path)


def _scene_labels(scene: Path) -> Dict[str, Path]:
    """Label file of every labelled frame of the scene (train and test), by stem."""
    labels: Dict[str, Path] = {}
    for split in ("train", "test", "validation"):
        folder = scene / split / "rgb"
        if folder.is_dir():
            labels.update({p.stem: p for p in sorted(folder.glob("*.png"))})
    return labels


def _split_stems(scene: Path) -> Tuple[List[str], List[str]]:
    """Stems of the scene's train and test photos."""
    train = sorted(p.stem for p in (scene / "train" / "color").iterdir() if not p.name.startswith("."))
    test_dir = scene / "test" / "color"
    test = sorted(p.stem for p in test_dir.iterdir() if not p.name.startswith(".")) if test_dir.is_dir() else []
    return train, test


def _camera_params(K: np.ndarray, camera_model: CameraModelName, distortion: Sequence[float]) -> List[float]:
    """COLMAP camera parameters: PINHOLE fx fy cx cy, OPENCV fx fy cx cy k1 k2 p1 p2."""
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    if camera_model == "PINHOLE":
        if any(distortion):
            raise DemoSceneError("a PINHOLE camera has no distortion; use camera_model='OPENCV'")
        return [fx, fy, cx, cy]
    if len(distortion) != 4:
        raise DemoSceneError(f"distortion must be (k1, k2, p1, p2); got {tuple(distortion)}")
    return [fx, fy, cx, cy, *[float(d) for d in distortion]]


def write_colmap_model(
    model_dir: Union[str, Path],
    names: Sequence[str],
    K: np.ndarray,
    c2ws: np.ndarray,
    size: Tuple[int, int],
    xyz: np.ndarray,
    rgb: np.ndarray,
    seen: Sequence[Tuple[int, float, float]],
    camera_model: CameraModelName = "OPENCV",
    distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    text: bool = True,
) -> Path:
    """Writes one camera, the posed images and the points as a COLMAP model, through nerfstudio's COLMAP writers.

    Args:
        model_dir: Folder to write ``cameras``, ``images`` and ``points3D`` into (created).
        names: Image file names [N], as COLMAP stores them (relative to the images folder).
        K: Intrinsics [3, 3], pixel centres at +0.5 (COLMAP's convention too).
        c2ws: Camera-to-world [N, 4, 4], OpenCV axes (COLMAP's camera axes).
        size: Image (width, height).
        xyz: Points [P, 3] in the world frame.
        rgb: Point colours [P, 3] uint8.
        seen: Per point (image index, x, y): the one observation of its track.
        camera_model: The COLMAP camera model.
        distortion: OPENCV's (k1, k2, p1, p2).
        text: TEXT model (.txt) if True, else binary (.bin).

    Returns:
        ``model_dir``.
    """
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    params = np.array(_camera_params(K, camera_model, distortion), dtype=np.float64)
    cameras = {1: colmap.Camera(id=1, model=camera_model, width=int(size[0]), height=int(size[1]), params=params)}
    observations: Dict[int, List[Tuple[float, float, int]]] = {i: [] for i in range(len(names))}
    point2d_index: List[int] = []
    for point_id, (image, x, y) in enumerate(seen, start=1):
        point2d_index.append(len(observations[image]))
        observations[image].append((x, y, point_id))
    images = {}
    for i, name in enumerate(names):
        # COLMAP stores world-to-camera: R_w2c = R_c2w^T, t = -R_w2c C.
        rotation = c2ws[i][:3, :3].T  # [3, 3]
        translation = -rotation @ c2ws[i][:3, 3]  # [3]
        xys = np.array([[x, y] for x, y, _ in observations[i]], dtype=np.float64).reshape(-1, 2)  # [M, 2]
        ids = np.array([p for _, _, p in observations[i]], dtype=np.int64)  # [M]
        images[i + 1] = colmap.Image(
            id=i + 1,
            qvec=colmap.rotmat2qvec(rotation),
            tvec=translation,
            camera_id=1,
            name=name,
            xys=xys,
            point3D_ids=ids,
        )
    points = {
        point_id: colmap.Point3D(
            id=point_id,
            xyz=np.asarray(xyz[point_id - 1], dtype=np.float64),
            rgb=np.asarray(rgb[point_id - 1], dtype=np.uint8),
            error=0.0,
            image_ids=np.array([seen[point_id - 1][0] + 1], dtype=np.int64),
            point2D_idxs=np.array([point2d_index[point_id - 1]], dtype=np.int64),
        )
        for point_id in range(1, len(seen) + 1)
    }
    colmap.write_model(cameras, images, points, str(model_dir), ext=".txt" if text else ".bin")
    return model_dir


def write_capture(
    scene: Union[str, Path],
    out_dir: Union[str, Path],
    layout: CaptureLayout = "nerfstudio",
    *,
    camera_model: CameraModelName = "OPENCV",
    distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    label_stems: Optional[Sequence[str]] = None,
    keep_split: bool = True,
    n_points: int = 400,
    image_names: ImageNames = "stems",
) -> Path:
    """Writes a demo scene as a nerfstudio capture or a COLMAP model plus ``labels/`` and ``classes.json``.

    Args:
        scene: A scene made by :func:`~semsplat_ns.synthetic.scene_writer.make_scene` (read only).
        out_dir: The capture folder to create; must not exist or be empty.
        layout: ``nerfstudio`` (transforms.json as ``ns-process-data`` writes it, via nerfstudio's own
            ``colmap_to_json``) or ``colmap`` (a COLMAP TEXT model in ``sparse/0``).
        camera_model: ``OPENCV`` (ns-process-data's default) or ``PINHOLE``.
        distortion: OPENCV (k1, k2, p1, p2) recorded in the camera; the photos are NOT re-rendered with it (the
            generator renders pinhole views), so use it for checks of geometry, not for training.
        label_stems: Frames that get a label in ``labels/``; default: every frame the scene has a label for
            (its labelled training views and its test views). Other frames take theirs from ``gt_all/``.
        keep_split: Record the scene's train/test split in the format's own split lists.
        n_points: About how many sparse points the model holds (:func:`surface_points`).
        image_names: ``stems``: photos keep the scene's stems (``000003.png``); ``ns-process-data``: they are named
            as ``ns-process-data`` renames photos, ``frame_00001.png``, ... in frame order (labels follow).

    Returns:
        ``out_dir`` as a Path.
    """
    scene, out = Path(scene), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DemoSceneError(f"{out} already exists and is not empty")
    stems, K, c2ws, size = generator_cameras(scene)
    train, test = _split_stems(scene)
    if sorted(train + test) != stems:
        raise DemoSceneError(f"{scene}: its photos do not match the {len(stems)} frames of its meta.json")
    renamed = {stem: capture_stem(stems, stem, image_names) for stem in stems}
    names = [f"{renamed[stem]}.png" for stem in stems]
    for stem, name in zip(stems, names):
        source = _photo_path(scene, stem)
        if source.suffix.lower() != ".png":
            raise DemoSceneError(f"{source}: write_capture copies PNG photos only")
        write_bytes_atomic(out / "images" / name, source.read_bytes())
    labels = _scene_labels(scene)
    wanted = list(labels) if label_stems is None else list(label_stems)
    for stem in wanted:
        # Any frame can be labelled: gt_all/ holds the generator's label of every frame.
        source = labels.get(stem, scene / "gt_all" / f"{stem}.png")
        if not source.is_file():
            raise DemoSceneError(f"{scene}: frame {stem!r} has no label to copy (not in rgb/ or gt_all/)")
        write_bytes_atomic(out / "labels" / f"{renamed[stem]}.png", source.read_bytes())
    if (scene / "classes.json").is_file():
        shutil.copyfile(scene / "classes.json", out / "classes.json")
    xyz, rgb, seen = surface_points(scene, n_points)

    if layout == "colmap":
        write_colmap_model(out / "sparse" / "0", names, K, c2ws, (size, size), xyz, rgb, seen, camera_model, distortion)
        if keep_split:
            # ColmapDataParser reads <split>_list.txt: image names relative to images/.
            for split, split_stems in (("train", train), ("test", test)):
                text = "".join(f"{renamed[stem]}.png\n" for stem in split_stems)
                write_bytes_atomic(out / f"{split}_list.txt", text.encode())
        return out
    if layout != "nerfstudio":
        raise DemoSceneError(f"unknown capture layout {layout!r}; expected 'nerfstudio' or 'colmap'")

    # As ns-process-data leaves a capture: COLMAP's binary model in colmap/sparse/0, turned into transforms.json
    # and sparse_pc.ply by nerfstudio's own converter (which also records its world-axes change).
    from nerfstudio.process_data.colmap_utils import colmap_to_json

    model_dir = out / "colmap" / "sparse" / "0"
    write_colmap_model(model_dir, names, K, c2ws, (size, size), xyz, rgb, seen, camera_model, distortion, text=False)
    colmap_to_json(recon_dir=model_dir, output_dir=out)
    transforms = json.loads((out / "transforms.json").read_text())
    if camera_model == "PINHOLE":
        # colmap_to_json writes every pinhole model as OPENCV with zero distortion; a hand-written
        # transforms.json may name PINHOLE and leave the coefficients out.
        transforms["camera_model"] = "PINHOLE"
        for key in ("k1", "k2", "p1", "p2"):
            transforms.pop(key, None)
    if keep_split:
        transforms["train_filenames"] = [f"images/{renamed[stem]}.png" for stem in train]
        transforms["test_filenames"] = [f"images/{renamed[stem]}.png" for stem in test]
    write_json_atomic(out / "transforms.json", transforms, indent=4)
    return out
