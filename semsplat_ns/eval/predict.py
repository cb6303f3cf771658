"""Per-view predictions of a trained semsplat model written as image files: class ids, colours, confidence.

For every view of a split, three 8-bit PNGs named by the view's stem::

    <output_dir>/<split>/labels/<stem>.png      class ids in the IRT label format: the id in channel 0, with the
                                                three channels equal (a file ``rgb/`` could hold, read back by
                                                :func:`semsplat_ns.data.irt_io.read_label`)
    <output_dir>/<split>/colormap/<stem>.png    each pixel's class colour from the scene palette
    <output_dir>/<split>/confidence/<stem>.png  round(255 * p), p = the softmax probability of the predicted class
    <output_dir>/predict.json                   what was written: checkpoint, splits, views, classes, encoding

Views are rendered at the cameras' full resolution through the model's public
:meth:`~semsplat_ns.model.semsplat_model.SemSplatModel.render_semantics`, as ``semsplat-eval`` does. A capture
camera with lens distortion (perspective k1..k4, p1, p2 or fisheye coefficients) is rendered as the undistorted
pinhole camera nerfstudio trained on, and its three pictures are brought back to the original photo, pixel for
pixel (:mod:`semsplat_ns.eval.distorted`, nearest neighbour): they have the photo's size and lie on it. Photo
pixels that the undistorted picture does not cover (the corners nerfstudio crops away) are 255 in the labels
(the IRT ignore id), the ignore colour in the colour map and 0 in the confidence. The ground truth is never
written over: an output folder inside one of the scene's split folders (where ``rgb/`` holds the labels), or
inside any IRT ``rgb/`` folder, is refused before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from rich.progress import Progress

from semsplat_ns.data.capture_labels import has_distortion
from semsplat_ns.data.irt_io import IGNORE_ID
from semsplat_ns.errors import UserInputError
from semsplat_ns.eval.distorted import DistortedFrames
from semsplat_ns.eval.plots import colorize_labels, save_png

SCENE_SPLITS = ("train", "test", "validation")
"""Split folders of an IRT scene (see docs/IRT_LAYOUT.md); none of them may receive predictions."""

LABELS_DIR, COLORMAP_DIR, CONFIDENCE_DIR = "labels", "colormap", "confidence"
"""Sub-folders of ``<output_dir>/<split>/``."""

CONFIDENCE_ENCODING = "uint8 PNG = round(255 * p), p = softmax probability of the predicted class"
"""How a confidence PNG stores the probability (recorded in predict.json)."""

MAX_CLASSES = 255
"""Ids must fit 8 bits below 255, the IRT ignore value."""


class PredictionError(UserInputError):
    """A prediction request that cannot be carried out (bad config path, forbidden output folder, ...)."""


@dataclass(frozen=True)
class SplitViews:
    """The cameras of one split of a scene, in the dataparser's order."""

    split: str
    """Split folder name (train, test or validation)."""
    cameras: Cameras
    """One camera per view [N]."""
    stems: List[str]
    """File stem of each view; the output files are named after it."""


def split_views(datamanager, split: str) -> SplitViews:
    """Builds the cameras of one split of a loaded pipeline's scene.

    Args:
        datamanager: The pipeline's SemSplatDataManager (its dataparser is an IRT dataparser).
        split: Split folder name: ``train``, ``test`` or ``validation``.

    Returns:
        The split's cameras and stems, posed in the training frame (the train poses' transform).
    """
    if split not in SCENE_SPLITS:
        raise PredictionError(f"unknown split {split!r}; expected one of {', '.join(SCENE_SPLITS)}")
    dataparser = datamanager.dataparser
    if split == "train":
        # Built by the datamanager already; building it again would re-check every file of the split.
        outputs = datamanager.train_dataparser_outputs
    else:
        # The IRT dataparser serves nerfstudio's "test" split from the folder its eval_split names.
        saved = dataparser.config.eval_split
        dataparser.config.eval_split = split
        try:
            outputs = dataparser.get_dataparser_outputs(split="test")
        finally:
            dataparser.config.eval_split = saved
    stems = [str(stem) for stem in outputs.metadata["stems"]]
    return SplitViews(split=split, cameras=outputs.cameras, stems=stems)


def scene_dir_of_run(config_path: Path) -> Path:
    """The scene folder a training run read, from its config.yml (without loading the checkpoint).

    Args:
        config_path: The run's config.yml.

    Returns:
        The scene folder, resolved as the IRT dataparser resolves ``--data``.
    """
    import yaml

    from semsplat_ns.data.irt_dataparser import resolve_scene_dir

    # nerfstudio writes the config with yaml.dump of the dataclasses; eval_setup reads it back the same way.
    config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    datamanager = config.pipeline.datamanager
    # As FullImageDatamanager does: the datamanager's own ``data`` overrides the dataparser's.
    return resolve_scene_dir(datamanager.data if datamanager.data is not None else datamanager.dataparser.data)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    return path == folder or folder in path.parents


