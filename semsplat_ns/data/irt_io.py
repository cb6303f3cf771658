"""Reading and checking the files of an IRT scene (see docs/IRT_LAYOUT.md).

Every reader raises one :class:`IRTDataError` naming the file and what is wrong with it, so a bad
scene stops before training with a message the user can act on.

    <scene>/classes.json                optional {"names": [...], "colors": [[r, g, b], ...]}
                                        (read by :mod:`semsplat_ns.data.classes`)
    <scene>/<split>/color/<stem>.png|jpg photo (every view)
    <scene>/<split>/rgb/<stem>.png       label (labelled views only; ground truth, never written)
    <scene>/<split>/pose/<stem>.txt      4x4 camera-to-world, OpenCV axes
    <scene>/<split>/intrinsics/<stem>.txt 4x4 whose top-left 3x3 is K
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from semsplat_ns.atomic import atomic_open
from semsplat_ns.errors import UserInputError

IGNORE_ID = 255
"""Label / pseudo-label value meaning "no class here"."""

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Photo file types read from ``color/``."""

POSE_TOLERANCE = 1e-3
"""Largest deviation accepted from an orthonormal rotation with determinant +1."""


DATA_ENV_VAR = "SEMSPLAT_DATA"
"""Environment variable naming a folder of scenes, for ``--data <scene name>``."""


class IRTDataError(UserInputError):
    """A file of an IRT scene is missing, unreadable or inconsistent; the message names it."""


def resolve_scene_dir(data: Path) -> Path:
    """Finds the scene folder that ``--data`` names: the one resolver of every command that takes a scene.

    Args:
        data: An existing folder (used as is), or a bare name resolved to ``$SEMSPLAT_DATA/<name>``,
            then ``./data/<name>``.

    Returns:
        The scene folder (absolute when found by name).

    Raises:
        IRTDataError: Nothing found; the message lists every place looked at.
    """
    data = Path(data).expanduser()
    if data.is_dir():
        return data
    looked = [data]
    if not data.is_absolute() and len(data.parts) == 1:
        env_root = os.environ.get(DATA_ENV_VAR)
        # Absolute, so a run started elsewhere later still finds the scene.
        candidates = ([Path(env_root).expanduser() / data] if env_root else []) + [Path("data") / data]
        candidates = [candidate.absolute() for candidate in candidates]
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        looked += candidates
    where = ", ".join(str(p.absolute()) for p in looked)
    env_note = "" if os.environ.get(DATA_ENV_VAR) else f" (${DATA_ENV_VAR} is not set)"
    raise IRTDataError(f"scene {str(data)!r} not found; looked in: {where}{env_note}")


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split, paired by stem (sorted naturally)."""

    split_dir: Path
    """The split folder, e.g. ``<scene>/train``."""
    stems: List[str]
    """File stems of the views, in natural order."""
    photo_paths: List[Path]
    """``color/<stem>.png|jpg`` per view."""
    pose_paths: List[Path]
    """``pose/<stem>.txt`` per view."""
    intrinsics_paths: List[Path]
    """``intrinsics/<stem>.txt`` per view."""
    label_paths: List[Optional[Path]]
    """``rgb/<stem>.png`` per view, None for an unlabelled view."""


def _natural_key(text: str) -> list:
    # "img2" before "img10".
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_matrix4(path: Path) -> np.ndarray:
    """Reads a 4x4 matrix stored as 16 whitespace-separated numbers.

    Args:
        path: Text file with exactly 16 finite numbers, row-major.

    Returns:
        float64 [4, 4] matrix.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise IRTDataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    tokens = text.split()
    try:
        values = np.array([float(token) for token in tokens], dtype=np.float64)  # [16]
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise IRTDataError(f"{path}: {bad!r} is not a number; expected 16 numbers (a 4x4 matrix)") from None
    if values.size != 16:
        raise IRTDataError(f"{path}: holds {values.size} numbers; expected 16 (a 4x4 matrix, row-major)")
    if not np.all(np.isfinite(values)):
        raise IRTDataError(f"{path}: contains NaN or infinite values")
    return values.reshape(4, 4)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_intrinsics(path: Path) -> np.ndarray:
    """Reads a pinhole K from the top-left 3x3 of a 4x4 intrinsics file.

    Pixel centres are at +0.5 (cx = W/2 for a centred principal point), as in nerfstudio.

    Args:
        path: Text file with 16 numbers; K = top-left 3x3, fx and fy > 0, no skew, last row 0 0 1.

    Returns:
        float64 [3, 3] K.
    """
    path = Path(path)
    K = read_matrix4(path)[:3, :3]  # [3, 3]
    fx, fy = K[0, 0], K[1, 1]
    if fx <= 0 or fy <= 0:
        raise IRTDataError(f"{path}: focal lengths must be positive; got fx={fx:g}, fy={fy:g}")
    if abs(K[0, 1]) > 1e-6 * fx or K[1, 0] != 0:
        raise IRTDataError(f"{path}: skewed intrinsics (K[0,1]={K[0, 1]:g}, K[1,0]={K[1, 0]:g}) are not supported")
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise IRTDataError(f"{path}: third row of K must be 0 0 1; got {K[2].tolist()}")
    return K


