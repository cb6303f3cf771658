"""The pseudo-label store: where pseudo labels, boundary masks and their record live in a scene, how they
are written (atomically), checked and measured against full labels.

Everything lives under one folder, the store root: ``<scene>/train`` of an IRT scene, ``<capture>/semsplat_pseudo``
of a nerfstudio capture or COLMAP model (never the capture's ``images/`` or ``labels/``)::

    <root>/pseudo/<stem>.png       8-bit class ids, 255 = no pseudo label
    <root>/boundary/<stem>.png     B: 255 where no labelled view observes the pixel, else 0
    <root>/confidence/<stem>.png   8-bit confidence of the pseudo label, round(255 * p) (--backend prior only)
    <root>/pseudo/meta.json        backend, parameters, input digest, per-step times, counts (and --report figures)

A capture's files are drawn on the pictures nerfstudio trains on: ``images_<N>/`` when it downscales, the
undistorted (and cropped) photo when the camera has distortion.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from semsplat_ns.console import CONSOLE
from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError
from semsplat_ns.pseudo.scene import TrainSplit

META_NAME = "meta.json"
"""Name of the record written beside the pseudo labels."""

PSEUDO_DIR, BOUNDARY_DIR = "pseudo", "boundary"
"""Folders of the store root holding the pseudo labels and the boundary masks."""

CONFIDENCE_DIR = "confidence"
"""Folder of the store root holding the per-pixel confidence of the pseudo labels."""

CAPTURE_STORE = "semsplat_pseudo"
"""The store root of a capture, inside the capture folder."""


def store_root(scene_dir: Path) -> Path:
    """Where a scene's pseudo labels live: ``<scene>/train`` for an IRT scene (it has ``train/``), else
    ``<scene>/semsplat_pseudo`` (a capture). A :class:`~semsplat_ns.pseudo.scene.TrainSplit` knows its own
    (``.root``), also for a capture whose layout was forced."""
    scene_dir = Path(scene_dir)
    return scene_dir / "train" if (scene_dir / "train").is_dir() else scene_dir / CAPTURE_STORE


def output_paths(root: Path, stem: str) -> Tuple[Path, Path]:
    """Pseudo label and boundary mask of one training view, in the store ``root``."""
    return Path(root) / PSEUDO_DIR / f"{stem}.png", Path(root) / BOUNDARY_DIR / f"{stem}.png"


def confidence_file(root: Path, stem: str) -> Path:
    """Confidence map of one training view's pseudo label, in the store ``root``."""
    return Path(root) / CONFIDENCE_DIR / f"{stem}.png"


def confidence_path(scene_dir: Path, stem: str) -> Path:
    """Confidence map of one training view's pseudo label, in the store of the scene at ``scene_dir``."""
    return confidence_file(store_root(scene_dir), stem)


def meta_path(root: Path) -> Path:
    """The record of the pseudo labels in the store ``root``."""
    return Path(root) / PSEUDO_DIR / META_NAME


