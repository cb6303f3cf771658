"""Labels of a capture (``<capture>/labels/<image stem>.png``): listing, classes, and matching each label to the
picture nerfstudio trains on.

Labels use the IRT label formats (docs/IRT_LAYOUT.md): 8-bit PNG with the class id in channel 0 (255 =
ignore), or colour-coded through ``<capture>/classes.json``; they are decoded by
:mod:`semsplat_ns.data.irt_io`'s readers. A label is drawn on the photo as it lies in the capture's images
folder. nerfstudio may train on another picture of that photo, and then the label is brought along the same
way, ids never interpolated:

- downscaled: when nerfstudio reads ``images_<N>/`` (its automatic downscale), a label of the full-size photo
  is downscaled by nearest neighbour;
- undistorted: nerfstudio's full-image datamanager undistorts every photo whose camera has distortion
  coefficients (and crops it to the valid region). The label goes through the same function,
  ``_undistort_image`` of ``nerfstudio.data.datamanagers.full_images_datamanager``, applied to a map of pixel
  coordinates, then is sampled at the nearest pixel; pixels that map outside the label become 255.
  FISHEYE624 cameras: nerfstudio 1.1.5's ``_undistort_image`` swaps x and y in its remap, which is right only
  for a lens symmetric about the image diagonal (square photo, fx = fy, cx = cy, ...); a FISHEYE624 camera
  whose picture it misplaces by more than :data:`FISHEYE624_TOLERANCE_PX` (measured against nerfstudio's own
  ``fisheye624_project``) is refused (:func:`check_undistortion`).

Such prepared labels are written to ``<capture>/semsplat_labels/<variant>/<stem>.png`` (class ids, 1 channel),
rewritten by every run that parses the capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from PIL import Image

from semsplat_ns.data import irt_io
from semsplat_ns.data.classes import SceneClasses, default_palette, read_classes_json
from semsplat_ns.data.irt_io import IRTDataError

LABELS_DIR = "labels"
"""Folder of a capture that holds the label PNGs, named by image stem."""

PREPARED_DIR = "semsplat_labels"
"""Folder of a capture where labels brought to nerfstudio's pictures (downscaled, undistorted) are written."""