def read_pose(path: Path) -> np.ndarray:
    """Reads a rigid 4x4 camera-to-world pose (OpenCV axes: x right, y down, z forward).

    Args:
        path: Text file with 16 finite numbers; rotation orthonormal with det +1 (within 1e-3),
            last row 0 0 0 1.

    Returns:
        float64 [4, 4] camera-to-world.
    """
    path = Path(path)
    c2w = read_matrix4(path)  # [4, 4]
    if not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0], atol=POSE_TOLERANCE):
        raise IRTDataError(f"{path}: last row of the pose must be 0 0 0 1; got {c2w[3].tolist()}")
    rotation = c2w[:3, :3]  # [3, 3]
    deviation = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if deviation > POSE_TOLERANCE:
        raise IRTDataError(
            f"{path}: the rotation part is not orthonormal (|R^T R - I| = {deviation:.3g} > {POSE_TOLERANCE:g}); "
            "poses must be rigid camera-to-world transforms without scale or shear"
        )
    det = float(np.linalg.det(rotation))
    if abs(det - 1.0) > POSE_TOLERANCE:
        raise IRTDataError(
            f"{path}: the rotation has determinant {det:.4f}, expected +1; a reflection (det -1) means "
            "a flipped axis, e.g. a pose in a left-handed convention"
        )
    return c2w


def _open_loaded(path: Path, what: str) -> Image.Image:
    # load() decodes the whole file, so a truncated PNG/JPEG fails here and not later in training.
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise IRTDataError(f"{path}: {what} file does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise IRTDataError(f"{path}: cannot read the {what} image (truncated or not an image?): {err}") from None
    return image


def read_cameras(files: SplitFiles) -> Tuple[np.ndarray, np.ndarray]:
    """K [N, 3, 3] and OpenCV camera-to-world [N, 4, 4] of every view of a split, each file checked."""
    Ks = np.stack([read_intrinsics(p) for p in files.intrinsics_paths])  # [N, 3, 3]
    c2ws = np.stack([read_pose(p) for p in files.pose_paths])  # [N, 4, 4]
    return Ks, c2ws


def read_photo(path: Path) -> np.ndarray:
    """Reads a photo as 8-bit RGB.

    RGBA drops alpha, grey becomes 3 equal channels, 16-bit is scaled to 8-bit.

    Args:
        path: PNG or JPEG photo.

    Returns:
        uint8 [H, W, 3].
    """
    path = Path(path)
    image = _open_loaded(path, "photo")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image).astype(np.float64)  # [H, W]
        if grey.min() < 0 or grey.max() > 65535:
            raise IRTDataError(f"{path}: integer photo values outside 0..65535")
        grey8 = np.round(grey / 257.0).astype(np.uint8)  # [H, W]
        return np.repeat(grey8[..., None], 3, axis=-1)  # [H, W, 3]
    if image.mode == "F":
        raise IRTDataError(f"{path}: floating-point photos are not supported; store 8- or 16-bit PNG/JPEG")
    if image.mode != "RGB":
        # P, L, LA, RGBA, CMYK, 1: PIL's conversions drop alpha and expand grey.
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()  # [H, W, 3]


