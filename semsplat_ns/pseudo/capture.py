"""A capture (nerfstudio ``transforms.json`` or a COLMAP model, with ``labels/<stem>.png``) as the pseudo-label
backends see it.

The capture is read by the ``semsplat-data`` dataparser, with the options ``ns-train`` reads it with when they
are given, so pseudo labels are made for exactly the views and pictures training uses: nerfstudio's train split,
its downscaled photos (``images_<N>/``), and for cameras with distortion the photo undistorted and cropped as
nerfstudio's full-image datamanager does it (labels already come prepared that way, in ``semsplat_labels/``).
Cameras are taken back from nerfstudio's training frame into the capture's own frame (its COLMAP world frame;
``dataparser_transform`` and ``dataparser_scale`` undone), so ``--depth-dir`` maps and depth rendered by
``--depth-config`` are in the capture's units. ``--depth points`` uses the capture's own sparse points (never
re-triangulated; nothing is written into ``sparse/``). Pseudo labels go to ``<capture>/semsplat_pseudo/``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from semsplat_ns.data.irt_io import IRTDataError
from semsplat_ns.pseudo.scene import TrainSplit
from semsplat_ns.pseudo.store import CAPTURE_STORE

# nerfstudio's cameras look down -z with y up (OpenGL); the backends use OpenCV's axes (y down, z forward).
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def is_capture(data: Path, dataparser: Optional[Any] = None) -> bool:
    """Whether ``data`` is read as a capture rather than an IRT scene (the ``semsplat-data`` rule, without
    importing nerfstudio): a forced layout decides; else a .json file or a folder without ``train/`` is a capture.

    Args:
        data: ``--data`` as given (folder or .json file).
        dataparser: The run's dataparser options, if any.
    """
    layout = getattr(dataparser, "layout", "auto")
    if layout != "auto":
        return layout != "irt"
    data = Path(data)
    if data.is_file():
        return data.suffix.lower() == ".json"
    return data.is_dir() and not (data / "train").is_dir()


def read_capture(data: Path, dataparser: Optional[Any] = None) -> TrainSplit:
    """The training split of a capture, as training sees it (see the module docstring).

    Args:
        data: The capture folder, or its transforms .json file.
        dataparser: ``semsplat-data`` options (a ``SemSplatDataParserConfig``) to read it with; None: defaults,
            and the dataparser's console line says what was found.

    Returns:
        The checked training split; its ``root`` is ``<capture>/semsplat_pseudo``.
    """
    from semsplat_ns.data.capture_dataparser import SemSplatDataParser, SemSplatDataParserConfig
    from semsplat_ns.data.capture_labels import LABELS_DIR, has_distortion, list_labels, training_geometry

    base = dataparser if isinstance(dataparser, SemSplatDataParserConfig) else SemSplatDataParserConfig()
    # Seed points are the depth of --depth points; pseudo labels already there are not read (they are remade).
    config = replace(base, data=Path(data), load_points=True, load_pseudo_labels=False)
    parser = config.setup()
    assert isinstance(parser, SemSplatDataParser)
    # ns-train prints the capture's line itself after making pseudo labels; the CLI prints it here.
    parser.announce = dataparser is None
    outputs = parser.get_dataparser_outputs("train")
    scene_dir = parser.scene_dir
    meta = outputs.metadata
    stems: List[str] = list(meta["stems"])
    label_paths: List[Optional[Path]] = [None if p is None else Path(p) for p in meta["semantic_filenames"]]

    transform = outputs.dataparser_transform.double().numpy()  # [3, 4] capture frame -> training frame
    scale = float(outputs.dataparser_scale)
    to_capture = np.linalg.inv(transform[:, :3])  # [3, 3]
    cameras = outputs.cameras
    Ks = np.zeros((len(stems), 3, 3))
    c2ws = np.tile(np.eye(4), (len(stems), 1, 1))  # [N, 4, 4]
    sizes = []
    undistort: List[Any] = []
    for i in range(len(stems)):
        camera = cameras[i].reshape(())
        Ks[i], size = training_geometry(camera)
        sizes.append(size)
        undistort.append(camera if has_distortion(camera) else None)
        c2w = cameras.camera_to_worlds[i].double().numpy()  # [3, 4] training frame, OpenGL axes
        c2ws[i, :3, :3] = to_capture @ c2w[:, :3] @ _OPENGL_TO_OPENCV
        c2ws[i, :3, 3] = to_capture @ (c2w[:, 3] / scale - transform[:, 3])
    points = None
    if "points3D_xyz" in meta:
        xyz = meta["points3D_xyz"].double().numpy()  # [P, 3] training frame
        points = (xyz / scale - transform[:, 3]) @ to_capture.T  # [P, 3] capture frame

    labelled = [i for i, p in enumerate(label_paths) if p is not None]
    if not labelled:
        raise IRTDataError(f"{scene_dir / LABELS_DIR}: no labelled training image; pseudo labels need at least one")
    inputs = [scene_dir / "classes.json", *parser.camera_files()]
    user_labels = list_labels(scene_dir / LABELS_DIR)
    for stem, photo in zip(stems, outputs.image_filenames):
        inputs.append(Path(photo))
        if stem in user_labels:
            inputs.append(user_labels[stem])
    return TrainSplit(
        stems=stems,
        photo_paths=[Path(p) for p in outputs.image_filenames],
        label_paths=label_paths,
        Ks=Ks,
        c2ws=c2ws,
        sizes=sizes,
        num_classes=int(meta["num_classes"]),
        class_colors=np.asarray(meta["class_colors"]) if (scene_dir / "classes.json").is_file() else None,
        labelled=labelled,
        targets=[i for i, p in enumerate(label_paths) if p is None],
        scene_dir=scene_dir,
        root=scene_dir / CAPTURE_STORE,
        input_files=inputs,
        points=points,
        points_cache=None,
        undistort=undistort if any(camera is not None for camera in undistort) else None,
    )
