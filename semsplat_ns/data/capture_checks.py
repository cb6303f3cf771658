"""Checks of a capture's files for the ``semsplat-data`` dataparser, and the one console line that says what a
capture holds.

Every file a run needs is checked before training, each failure one
:class:`~semsplat_ns.data.irt_io.IRTDataError` naming the file: the images nerfstudio's split lists (present,
unique stems, readable, the camera's size, a camera splatfacto trains on), the labels (a known image's stem, at
least one in training), and pseudo labels, boundary masks and confidence maps in ``<capture>/semsplat_pseudo/``
(decoded, the size of the picture training uses, class ids in range).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from PIL import Image

from semsplat_ns.data.capture_labels import LABELS_DIR, PreparedLabel, describe_missing, training_geometry
from semsplat_ns.data.capture_sources import FLAG, SUPPORTED_CAMERA_TYPES, Layout
from semsplat_ns.data.irt_io import IRTDataError
from semsplat_ns.pseudo.store import CAPTURE_STORE, check_pseudo_files, list_confidence_files, output_paths


@dataclass(frozen=True)
class CaptureSplit:
    """A split of a capture as nerfstudio parsed it, plus what semsplat adds."""

    outputs: DataparserOutputs
    stems: List[str]
    labels: List[Optional[PreparedLabel]]
    pseudo: List[Optional[Path]] = field(default_factory=list)
    """``semsplat_pseudo/pseudo/<stem>.png`` per image where it exists (training split only), else None."""
    boundary: List[Optional[Path]] = field(default_factory=list)
    confidence: List[Optional[Path]] = field(default_factory=list)


def check_capture(
    scene: Path,
    source: Path,
    layout: Layout,
    train: DataparserOutputs,
    evaluation: DataparserOutputs,
    labels: Dict[str, Path],
) -> None:
    """Checks the images, cameras and labels of a train and an eval split (one error naming the file).

    Args:
        scene: The capture folder.
        source: The file or folder nerfstudio read (transforms.json, the COLMAP model).
        layout: The capture's layout.
        train: nerfstudio's training split.
        evaluation: nerfstudio's evaluation split.
        labels: The capture's labels by stem.
    """
    all_images: List[Path] = list(dict.fromkeys([Path(p) for p in train.image_filenames + evaluation.image_filenames]))
    problem = describe_missing(all_images, f"image (listed by {source.name})")
    if problem:
        raise IRTDataError(problem)
    by_stem: Dict[str, Path] = {}
    for path in all_images:
        if path.stem in by_stem:
            raise IRTDataError(
                f"{path}: two images share the stem {path.stem!r} ({by_stem[path.stem]}); labels/<stem>.png and "
                "predictions are named by stem, so stems must be unique"
            )
        by_stem[path.stem] = path
    for outputs in (train, evaluation):
        for index, camera_type in enumerate(outputs.cameras.camera_type.view(-1).tolist()):
            if camera_type not in [t.value for t in SUPPORTED_CAMERA_TYPES]:
                raise IRTDataError(
                    f"{source}: the camera of {Path(outputs.image_filenames[index]).name} is "
                    f"{CameraType(camera_type).name}; splatfacto trains on perspective and fisheye cameras only"
                )
        check_photo_sizes(outputs, source)
    orphans = sorted(set(labels) - set(by_stem))
    if orphans:
        shown = ", ".join(sorted(by_stem)[:8]) + (", ..." if len(by_stem) > 8 else "")
        raise IRTDataError(
            f"{labels[orphans[0]]}: no image of the capture has the stem {orphans[0]!r} (labels/<stem>.png is "
            f"named after an image that {source.name} lists; its images: {shown})"
            + (f"; also {', '.join(orphans[1:5])}" if len(orphans) > 1 else "")
        )
    if not labels:
        raise IRTDataError(
            f"{scene / LABELS_DIR}: no label; semsplat needs at least one labels/<image stem>.png "
            "(8-bit PNG, class id in channel 0, 255 = ignore; docs/CAPTURES.md)"
        )
    train_stems = {Path(p).stem for p in train.image_filenames}
    if not train_stems & set(labels):
        raise IRTDataError(
            f"{scene / LABELS_DIR}: every labelled image ({', '.join(sorted(labels)[:5])}) is in the evaluation "
            f"split nerfstudio chose; training needs at least one: label a training image, or choose the split "
            f"with {FLAG}.{layout}.eval-mode (e.g. all, or interval with {FLAG}.{layout}.eval-interval)"
        )


def check_photo_sizes(outputs: DataparserOutputs, source: Path) -> None:
    """Every photo's size (read from its header) against its camera's, which nerfstudio asserts later."""
    widths = outputs.cameras.width.view(-1).tolist()
    heights = outputs.cameras.height.view(-1).tolist()
    for path, width, height in zip(outputs.image_filenames, widths, heights):
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, SyntaxError, ValueError) as err:
            raise IRTDataError(f"{path}: cannot read the photo (not an image?): {err}") from None
        if size != (width, height):
            raise IRTDataError(
                f"{path}: size {size[0]}x{size[1]} differs from its camera in {source.name} ({width}x{height})"
            )


def pseudo_label_files(
    scene: Path, outputs: DataparserOutputs, num_classes: int, load_pseudo_labels: bool
) -> Tuple[List[Optional[Path]], List[Optional[Path]], List[Optional[Path]]]:
    """The pseudo labels, boundary masks and confidence maps of the training images in
    ``<scene>/semsplat_pseudo/`` (as irt-data lists ``train/pseudo``, ``train/boundary``, ``train/confidence``),
    each decoded and checked against the picture training uses: the photo's size, or for a camera with
    distortion the size of the photo nerfstudio undistorts and crops.

    Args:
        scene: The capture folder.
        outputs: nerfstudio's training split.
        num_classes: The capture's number of classes.
        load_pseudo_labels: False: pseudo labels (and so confidence maps) are not listed; masks are.

    Returns:
        Pseudo label, boundary mask and confidence map per image, None where there is none.
    """
    root = scene / CAPTURE_STORE
    stems = [Path(p).stem for p in outputs.image_filenames]
    pseudo: List[Optional[Path]] = []
    boundary: List[Optional[Path]] = []
    for stem in stems:
        pseudo_path, boundary_path = output_paths(root, stem)
        pseudo.append(pseudo_path if load_pseudo_labels and pseudo_path.is_file() else None)
        boundary.append(boundary_path if boundary_path.is_file() else None)
    sizes = np.zeros((len(stems), 2), dtype=np.int64)  # [N, 2] (width, height) of the training pictures
    for index, (pseudo_path, boundary_path) in enumerate(zip(pseudo, boundary)):
        if pseudo_path is None and boundary_path is None:
            continue
        _, (height, width) = training_geometry(outputs.cameras[index].reshape(()))
        sizes[index] = (width, height)
        photo = Path(outputs.image_filenames[index])
        check_pseudo_files(pseudo_path, boundary_path, (width, height), photo, num_classes)
    confidence = list_confidence_files(pseudo, sizes, [Path(p) for p in outputs.image_filenames])
    return pseudo, boundary, confidence


def announce_line(
    scene: Path,
    layout: Layout,
    source: Path,
    eval_mode: str,
    train: CaptureSplit,
    evaluation: CaptureSplit,
    points: Optional[np.ndarray],
    load_points: bool,
    too_few: Optional[int] = None,
) -> str:
    """The console line on what a capture holds: layout, split sizes, labelled images, pseudo labels, seed points.

    Args:
        scene: The capture folder.
        layout: Its layout.
        source: The file or folder nerfstudio read.
        eval_mode: nerfstudio's eval-mode option for the format.
        train: The training split.
        evaluation: The evaluation split.
        points: The seed points [P, 3], or None.
        load_points: Whether seed points were asked for.
        too_few: How many sparse points the capture had when they were too few to seed with (a warning said so).
    """
    labelled_train = [s for s, label in zip(train.stems, train.labels) if label]
    labelled_eval = [s for s, label in zip(evaluation.stems, evaluation.labels) if label]
    prepared = sorted({step for label in train.labels + evaluation.labels if label for step in label.steps})
    what = "a nerfstudio capture" if layout == "nerfstudio" else "a COLMAP model"
    line = (
        f"semsplat-data: {scene} is {what} ({source.relative_to(scene)}): "
        f"{len(train.stems)} training and {len(evaluation.stems)} evaluation images (nerfstudio's split: "
        f"{FLAG}.{layout}.eval-mode {eval_mode}, unless the capture lists its splits); "
        f"labelled: {len(labelled_train)} training ({', '.join(labelled_train[:6])}"
        f"{', ...' if len(labelled_train) > 6 else ''})"
    )
    if labelled_eval:
        line += f", {len(labelled_eval)} evaluation ({', '.join(labelled_eval[:6])}) for segmentation metrics"
    elif not evaluation.stems:
        line += "; nerfstudio's split left no evaluation image"
    else:
        line += (
            "; no evaluation image has a label, so evaluation gives RGB metrics only (label one of "
            f"{', '.join(evaluation.stems[:6])}{', ...' if len(evaluation.stems) > 6 else ''} for segmentation "
            "metrics)"
        )
    if prepared:
        line += f"; labels {' and '.join(prepared)} as nerfstudio's photos are (written to semsplat_labels/)"
    pseudo = sum(1 for label, path in zip(train.labels, train.pseudo) if path is not None and label is None)
    if pseudo:
        confident = sum(1 for path in train.confidence if path is not None)
        line += f"; pseudo labels for {pseudo} unlabelled training images ({CAPTURE_STORE}/"
        line += f", {confident} with confidence)" if confident else ")"
    if not load_points:
        line += f"; seed points off ({FLAG}.load-points False)"
    elif points is None:
        had = "no sparse points in the capture" if too_few is None else f"too few sparse points to seed ({too_few})"
        line += f"; {had}: splatfacto starts from random points"
    else:
        line += f"; {len(points)} seed points from the capture's sparse model"
    return line