def encode_confidence(probability: np.ndarray) -> np.ndarray:
    """A confidence in [0, 1] as stored: uint8 ``round(255 * p)``.

    Args:
        probability: float [H, W], values in [0, 1] (clipped).

    Returns:
        uint8 [H, W].
    """
    return np.round(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_confidence(path: Path) -> np.ndarray:
    """Reads a confidence map (``train/confidence/<stem>.png``).

    Args:
        path: 8-bit 1-channel PNG, value = round(255 * confidence).

    Returns:
        float32 [H, W] in [0, 1].
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decodes the whole file: a truncated PNG fails here, not in training
            mode = image.mode
            pixels = np.asarray(image)
    except FileNotFoundError:
        raise IRTDataError(f"{path}: confidence file does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise IRTDataError(f"{path}: cannot read the confidence image (truncated or not an image?): {err}") from None
    if mode != "L":
        raise IRTDataError(
            f"{path}: a confidence map must be a 1-channel 8-bit PNG (value = round(255 * p)); got PIL mode {mode!r}"
        )
    return pixels.astype(np.float32) / 255.0  # [H, W]


def list_confidence_files(
    pseudo_paths: Sequence[Optional[Path]], sizes: np.ndarray, photo_paths: Sequence[Path]
) -> List[Optional[Path]]:
    """The confidence map beside each pseudo label (``train/confidence/<stem>.png`` for
    ``train/pseudo/<stem>.png``) where it exists, each decoded once and checked against its photo's size.

    Args:
        pseudo_paths: Pseudo label per view, None where there is none (then no confidence is listed).
        sizes: int [N, 2] (width, height) of each view's photo.
        photo_paths: The photos, for the message.

    Returns:
        Confidence file per view, None where there is none.
    """
    paths: List[Optional[Path]] = []
    for pseudo, (width, height), photo in zip(pseudo_paths, sizes, photo_paths):
        path = None if pseudo is None else Path(pseudo).parent.parent / CONFIDENCE_DIR / Path(pseudo).name
        if path is None or not path.is_file():
            paths.append(None)
            continue
        confidence = read_confidence(path)  # [H, W]
        if confidence.shape != (height, width):
            raise IRTDataError(
                f"{path}: size {confidence.shape[1]}x{confidence.shape[0]} differs from its photo {Path(photo).name} "
                f"({width}x{height}); a confidence map must match the photo pixel for pixel"
            )
        paths.append(path)
    return paths


def input_digest(scene: TrainSplit) -> str:
    """SHA-256 over everything pseudo labels are made from (``scene.input_files``: classes.json and every training
    view's photo, label and camera files), by name relative to the scene and content; file times are left out, so
    a copied scene keeps it.

    Args:
        scene: The training split.

    Returns:
        Hex digest.
    """
    digest = hashlib.sha256()
    scene_dir = scene.scene_dir
    for path in scene.input_files:
        if not path.is_file():
            continue
        # The name relative to the scene, so the digest does not depend on where the scene lies.
        digest.update(str(path.relative_to(scene_dir) if path.is_relative_to(scene_dir) else path.name).encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_pseudo_files(
    pseudo: Optional[Path], boundary: Optional[Path], size: Tuple[int, int], photo: Path, num_classes: int
) -> None:
    """Decodes a view's pseudo label and boundary mask (each when given) and checks them against its picture.

    Args:
        pseudo: ``<root>/pseudo/<stem>.png`` or None.
        boundary: ``<root>/boundary/<stem>.png`` or None.
        size: (width, height) of the picture the view trains on.
        photo: Its photo, for the message.
        num_classes: The scene's number of classes.

    Raises:
        IRTDataError: Naming the file: unreadable, not the picture's size, or a class id out of range.
    """
    width, height = size
    for path, reader in ((pseudo, irt_io.read_pseudo_label), (boundary, irt_io.read_boundary_mask)):
        if path is None:
            continue
        pixels = reader(path)  # [H, W]
        if pixels.shape[:2] != (height, width):
            raise IRTDataError(
                f"{path}: size {pixels.shape[1]}x{pixels.shape[0]} differs from the picture of {Path(photo).name} that "
                f"training uses ({width}x{height}); pseudo labels and masks must match it pixel for pixel (remake them "
                "with semsplat-pseudo-labels --overwrite)"
            )
        if path is pseudo:
            bad = (pixels >= num_classes) & (pixels != IGNORE_ID)
            if bad.any():
                raise IRTDataError(
                    f"{path}: pseudo class id {int(pixels[bad].max())} but the scene has {num_classes} classes "
                    "(255 = no pseudo label)"
                )


def read_previous_meta(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        CONSOLE.print(f"[yellow]{path}: unreadable earlier record; it will be replaced.[/yellow]")
        return None


def coverage_stats(pseudo: np.ndarray, boundary: np.ndarray) -> Dict[str, float]:
    """Share of pixels with a pseudo label and share inside B.

    Args:
        pseudo: uint8 [H, W] pseudo ids, 255 = none.
        boundary: bool [H, W] B.

    Returns:
        ``{"coverage": ..., "boundary_share": ...}`` in [0, 1].
    """
    return {"coverage": float((pseudo != IGNORE_ID).mean()), "boundary_share": float(boundary.mean())}


def accuracy_against(pseudo: np.ndarray, truth: np.ndarray) -> Tuple[int, int, int]:
    """Counts for pseudo-label accuracy against full ground truth.

    Args:
        pseudo: uint8 [H, W] pseudo ids, 255 = none.
        truth: uint8 [H, W] true ids (255 = none).

    Returns:
        (correct, set_and_judged, judged): pixels where the pseudo id equals the truth; pixels with
        both a pseudo id and a true id; pixels with a true id.
    """
    judged = truth != IGNORE_ID  # [H, W]
    set_here = judged & (pseudo != IGNORE_ID)  # [H, W]
    correct = set_here & (pseudo == truth)  # [H, W]
    return int(correct.sum()), int(set_here.sum()), int(judged.sum())


def measure_against_truth(scene: TrainSplit, gt_dir: Path) -> dict:
    """Pseudo-label pixel accuracy (where set) and coverage against full labels ``<gt_dir>/<stem>.png``.

    Args:
        scene: The training split whose pseudo labels and boundary masks (in ``scene.root``) are measured.
        gt_dir: Folder of full labels, one per unlabelled training view.

    Returns:
        Overall and inside-B accuracy and coverage, and per-view figures.
    """
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise IRTDataError(f"{gt_dir}: --report folder of full labels does not exist")
    totals = np.zeros(6, dtype=np.int64)  # correct, set, judged; the same inside B
    per_view = {}
    with _progress() as progress:
        task = progress.add_task("Measuring against full labels", total=len(scene.targets))
        for i in scene.targets:
            stem = scene.stems[i]
            pseudo_path, boundary_path = output_paths(scene.root, stem)
            if not (pseudo_path.is_file() and boundary_path.is_file()):
                progress.advance(task)
                continue
            truth = irt_io.read_label(gt_dir / f"{stem}.png", scene.class_colors, scene.num_classes)  # [H, W]
            pseudo = irt_io.read_pseudo_label(pseudo_path)  # [H, W]
            boundary = irt_io.read_boundary_mask(boundary_path)  # [H, W]
            if truth.shape != pseudo.shape:
                raise IRTDataError(f"{gt_dir / (stem + '.png')}: is {truth.shape}, the pseudo label {pseudo.shape}")
            everywhere = accuracy_against(pseudo, truth)
            inside = accuracy_against(
                np.where(boundary, pseudo, IGNORE_ID).astype(np.uint8),
                np.where(boundary, truth, IGNORE_ID).astype(np.uint8),
            )
            totals += np.array(everywhere + inside, dtype=np.int64)
            per_view[stem] = {
                "accuracy": everywhere[0] / everywhere[1] if everywhere[1] else None,
                "coverage": everywhere[1] / max(everywhere[2], 1),
            }
            progress.advance(task)
    return {
        "gt_dir": str(gt_dir),
        "views": len(per_view),
        # None where no pixel has a pseudo label (accuracy undefined).
        "accuracy": float(totals[0] / totals[1]) if totals[1] else None,
        "coverage": float(totals[1] / max(totals[2], 1)),
        "accuracy_in_boundary": float(totals[3] / totals[4]) if totals[4] else None,
        "coverage_in_boundary": float(totals[4] / max(totals[5], 1)),
        "per_view": per_view,
    }
