"""The training split of a scene as the pseudo-label backends see it: cameras, sizes, classes, which views
are labelled, and their labels and photos; where the pseudo labels go, and what they are made from.

An IRT scene is read from its files (:func:`read_scene`); a nerfstudio capture or COLMAP model through the
``semsplat-data`` dataparser (:mod:`semsplat_ns.pseudo.capture`), so that its views are the pictures
nerfstudio trains on (``images_<N>/``, undistorted) in nerfstudio's train split.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.data import irt_io
from semsplat_ns.data.classes import read_scene_classes
from semsplat_ns.data.irt_io import IRTDataError

READ_THREADS = 8
"""Photos decoded at once by :func:`read_photos`."""


@dataclass
class TrainSplit:
    """The training split of a scene, read and checked. Cameras are in the scene's input frame (an IRT scene's
    pose frame; a capture's own, i.e. its COLMAP world frame), OpenCV axes, K with pixel centres at +0.5."""

    stems: List[str]
    """View names (file stems)."""
    photo_paths: List[Path]
    """The photo of each view as it is read (for a capture: the file nerfstudio reads, e.g. in images_2/)."""
    label_paths: List[Optional[Path]]
    """The label of each labelled view, drawn on the view's picture; None for the others."""
    Ks: np.ndarray  # [N, 3, 3]
    c2ws: np.ndarray  # [N, 4, 4]
    sizes: List[Tuple[int, int]]  # (height, width) per view
    num_classes: int
    class_colors: Optional[np.ndarray]  # [C, 3], to decode colour-coded labels; None without classes.json
    labelled: List[int]  # indices of labelled views
    targets: List[int]  # indices of unlabelled views
    scene_dir: Path
    """The scene or capture folder."""
    root: Path
    """Where the pseudo labels go (:func:`semsplat_ns.pseudo.store.store_root`)."""
    input_files: List[Path]
    """Every file the pseudo labels are made from, in a fixed order (:func:`~semsplat_ns.pseudo.store.input_digest`)."""
    points: Optional[np.ndarray] = None
    """float64 [P, 3] the scene's own sparse points (a capture's model) for ``--depth points``; None: triangulate
    them from the known poses (an IRT scene), cached in :attr:`points_cache`."""
    points_cache: Optional[Path] = None
    """Where triangulated points are cached (IRT: ``<scene>/sparse/points3D.ply``); None: never triangulate."""
    undistort: Optional[List[Any]] = None
    """Per view, the nerfstudio camera (shape []) whose distortion is removed from the photo before use, as
    nerfstudio's datamanager removes it; None (or a None entry): the photo is used as read."""


def read_scene(scene_dir: Path, dataparser: Optional[Any] = None) -> TrainSplit:
    """Reads cameras, sizes and classes of the training split.

    Args:
        scene_dir: An IRT scene folder, a nerfstudio capture or a COLMAP model (or a capture's .json file).
        dataparser: For a capture, the ``semsplat-data`` options to read it with (its split, downscale, ...), as
            ``ns-train`` has them; None: the defaults. An IRT scene is read from its files either way.

    Returns:
        The checked training split.
    """
    scene_dir = Path(scene_dir)
    from semsplat_ns.pseudo.capture import is_capture, read_capture

    if is_capture(scene_dir, dataparser):
        return read_capture(scene_dir, dataparser)
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
    class_colors = classes.colors if (scene_dir / "classes.json").is_file() else None
    inputs = [scene_dir / "classes.json"]
    for photo, pose, intrinsics, label in zip(
        files.photo_paths, files.pose_paths, files.intrinsics_paths, files.label_paths
    ):
        inputs += [photo, pose, intrinsics] + ([label] if label is not None else [])
    return TrainSplit(
        stems=list(files.stems),
        photo_paths=list(files.photo_paths),
        label_paths=list(files.label_paths),
        Ks=Ks,
        c2ws=c2ws,
        sizes=sizes,
        num_classes=classes.num_classes,
        class_colors=class_colors,
        labelled=labelled,
        targets=targets,
        scene_dir=scene_dir,
        root=scene_dir / "train",
        input_files=inputs,
        points_cache=scene_dir / "sparse" / "points3D.ply",
    )


def read_labels(scene: TrainSplit, index: int) -> np.ndarray:
    """Class ids uint8 [H, W] (255 = none) of a labelled view, checked against its picture's size."""
    path = scene.label_paths[index]
    if path is None:
        raise IRTDataError(f"{scene.photo_paths[index]}: view {scene.stems[index]!r} has no label")
    labels = irt_io.read_label(path, scene.class_colors, scene.num_classes)  # [H, W]
    if labels.shape != scene.sizes[index]:
        raise IRTDataError(
            f"{path}: label is {labels.shape[1]}x{labels.shape[0]} but its photo is "
            f"{scene.sizes[index][1]}x{scene.sizes[index][0]}"
        )
    return np.require(labels, requirements="W")  # writable: torch.from_numpy warns on read-only arrays


def read_photo(scene: TrainSplit, index: int) -> np.ndarray:
    """The picture uint8 [H, W, 3] of one view: its photo, undistorted as nerfstudio undistorts it if it must be."""
    photo = irt_io.read_photo(scene.photo_paths[index])  # [H0, W0, 3]
    camera = scene.undistort[index] if scene.undistort is not None else None
    if camera is not None:
        from semsplat_ns.data.capture_labels import undistort_photo

        photo = undistort_photo(photo, camera)  # [H, W, 3]
    return photo


def read_photos(
    scene: TrainSplit, indices: Sequence[int], photos: Optional[Dict[int, np.ndarray]] = None
) -> Dict[int, np.ndarray]:
    """Pictures uint8 [H, W, 3] of the given views (:func:`read_photo`), added to ``photos`` (read only where
    missing)."""
    photos = {} if photos is None else photos
    missing = [i for i in indices if i not in photos]
    if not missing:
        return photos
    # PNG and JPEG decoding release the GIL: a few threads read several photos at once.
    with _progress() as progress, ThreadPoolExecutor(max(1, min(READ_THREADS, len(missing)))) as pool:
        task = progress.add_task("Reading training photos", total=len(missing))
        for i, photo in zip(missing, pool.map(lambda index: read_photo(scene, index), missing)):
            if photo.shape[:2] != scene.sizes[i]:
                raise IRTDataError(f"{scene.photo_paths[i]}: size changed while reading")
            photos[i] = photo  # [H, W, 3]
            progress.advance(task)
    return photos