def check_output_dir(output_dir: Path, scene_dir: Path, splits: Sequence[str]) -> None:
    """Refuses output folders whose files would land among a scene's inputs or ground truth.

    Args:
        output_dir: Requested output folder.
        scene_dir: The IRT scene the model was trained on.
        splits: The splits to be written (each into ``output_dir/<split>``).

    Raises:
        PredictionError: When ``output_dir`` or a split's output folder lies inside one of the scene's split
            folders (``train/``, ``test/``, ``validation/``, which hold ``rgb/`` labels), or inside any IRT
            ``rgb/`` label folder (a folder named ``rgb`` beside a ``color`` folder).
    """
    # resolve() follows symlinks, so a link into the scene cannot sneak past the check.
    output = Path(output_dir).expanduser().resolve()
    scene = Path(scene_dir).expanduser().resolve()
    for destination in [output] + [output / split for split in splits]:
        for split_folder in (scene / name for name in SCENE_SPLITS):
            if _inside(destination, split_folder):
                raise PredictionError(
                    f"refusing to write predictions to {destination}: it is inside the scene's split folder "
                    f"{split_folder} (photos and ground-truth labels); choose an output folder outside "
                    f"{', '.join(str(scene / name) for name in SCENE_SPLITS)}"
                )
        for folder in [destination, *destination.parents]:
            if folder.name == "rgb" and (folder.parent / "color").is_dir():
                raise PredictionError(
                    f"refusing to write predictions to {destination}: {folder} is an IRT rgb/ folder, which holds "
                    "ground-truth labels"
                )


def class_palette(model) -> np.ndarray:
    """The model's class colours as uint8 RGB [C, 3] (the scene palette; as ``semsplat-eval`` paints)."""
    return (model.class_colors.detach().cpu().numpy() * 255).round().astype(np.uint8)  # [C, 3]


def encode_confidence(probability: torch.Tensor) -> np.ndarray:
    """Probabilities [H, W] in [0, 1] as the uint8 confidence image [H, W] = round(255 * p)."""
    return (probability.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # [H, W]


def labels_image(ids: np.ndarray) -> np.ndarray:
    """Class ids [H, W] as an IRT label image [H, W, 3]: the id in channel 0 and, as in the data, in all three."""
    return np.repeat(ids.astype(np.uint8)[..., None], 3, axis=2)  # [H, W, 3]


@torch.no_grad()
def predict_view(model, camera: Cameras, frames: Optional[DistortedFrames] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The predicted class id and its probability at every pixel of a view's photo.

    A camera without distortion is rendered as it is. A camera with distortion coefficients is rendered as the
    undistorted pinhole camera nerfstudio trains on, and the render is read back at every pixel of the original
    (distorted) photo (:func:`~semsplat_ns.eval.distorted.distorted_frame`, computed once per lens); pixels
    outside the rendered frame get id 255 (:data:`~semsplat_ns.data.irt_io.IGNORE_ID`) and probability 0.

    Args:
        model: A SemSplatModel (``render_semantics(camera) -> logits [h, w, C]``).
        camera: One camera, shape [1], as the dataparser gives it (on the CPU).
        frames: Lookups of distorted cameras, kept from view to view (views sharing a lens share one); default:
            a fresh one.

    Returns:
        Class ids long [H, W] and probabilities float [H, W], H and W the camera's (the photo's) size.
    """
    if not has_distortion(camera):
        logits = model.render_semantics(camera.to(model.device))  # [H, W, C]
        probability, ids = torch.softmax(logits.float(), dim=-1).max(dim=-1)  # [H, W], [H, W]
        return ids, probability
    frame = (frames if frames is not None else DistortedFrames())(camera)
    logits = model.render_semantics(frame.camera.to(model.device))  # [h, w, C] the undistorted picture
    probability, ids = torch.softmax(logits.float(), dim=-1).max(dim=-1)  # [h, w], [h, w]
    return frame.sample(ids, IGNORE_ID), frame.sample(probability, 0.0)  # [H, W], [H, W]


@torch.no_grad()
def predict_split(
    model, views: SplitViews, output_dir: Path, progress: Optional[Progress] = None
) -> Dict[str, List[str]]:
    """Renders every view of a split and writes its ids, colours and confidence PNGs (atomically), each the size
    of the view's photo (distorted capture cameras: :func:`predict_view`).

    Args:
        model: A SemSplatModel (``render_semantics(camera) -> logits [H, W, C]``, ``class_colors`` [C, 3]).
        views: The split's cameras and stems.
        output_dir: The run's output folder; this split's files go to ``output_dir/<split>/``.
        progress: A rich progress bar to advance once per view (a task is added for the split).

    Returns:
        ``{"labels": [...], "colormap": [...], "confidence": [...]}``: the written paths, in view order.
    """
    if model.num_classes > MAX_CLASSES:
        raise PredictionError(f"{model.num_classes} classes do not fit an 8-bit label image (ids 0..254)")
    palette = class_palette(model)  # [C, 3]
    split_dir = Path(output_dir) / views.split
    task = progress.add_task(f"Predicting {views.split} views", total=len(views.stems)) if progress else None
    written: Dict[str, List[str]] = {LABELS_DIR: [], COLORMAP_DIR: [], CONFIDENCE_DIR: []}
    frames = DistortedFrames()
    for index, stem in enumerate(views.stems):
        ids, probability = predict_view(model, views.cameras[index : index + 1], frames)  # [H, W], [H, W]
        ids_np = ids.cpu().numpy()  # [H, W]
        pictures = {
            LABELS_DIR: labels_image(ids_np),  # [H, W, 3]
            COLORMAP_DIR: colorize_labels(ids_np, palette),  # [H, W, 3]
            CONFIDENCE_DIR: encode_confidence(probability),  # [H, W]
        }
        for kind, picture in pictures.items():
            written[kind].append(str(save_png(split_dir / kind / f"{stem}.png", picture)))
        if progress is not None and task is not None:
            progress.advance(task)
    return written