def list_labels(labels_dir: Path) -> Dict[str, Path]:
    """The label PNGs of a capture by stem; JPEG labels are refused (compression changes class ids).

    Args:
        labels_dir: ``<capture>/labels``; a missing folder holds no labels.

    Returns:
        Stem -> label file.
    """
    if not labels_dir.is_dir():
        return {}
    lossy = sorted(p.name for p in labels_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if lossy:
        raise IRTDataError(
            f"{labels_dir / lossy[0]}: labels must be PNG (JPEG compression changes class ids)"
            + (f"; also {', '.join(lossy[1:5])}" if len(lossy) > 1 else "")
        )
    return {p.stem: p for p in sorted(labels_dir.glob("*.png")) if not p.name.startswith(".") and p.is_file()}


def read_capture_classes(scene: Path, label_paths: List[Path]) -> Tuple[SceneClasses, Dict[Path, np.ndarray]]:
    """The classes of a capture, by the IRT rule, and every label decoded with them.

    Names and colours come from ``<scene>/classes.json``; without it the classes are ``class_<i>`` up to the
    largest id over the labels (as :func:`~semsplat_ns.data.classes.read_scene_classes` does for IRT scenes).

    Args:
        scene: The capture folder.
        label_paths: Every label of the capture.

    Returns:
        The classes, and each label's class ids uint8 [H, W] (255 = ignore).
    """
    classes_json = scene / "classes.json"
    decoded: Dict[Path, np.ndarray] = {}
    if classes_json.is_file():
        names, colors = read_classes_json(classes_json)
        is_color = False
        for path in label_paths:
            ids, color_coded = irt_io.decode_label(path, colors, len(names))  # [H, W]
            decoded[path] = ids
            is_color |= color_coded
        return SceneClasses(names=names, colors=colors, label_is_color=is_color), decoded
    max_id = -1
    for path in label_paths:
        ids, _ = irt_io.decode_label(path, None, None)  # [H, W]
        decoded[path] = ids
        valid = ids[ids != irt_io.IGNORE_ID]  # [M]
        if valid.size:
            max_id = max(max_id, int(valid.max()))
    if max_id < 0:
        raise IRTDataError(
            f"{scene}: no classes.json and no label in {scene / LABELS_DIR} holds a class id; cannot tell the "
            "number of classes"
        )
    names = [f"class_{i}" for i in range(max_id + 1)]
    return SceneClasses(names=names, colors=default_palette(max_id + 1), label_is_color=False), decoded


def has_distortion(camera: Cameras) -> bool:
    """Whether nerfstudio's full-image datamanager undistorts this camera's photo (its own test)."""
    params = camera.distortion_params
    return params is not None and not bool(torch.all(params == 0))


FISHEYE624_TOLERANCE_PX = 0.1
"""Largest distance (px) between where nerfstudio's undistorted picture of a FISHEYE624 photo reads the photo
and where nerfstudio's FISHEYE624 model projects that picture pixel's ray, for a camera semsplat accepts."""
_FISHEYE624_ERRORS: Dict[Tuple[float, ...], float] = {}
"""Measured misplacement (px) per FISHEYE624 lens (intrinsics, size, crop radius, coefficients)."""


def _coordinate_grid(height: int, width: int) -> np.ndarray:
    """float32 [H, W, 3]: each pixel's (x, y, 1), x and y its integer column and row."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)  # [H, W] each
    return np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # [H, W, 3]


def check_undistortion(camera: Cameras, source: Optional[Path] = None) -> None:
    """Refuses a FISHEYE624 camera (shape []) whose photo nerfstudio cannot undistort (see the module docstring).

    nerfstudio's undistorted picture of the photo is made of a map of pixel coordinates (as for labels) and
    compared, at every picture pixel it reads from inside the photo, with nerfstudio's ``fisheye624_project`` of
    that pixel's ray (the picture's K, integer pixel centres as ``cv2.remap`` takes them). Other camera types
    pass.

    Args:
        camera: One camera (shape []).
        source: The photo (or file) the camera belongs to, named in the error.

    Raises:
        IRTDataError: One line naming ``source`` and the camera model.
    """
    if int(camera.camera_type.item()) != CameraType.FISHEYE624.value or not has_distortion(camera):
        return
    from nerfstudio.cameras.camera_utils import fisheye624_project
    from nerfstudio.data.datamanagers.full_images_datamanager import _undistort_image

    where = f"{source}: " if source is not None else ""
    radius = (camera.metadata or {}).get("fisheye_crop_radius")
    if not isinstance(radius, float):
        raise IRTDataError(
            f"{where}camera model FISHEYE624 without a fisheye_crop_radius (transforms.json); nerfstudio needs it "
            "to undistort FISHEYE624 photos"
        )
    params = camera.distortion_params
    assert params is not None
    intrinsics = torch.cat([camera.fx, camera.fy, camera.cx, camera.cy]).double()  # [4]
    key = tuple(intrinsics.tolist()) + (float(camera.width.item()), float(camera.height.item()), radius)
    key += tuple(params.reshape(-1).tolist())
    error = _FISHEYE624_ERRORS.get(key)
    if error is None:
        height, width = int(camera.height.item()), int(camera.width.item())
        K = camera.get_intrinsics_matrices().numpy().copy()  # [3, 3]
        new_K, warped, _ = _undistort_image(camera, params.numpy().copy(), {}, _coordinate_grid(height, width), K)
        rows, cols = np.mgrid[0 : warped.shape[0], 0 : warped.shape[1]].astype(np.float64)  # [h, w] each
        new_K = np.asarray(new_K, dtype=np.float64)
        rays = np.stack(
            [(cols - new_K[0, 2]) / new_K[0, 0], (rows - new_K[1, 2]) / new_K[1, 1], np.ones_like(cols)], axis=-1
        )  # [h, w, 3]
        lens = torch.cat([intrinsics, params.reshape(-1).double()])[None]  # [1, 16]
        projected = fisheye624_project(torch.from_numpy(rays.reshape(1, -1, 3)), lens)[0].numpy()  # [h * w, 2]
        inside = warped[..., 2].reshape(-1) > 0.999  # [h * w]
        offsets = np.linalg.norm(warped[..., :2].reshape(-1, 2) - projected, axis=-1)[inside]  # [n]
        error = _FISHEYE624_ERRORS[key] = float(offsets.max()) if offsets.size else 0.0
    if error > FISHEYE624_TOLERANCE_PX:
        raise IRTDataError(
            f"{where}camera model FISHEYE624: nerfstudio's undistortion of FISHEYE624 photos (_undistort_image) "
            f"swaps x and y, and misplaces this camera's photo by up to {error:.2f} px (it is exact only for a "
            "square photo with fx = fy, cx = cy and p0 = p1, s0 = s2, s1 = s3); semsplat cannot train on it"
        )


def downscale_label(ids: np.ndarray, width: int, height: int) -> np.ndarray:
    """Class ids [H, W] resized to ``width`` x ``height`` by nearest neighbour (ids are never blended)."""
    return np.asarray(Image.fromarray(ids).resize((width, height), resample=Image.Resampling.NEAREST))  # [h, w]


def undistort_label(ids: np.ndarray, camera: Cameras) -> np.ndarray:
    """Class ids [H, W] undistorted as nerfstudio undistorts the photo of ``camera`` (same size and crop).

    nerfstudio's own undistortion (``_undistort_image``) resamples a map of pixel coordinates bilinearly,
    which moves each coordinate exactly where the photo's pixel comes from; the ids are then read at the
    nearest pixel. Where the map reaches outside the image (its third channel, 1 inside, falls below 1)
    the label is 255 (ignore), as the photo is blended with black there.

    Args:
        ids: uint8 [H, W], H and W the camera's height and width.
        camera: One camera (shape []) with its distortion parameters.

    Returns:
        uint8 [h, w]: the label in the undistorted (and cropped) photo's pixels.
    """
    from nerfstudio.data.datamanagers.full_images_datamanager import _undistort_image

    check_undistortion(camera)
    height, width = ids.shape
    grid = _coordinate_grid(height, width)  # [H, W, 3]
    K = camera.get_intrinsics_matrices().numpy().astype(np.float64)  # [3, 3]
    params = camera.distortion_params
    assert params is not None
    _, warped, _ = _undistort_image(camera, params.numpy().copy(), {}, grid, K)  # [h, w, 3]
    inside = warped[..., 2] > 0.999  # [h, w]
    cols = np.clip(np.rint(warped[..., 0]), 0, width - 1).astype(np.int64)  # [h, w]
    rows = np.clip(np.rint(warped[..., 1]), 0, height - 1).astype(np.int64)  # [h, w]
    return np.where(inside, ids[rows, cols], irt_io.IGNORE_ID).astype(np.uint8)  # [h, w]


def _nerfstudio_undistort(camera: Cameras, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """nerfstudio's ``_undistort_image`` called as its full-image datamanager calls it (float32 K and distortion
    parameters of the camera, no mask): the undistorted (cropped) image and its K [3, 3]."""
    from nerfstudio.data.datamanagers.full_images_datamanager import _undistort_image

    check_undistortion(camera)
    K = camera.get_intrinsics_matrices().numpy().copy()  # [3, 3]
    params = camera.distortion_params
    assert params is not None
    new_K, undistorted, _ = _undistort_image(camera, params.numpy().copy(), {}, image, K)
    return undistorted, np.asarray(new_K, dtype=np.float64)


def undistort_photo(photo: np.ndarray, camera: Cameras) -> np.ndarray:
    """A photo uint8 [H, W, 3] undistorted exactly as nerfstudio's full-image datamanager undistorts it for
    training (same function, same arguments), so pseudo labels are drawn on the picture training sees.

    Args:
        photo: The photo as read, the camera's size.
        camera: Its camera (shape []), with distortion parameters.

    Returns:
        uint8 [h, w, 3], the undistorted and cropped photo.
    """
    undistorted, _ = _nerfstudio_undistort(camera, np.ascontiguousarray(photo))
    return np.ascontiguousarray(undistorted)


def training_geometry(camera: Cameras) -> Tuple[np.ndarray, Tuple[int, int]]:
    """K [3, 3] (pixel centres at +0.5) and (height, width) of the picture nerfstudio trains on for a camera:
    the camera's own, or, when it has distortion, those of the undistorted (cropped) photo that nerfstudio's
    full-image datamanager makes (computed by its own function on a blank picture).

    Args:
        camera: One camera (shape []).

    Returns:
        float64 K [3, 3] and (height, width).
    """
    width, height = int(camera.width.item()), int(camera.height.item())
    if not has_distortion(camera):
        return camera.get_intrinsics_matrices().numpy().astype(np.float64), (height, width)
    blank, K = _nerfstudio_undistort(camera, np.zeros((height, width), dtype=np.uint8))  # [h, w]
    return K, (int(blank.shape[0]), int(blank.shape[1]))


@dataclass(frozen=True)
class PreparedLabel:
    """Where a view's label for training lies."""

    path: Path
    """The label file the datamanager reads: the capture's own, or a prepared copy."""
    steps: Tuple[str, ...]
    """What was done to it: () for the capture's own file, else "downscaled" and/or "undistorted"."""