def read_photo_size(path: Path) -> Tuple[int, int]:
    """Decodes a photo fully (catching truncated files) and returns its size.

    Args:
        path: PNG or JPEG photo.

    Returns:
        (width, height) in pixels.
    """
    path = Path(path)
    return _open_loaded(path, "photo").size


def _read_8bit_channels(path: Path, what: str) -> np.ndarray:
    """Loads an 8-bit image as [H, W] or [H, W, 3] (alpha dropped), without palette expansion."""
    image = _open_loaded(path, what)
    if image.mode in ("L", "P"):
        # A palette PNG stores the class id as the palette index.
        return np.asarray(image, dtype=np.uint8)  # [H, W]
    if image.mode == "LA":
        return np.asarray(image, dtype=np.uint8)[..., 0]  # [H, W]
    if image.mode in ("RGB", "RGBA"):
        return np.asarray(image, dtype=np.uint8)[..., :3]  # [H, W, 3]
    raise IRTDataError(f"{path}: {what} must be an 8-bit grey or RGB PNG; got PIL mode {image.mode!r}")


def read_label(
    path: Path,
    class_colors: Optional[np.ndarray],
    num_classes: Optional[int],
    *,
    color_coded: Optional[bool] = None,
) -> np.ndarray:
    """Reads a semantic label as class ids.

    A 1-channel image, or a 3-channel one with equal channels, holds the id in channel 0. A 3-channel
    image with unequal channels is colour-coded and decoded by exact match against ``class_colors``.
    An equal-channel image whose ids are out of range but whose pixels all are palette colours (e.g. a
    colour-coded label showing only grey classes such as Building 70,70,70) is decoded by colour too.

    Args:
        path: Label PNG (8-bit).
        class_colors: uint8 [C, 3] palette from classes.json; needed for colour-coded labels.
        num_classes: Number of classes; ids must be below it (or 255 = ignore). None skips the check.
        color_coded: True/False forces the interpretation; None detects it from the image.

    Returns:
        uint8 [H, W] class ids, 255 = ignore.
    """
    return decode_label(path, class_colors, num_classes, color_coded=color_coded)[0]


def decode_label(
    path: Path,
    class_colors: Optional[np.ndarray],
    num_classes: Optional[int],
    *,
    color_coded: Optional[bool] = None,
) -> Tuple[np.ndarray, bool]:
    """Like :func:`read_label`, also telling how the label was stored.

    Args:
        path: Label PNG (8-bit).
        class_colors: uint8 [C, 3] palette from classes.json, or None.
        num_classes: Number of classes, or None to skip the range check.
        color_coded: True/False forces the interpretation; None detects it from the image.

    Returns:
        uint8 [H, W] class ids (255 = ignore) and whether the file was colour-coded.
    """
    path = Path(path)
    pixels = _read_8bit_channels(path, "label")  # [H, W] or [H, W, 3]
    is_grey = pixels.ndim == 2 or bool(
        np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])
    )
    if color_coded is None:
        color_coded = not is_grey
        if is_grey and pixels.ndim == 3 and class_colors is not None and num_classes is not None:
            ids = pixels[..., 0]  # [H, W]
            out_of_range = (ids >= num_classes) & (ids != IGNORE_ID)
            if out_of_range.any() and _all_in_palette(pixels, class_colors):
                color_coded = True
    if color_coded:
        if pixels.ndim == 2:
            raise IRTDataError(f"{path}: a colour-coded label must have 3 channels; this one has 1")
        if class_colors is None:
            raise IRTDataError(
                f"{path}: the label is colour-coded (its channels differ) but the scene has no classes.json "
                "with 'colors' to decode it; add one, or store class ids in channel 0"
            )
        return _decode_colors(path, pixels, np.asarray(class_colors, dtype=np.uint8)), True
    ids = pixels if pixels.ndim == 2 else pixels[..., 0]  # [H, W]
    ids = np.ascontiguousarray(ids)
    if num_classes is not None:
        bad = (ids >= num_classes) & (ids != IGNORE_ID)
        if bad.any():
            worst = int(ids[bad].max())
            raise IRTDataError(
                f"{path}: class id {worst} found ({int(bad.sum())} pixels) but the scene has {num_classes} "
                f"classes (ids 0..{num_classes - 1}, 255 = ignore)"
            )
    return ids, False


