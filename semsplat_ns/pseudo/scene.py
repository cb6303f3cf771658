"""The training split of a scene as the pseudo-label backends see it: cameras, sizes, classes, which views
are labelled, and their labels and photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.data import irt_io
from semsplat_ns.data.classes import read_scene_classes
from semsplat_ns.data.irt_io import IRTDataError


@dataclass
class TrainSplit:
    """The training split of a scene, read and checked."""

    files: irt_io.SplitFiles
    Ks: np.ndarray  # [N, 3, 3]
    c2ws: np.ndarray  # [N, 4, 4]
    sizes: List[Tuple[int, int]]  # (height, width) per view
    num_classes: int
    class_colors: Optional[np.ndarray]  # [C, 3]
    labelled: List[int]  # indices of labelled views
    targets: List[int]  # indices of unlabelled views


def read_scene(scene_dir: Path) -> TrainSplit:
    """Reads cameras, sizes and classes of the training split.

    Args:
        scene_dir: The IRT scene folder.

    Returns:
        The checked training split.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise IRTDataError(f"{scene_dir}: scene folder does not exist")
    files = irt_io.find_split_stems(scene_dir / "train")
    Ks, c2ws = irt_io.read_cameras(files)  # [N, 3, 3], [N, 4, 4]
    sizes = []
    for path in files.photo_paths:
        width, height = irt_io.read_photo_size(path)
        sizes.append((height, width))
    labelled = [i for i, p in enumerate(files.label_paths) if p is not None]
    targets = [i for i, p in enumerate(files.label_paths) if p is None]
    if not labelled:
        raise IRTDataError(f"{scene_dir / 'train' / 'rgb'}: no labelled training view; pseudo labels need at least one")
    # The dataparser's rule, so both agree on the number of classes.
    classes = read_scene_classes(scene_dir)
    num_classes = classes.num_classes
    class_colors = classes.colors if (scene_dir / "classes.json").is_file() else None
    return TrainSplit(files, Ks, c2ws, sizes, num_classes, class_colors, labelled, targets)


def read_labels(scene: TrainSplit, index: int) -> np.ndarray:
    """Class ids uint8 [H, W] (255 = none) of a labelled view, checked against its photo's size."""
    path = scene.files.label_paths[index]
    if path is None:
        raise IRTDataError(f"{scene.files.photo_paths[index]}: view {scene.files.stems[index]!r} has no label")
    labels = irt_io.read_label(path, scene.class_colors, scene.num_classes)  # [H, W]
    if labels.shape != scene.sizes[index]:
        raise IRTDataError(
            f"{path}: label is {labels.shape[1]}x{labels.shape[0]} but its photo is "
            f"{scene.sizes[index][1]}x{scene.sizes[index][0]}"
        )
    return labels


def read_photos(
    scene: TrainSplit, indices: Sequence[int], photos: Optional[Dict[int, np.ndarray]] = None
) -> Dict[int, np.ndarray]:
    """Photos uint8 [H, W, 3] of the given views, added to ``photos`` (read only where missing)."""
    photos = {} if photos is None else photos
    missing = [i for i in indices if i not in photos]
    if not missing:
        return photos
    with _progress() as progress:
        task = progress.add_task("Reading training photos", total=len(missing))
        for i in missing:
            photo = irt_io.read_photo(scene.files.photo_paths[i])  # [H, W, 3]
            if photo.shape[:2] != scene.sizes[i]:
                raise IRTDataError(f"{scene.files.photo_paths[i]}: size changed while reading")
            photos[i] = photo
            progress.advance(task)
    return photos