def prepare_label(
    scene: Path,
    label_path: Path,
    ids: np.ndarray,
    photo_path: Path,
    photo_size: Tuple[int, int],
    camera: Cameras,
) -> PreparedLabel:
    """Brings a label to the picture nerfstudio trains on (see the module docstring); errors name the label.

    Args:
        scene: The capture folder (prepared labels go to ``<scene>/semsplat_labels/``).
        label_path: The label file.
        ids: Its class ids uint8 [H, W].
        photo_path: The photo nerfstudio reads for the view (``images/`` or ``images_<N>/``).
        photo_size: That photo's (width, height), equal to the camera's.
        camera: The view's camera (shape []).

    Returns:
        The label file to train on.
    """
    width, height = photo_size
    label_h, label_w = ids.shape
    steps: List[str] = []
    if (label_w, label_h) != (width, height):
        factor = int(round(label_w / width)) if width else 0
        # nerfstudio's downscaled photos lie in images_<N>/: a label of the full-size photo goes along.
        downscaled = (
            factor >= 2
            and photo_path.parent.name.endswith(f"_{factor}")
            and abs(label_w / factor - width) <= 1
            and abs(label_h / factor - height) <= 1
        )
        if not downscaled:
            raise IRTDataError(
                f"{label_path}: size {label_w}x{label_h} differs from its photo {photo_path.name} "
                f"({width}x{height}, in {photo_path.parent.name}/); a label must match the photo pixel for pixel"
            )
        ids = downscale_label(ids, width, height)
        steps.append("downscaled")
    if has_distortion(camera):
        check_undistortion(camera, photo_path)
        ids = undistort_label(ids, camera)
        steps.append("undistorted")
    if not steps:
        return PreparedLabel(path=label_path, steps=())
    variant = photo_path.parent.name + ("_undistorted" if "undistorted" in steps else "")
    target = scene / PREPARED_DIR / variant / f"{label_path.stem}.png"
    try:
        irt_io.atomic_write_png(target, ids)
    except OSError as err:
        raise IRTDataError(
            f"{target}: cannot write the label prepared from {label_path.name} ({err.strerror or err}); "
            f"semsplat writes labels brought to nerfstudio's pictures into {scene / PREPARED_DIR}"
        ) from None
    return PreparedLabel(path=target, steps=tuple(steps))


def describe_missing(paths: List[Path], what: str) -> Optional[str]:
    """``"<first path>: <what> does not exist (and N more: ...)"`` for missing files, or None when all exist."""
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return None
    more = f" ({len(missing) - 1} more: {', '.join(p.name for p in missing[1:6])}" if len(missing) > 1 else ""
    more += ", ...)" if len(missing) > 6 else (")" if more else "")
    return f"{missing[0]}: {what} does not exist{more}"