def palette_codes(colors: np.ndarray) -> np.ndarray:
    """One integer per colour, ``r << 16 | g << 8 | b``: int64 [C] of uint8 [C, 3], for exact colour matching."""
    colors = colors.astype(np.int64)  # [C, 3]
    return (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]  # [C]


def _all_in_palette(pixels: np.ndarray, class_colors: np.ndarray) -> bool:
    codes = palette_codes(pixels.reshape(-1, 3))  # [H*W]
    return bool(np.isin(codes, palette_codes(np.asarray(class_colors))).all())


def _decode_colors(path: Path, pixels: np.ndarray, class_colors: np.ndarray) -> np.ndarray:
    codes = palette_codes(pixels.reshape(-1, 3))  # [H*W]
    palette = palette_codes(class_colors)  # [C]
    order = np.argsort(palette)  # [C]
    sorted_palette = palette[order]  # [C]
    where = np.clip(np.searchsorted(sorted_palette, codes), 0, len(palette) - 1)  # [H*W]
    found = sorted_palette[where] == codes  # [H*W]
    if not found.all():
        first = int(np.flatnonzero(~found)[0])
        row, col = divmod(first, pixels.shape[1])
        rgb = tuple(int(v) for v in pixels[row, col])
        raise IRTDataError(
            f"{path}: colour {rgb} at pixel (row {row}, col {col}) ({int((~found).sum())} pixels) matches "
            "no class colour in classes.json"
        )
    return order[where].astype(np.uint8).reshape(pixels.shape[:2])  # [H, W]


def read_pseudo_label(path: Path) -> np.ndarray:
    """Reads a pseudo label written by semsplat.

    Args:
        path: 8-bit 1-channel PNG of class ids, 255 = no pseudo label.

    Returns:
        uint8 [H, W].
    """
    path = Path(path)
    pixels = _read_8bit_channels(path, "pseudo label")
    if pixels.ndim != 2:
        raise IRTDataError(f"{path}: a pseudo label must be a 1-channel 8-bit PNG of class ids; it has 3 channels")
    return np.ascontiguousarray(pixels)


def read_boundary_mask(path: Path) -> np.ndarray:
    """Reads a boundary mask written by semsplat.

    Args:
        path: 8-bit 1-channel PNG holding only 0 and 255.

    Returns:
        bool [H, W], True on boundaries.
    """
    path = Path(path)
    pixels = _read_8bit_channels(path, "boundary mask")
    if pixels.ndim != 2:
        raise IRTDataError(f"{path}: a boundary mask must be a 1-channel 8-bit PNG; it has 3 channels")
    bad = (pixels != 0) & (pixels != 255)
    if bad.any():
        raise IRTDataError(
            f"{path}: a boundary mask holds only 0 and 255; found value {int(pixels[bad][0])} ({int(bad.sum())} pixels)"
        )
    return pixels == 255  # [H, W]


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    """Writes a PNG atomically: a temporary file in the same folder, then ``os.replace``.

    Refuses to write into the ``rgb/`` label folder of an IRT split (ground truth).

    Args:
        path: Destination ``.png``; its folder is created if needed.
        array: uint8 [H, W] or [H, W, 3]/[H, W, 4]; bool [H, W] is written as 0/255.
    """
    path = Path(path)
    if path.parent.name == "rgb" and (path.parent.parent / "color").is_dir():
        raise IRTDataError(f"{path}: refusing to write into an IRT rgb/ folder; it holds ground-truth labels")
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"atomic_write_png({path}): need uint8 [H, W] or [H, W, 3|4]; got {array.dtype} {array.shape}")
    with atomic_open(path, "wb") as handle:
        Image.fromarray(array).save(handle, format="PNG")


def _files_by_stem(folder: Path, suffixes: Tuple[str, ...]) -> dict:
    by_stem: dict = {}
    for entry in folder.iterdir():
        if entry.name.startswith(".") or not entry.is_file() or entry.suffix.lower() not in suffixes:
            continue
        if entry.stem in by_stem:
            raise IRTDataError(
                f"{folder}: two files share the stem {entry.stem!r}: {by_stem[entry.stem].name}, {entry.name}"
            )
        by_stem[entry.stem] = entry
    return by_stem


def _list_stems(stems) -> str:
    stems = sorted(stems, key=_natural_key)
    shown = ", ".join(stems[:10])
    return shown + (f", ... ({len(stems)} in all)" if len(stems) > 10 else "")


def find_split_stems(split_dir: Path) -> SplitFiles:
    """Pairs the photos, poses, intrinsics and labels of one split by file stem.

    Args:
        split_dir: ``<scene>/<split>`` holding ``color/``, ``pose/``, ``intrinsics/`` and optionally ``rgb/``.

    Returns:
        The paired files; views without a label file get None.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise IRTDataError(f"{split_dir}: split folder does not exist")
    if not (split_dir / "color").is_dir() and (split_dir / "rgb").is_dir():
        raise IRTDataError(
            f"{split_dir}: has rgb/ but no color/. In the segmentation arrangement that semsplat reads, "
            "color/ holds the photos and rgb/ the semantic labels; this scene looks like the older photo-only "
            "arrangement, where rgb/ held photos. Move the photos to color/ and put labels (class id in channel 0) "
            "in rgb/ for the labelled views only."
        )
    missing = [name for name in ("color", "pose", "intrinsics") if not (split_dir / name).is_dir()]
    if missing:
        paths = ", ".join(f"{split_dir / name}/" for name in missing)
        raise IRTDataError(f"{split_dir}: missing sub-folder(s) {paths}; a split needs color/, pose/ and intrinsics/")
    photos = _files_by_stem(split_dir / "color", PHOTO_SUFFIXES)
    poses = _files_by_stem(split_dir / "pose", (".txt",))
    intrinsics = _files_by_stem(split_dir / "intrinsics", (".txt",))
    if not photos:
        raise IRTDataError(f"{split_dir / 'color'}: no photos (.png/.jpg) found")
    folders = {"color": photos, "pose": poses, "intrinsics": intrinsics}
    all_stems = set(photos) | set(poses) | set(intrinsics)
    problems = []
    for name, files in folders.items():
        lacking = all_stems - set(files)
        if lacking:
            problems.append(f"{split_dir / name}/ lacks {_list_stems(lacking)}")
    labels: dict = {}
    if (split_dir / "rgb").is_dir():
        labels = _files_by_stem(split_dir / "rgb", (".png",))
        lossy = sorted(p.name for p in (split_dir / "rgb").iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if lossy:
            raise IRTDataError(
                f"{split_dir / 'rgb'}: labels must be PNG (JPEG compression changes class ids): {', '.join(lossy[:5])}"
            )
        orphans = set(labels) - set(photos)
        if orphans:
            problems.append(f"{split_dir / 'rgb'}/ has labels without a photo in color/: {_list_stems(orphans)}")
    if problems:
        raise IRTDataError(f"{split_dir}: files do not pair up by stem: " + "; ".join(problems))
    stems = sorted(photos, key=_natural_key)
    return SplitFiles(
        split_dir=split_dir,
        stems=stems,
        photo_paths=[photos[s] for s in stems],
        pose_paths=[poses[s] for s in stems],
        intrinsics_paths=[intrinsics[s] for s in stems],
        label_paths=[labels.get(s) for s in stems],
    )
