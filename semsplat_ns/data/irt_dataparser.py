"""The ``irt-data`` dataparser: IRT / Carla-MVS scenes (photos, known poses, few labelled views).

Layout: docs/IRT_LAYOUT.md. Every file of every split a run needs (train/ and the eval split's folder) is
checked once, up front, before anything slow such as triangulating seed points; a bad file stops parsing
with one :class:`~semsplat_ns.data.irt_io.IRTDataError` naming it. A scene without its eval split folder
is run as nerfstudio runs such data: every Nth training view is held out for evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from semsplat_ns.console import CONSOLE
from semsplat_ns.data import irt_io
from semsplat_ns.data.classes import SceneClasses, read_scene_classes
from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir
from semsplat_ns.errors import UserInputError
from semsplat_ns.pseudo.store import list_confidence_files

SPLIT_NAMES = ("train", "test", "validation")
"""Split folders an IRT scene may hold."""

EVAL_INTERVAL_FLAG = "--pipeline.datamanager.dataparser.eval-interval"
"""The ns-train option that sets :attr:`IRTDataParserConfig.eval_interval`, for messages."""

STAGE_SECONDS_KEY = "stage_seconds"
"""Key of the train split's metadata under which the data stages report their wall seconds (name -> s): the
dataparser ``seed_points``, the datamanager ``pseudo_labels`` and, when it made them, their pipeline's stages under
:data:`PSEUDO_LABEL_STAGE_PREFIX`; ``ns-train`` prints them (semsplat_ns.trainer)."""

PSEUDO_LABEL_STAGE_PREFIX = "pseudo_labels."
"""Prefix of the pseudo-label pipeline's stages among the stage seconds (e.g. ``pseudo_labels.prior_train``)."""


@dataclass
class IRTDataParserConfig(DataParserConfig):
    """Reads an IRT scene: ``train/`` and ``test/`` (or ``validation/``) with color/, rgb/, pose/, intrinsics/."""

    _target: Type = field(default_factory=lambda: IRTDataParser)
    """Class this config instantiates."""
    data: Path = Path()
    """Scene folder, or a bare scene name looked up in $SEMSPLAT_DATA/<name>, then ./data/<name>."""
    eval_split: Literal["test", "validation"] = "test"
    """Split folder used for nerfstudio's "val"/"test" splits."""
    eval_interval: int = 8
    """Used only when the scene has no eval_split folder: then one in every eval_interval training views is
    held out for evaluation instead (views 0, N, 2N, ... in stem order, as nerfstudio's eval_mode "interval"
    with its eval_interval), except labelled views, which always stay in training. Held-out views have no
    labels: they give RGB metrics (ns-eval), not segmentation metrics (semsplat-eval). A console line says
    when this happens. 0: a missing eval split folder is an error."""
    orientation_method: Literal["none", "up", "pca"] = "none"
    """Re-orientation of the poses (nerfstudio's auto_orient_and_center_poses); IRT poses are already
    normalised, so none by default."""
    center_method: Literal["none", "poses", "focus"] = "none"
    """Re-centring of the poses; none keeps the region of interest at the origin as IRT stores it."""
    auto_scale_poses: bool = False
    """Scale the camera centres so their largest coordinate magnitude is 1 (all in the [-1, 1] cube)."""
    scale_factor: float = 1.0
    """Extra scale applied to the camera centres (after auto scaling)."""
    scene_scale: float = 1.0
    """Half-extent of the scene box; IRT poses are normalised so the region of interest is in the unit sphere."""
    load_points: bool = True
    """Seed splatfacto from points triangulated from the known poses (cached in <scene>/sparse/points3D.ply)."""
    load_pseudo_labels: bool = True
    """Use train/pseudo/<stem>.png pseudo labels where present (train/boundary/ masks are listed either way)."""


def _split_folder_for(split: str, eval_split: str) -> str:
    if split == "train":
        return "train"
    if split in ("val", "test", "inference"):
        return eval_split
    raise ValueError(f"irt-data: unknown split {split!r}; expected 'train', 'val' or 'test'")


def _present_folders(scene: Path) -> str:
    present = sorted(p.name for p in scene.iterdir() if p.is_dir()) if scene.is_dir() else []
    return ", ".join(present) or "no folders"


@dataclass(frozen=True)
class _Views:
    """The checked views of a split: files, cameras, image sizes, and optional per-view files."""

    files: irt_io.SplitFiles
    Ks: np.ndarray  # [N, 3, 3]
    c2ws_opencv: np.ndarray  # [N, 4, 4]
    sizes: np.ndarray  # [N, 2] (width, height)
    pseudo_paths: List[Optional[Path]]
    boundary_paths: List[Optional[Path]]

    def subset(self, indices: List[int], with_pseudo: bool) -> _Views:
        """The views at ``indices``; without pseudo labels and boundary masks unless ``with_pseudo``."""
        files = self.files
        picked = replace(
            files,
            stems=[files.stems[i] for i in indices],
            photo_paths=[files.photo_paths[i] for i in indices],
            pose_paths=[files.pose_paths[i] for i in indices],
            intrinsics_paths=[files.intrinsics_paths[i] for i in indices],
            label_paths=[files.label_paths[i] for i in indices],
        )
        none: List[Optional[Path]] = [None] * len(indices)
        return _Views(
            files=picked,
            Ks=self.Ks[indices],
            c2ws_opencv=self.c2ws_opencv[indices],
            sizes=self.sizes[indices],
            pseudo_paths=[self.pseudo_paths[i] for i in indices] if with_pseudo else none,
            boundary_paths=[self.boundary_paths[i] for i in indices] if with_pseudo else list(none),
        )


def opencv_to_nerfstudio(c2ws_opencv: np.ndarray) -> np.ndarray:
    """Converts camera-to-world poses from OpenCV axes to nerfstudio's (OpenGL: y up, z backward).

    Args:
        c2ws_opencv: [N, 4, 4] camera-to-world, x right, y down, z forward.

    Returns:
        [N, 4, 4] camera-to-world, x right, y up, z backward.
    """
    c2ws = np.array(c2ws_opencv, dtype=np.float64, copy=True)  # [N, 4, 4]
    c2ws[:, :3, 1:3] *= -1.0
    return c2ws


class IRTDataParser(DataParser):
    """Parses an IRT scene into nerfstudio cameras plus label, pseudo-label and boundary file lists.

    The pose transform (orientation, centring, scale) is computed from the TRAIN poses and applied to
    every split identically.
    """

    config: IRTDataParserConfig

    def __init__(self, config: IRTDataParserConfig):
        super().__init__(config=config)
        self._scene_dir: Optional[Path] = None
        self._train_transform: Optional[Tuple[torch.Tensor, float]] = None
        self._classes: Optional[SceneClasses] = None
        # Per split folder, so nerfstudio's second call (the eval split) and callers that switch
        # config.eval_split reuse what the up-front check already read and decoded.
        self._cameras: Dict[str, Tuple[irt_io.SplitFiles, np.ndarray, np.ndarray]] = {}
        self._checked: Dict[str, _Views] = {}
        self._announced_holdout: set = set()

    @property
    def scene_dir(self) -> Path:
        """The resolved scene folder."""
        if self._scene_dir is None:
            self._scene_dir = resolve_scene_dir(self.config.data)
        return self._scene_dir

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        folder = _split_folder_for(split, self.config.eval_split)
        views = self._views(folder)
        files, Ks, sizes = views.files, views.Ks, views.sizes  # [N, 3, 3], [N, 2] (width, height)
        scene = self.scene_dir
        classes = self._scene_classes()
        num_classes = len(classes.names)

        transform, scale = self._transform_from_train()  # [3, 4], float
        c2ws = torch.from_numpy(opencv_to_nerfstudio(views.c2ws_opencv)).float()  # [N, 4, 4]
        # Applied here rather than taking nerfstudio's oriented poses: its "pca" branch flips whole
        # cameras by batch index, which would treat train and eval views differently.
        c2ws_out = transform @ c2ws  # [N, 3, 4]
        c2ws_out[:, :3, 3] *= scale

        Ks_t = torch.from_numpy(Ks).float()  # [N, 3, 3]
        sizes_t = torch.from_numpy(sizes).long()  # [N, 2]
        cameras = Cameras(
            camera_to_worlds=c2ws_out,
            fx=Ks_t[:, 0, 0:1],  # [N, 1]
            fy=Ks_t[:, 1, 1:2],  # [N, 1]
            cx=Ks_t[:, 0, 2:3],  # [N, 1]
            cy=Ks_t[:, 1, 2:3],  # [N, 1]
            width=sizes_t[:, 0:1],  # [N, 1]
            height=sizes_t[:, 1:2],  # [N, 1]
            camera_type=CameraType.PERSPECTIVE,
        )
        half = float(self.config.scene_scale)
        scene_box = SceneBox(aabb=torch.tensor([[-half, -half, -half], [half, half, half]], dtype=torch.float32))

        metadata: Dict = {
            "semantic_filenames": list(files.label_paths),
            "pseudo_filenames": list(views.pseudo_paths),
            "boundary_filenames": list(views.boundary_paths),
            # train/confidence/<stem>.png beside each pseudo label, decoded and size-checked (before triangulation).
            "confidence_filenames": list_confidence_files(views.pseudo_paths, sizes, files.photo_paths),
            "stems": list(files.stems),
            "scene_dir": scene,
            "class_names": list(classes.names),
            "class_colors": classes.colors.copy(),
            "num_classes": num_classes,
            "label_is_color": classes.label_is_color,
        }
        if folder == "train" and self.config.load_points:
            # From every photo of train/, held-out views included: nerfstudio's COLMAP points see every
            # image too, and one points cache then serves the scene whether or not it has an eval split.
            started = time.perf_counter()
            metadata.update(self._seed_points(self._checked["train"], transform, scale))
            metadata[STAGE_SECONDS_KEY] = {"seed_points": time.perf_counter() - started}

        return DataparserOutputs(
            image_filenames=list(files.photo_paths),
            cameras=cameras,
            scene_box=scene_box,
            metadata=metadata,
            dataparser_transform=transform,
            dataparser_scale=scale,
        )

    def check_splits(self) -> List[str]:
        """Checks what every split a run needs (train/ and the eval split's folder) holds, short of decoding
        its images: the folders, the pairing of files by stem, every camera file, the labels each split
        needs, and the classes. Takes a second or two on a full scene.

        Returns:
            The split folders the run reads: ``["train", eval_split]``, or ``["train"]`` when the scene has
            no eval split folder and views of train/ are held out instead (see ``eval_interval``).
        """
        eval_folder = self.config.eval_split
        held_out = self._eval_views_held_out(eval_folder)
        needed = ["train"] if held_out else ["train", eval_folder]
        for name in needed:
            self._split_cameras(name)
        self._scene_classes()
        return needed

    def _views(self, folder: str) -> _Views:
        """The checked views that ``folder`` ("train" or the eval split's folder) serves.

        Every split this run needs is checked first, cheapest checks first over all of them (:meth:`check_splits`,
        then every image decoded), so a bad file in the eval split stops the run before the train split's
        images are decoded or points triangulated.
        """
        eval_folder = self.config.eval_split
        needed = self.check_splits()
        held_out = eval_folder not in needed
        for name in needed:
            self._checked_split(name)
        train = self._checked["train"]
        if not held_out:
            return self._checked[folder]
        keep, held = self._holdout(train, eval_folder)
        # Held-out views are evaluation views: their pseudo labels, if any, are not served.
        return train.subset(keep, with_pseudo=True) if folder == "train" else train.subset(held, with_pseudo=False)

    def _eval_views_held_out(self, eval_folder: str) -> bool:
        """Whether the eval views are held out of train/ (no eval split folder); errors where a run cannot go on."""
        scene = self.scene_dir
        interval = self.config.eval_interval
        if interval < 0:
            raise UserInputError(f"{EVAL_INTERVAL_FLAG} must be 0 (off) or a positive interval; got {interval}")
        if not (scene / "train").is_dir():
            raise IRTDataError(
                f"{scene / 'train'}: split folder does not exist (scene has: {_present_folders(scene)}); every "
                "run needs the training views (layout: docs/IRT_LAYOUT.md)"
            )
        if (scene / eval_folder).is_dir():
            return False
        if interval == 0:
            raise IRTDataError(
                f"{scene / eval_folder}: split folder does not exist (scene has: {_present_folders(scene)}); it "
                f"holds the labelled evaluation views. To run without it, hold out training views for evaluation "
                f"instead: {EVAL_INTERVAL_FLAG} 8 (one in every 8; RGB metrics only)"
            )
        return True

    def _holdout(self, train: _Views, eval_folder: str) -> Tuple[List[int], List[int]]:
        """Indices of the training views kept for training and of those held out for evaluation."""
        interval = self.config.eval_interval
        count = len(train.files.stems)
        labelled = [p is not None for p in train.files.label_paths]
        held = [i for i in range(count) if i % interval == 0 and not labelled[i]]
        keep = [i for i in range(count) if i % interval != 0 or labelled[i]]
        scene = self.scene_dir
        if not held:
            raise IRTDataError(
                f"{scene / eval_folder}: split folder does not exist, and no training view can be held out for "
                f"evaluation instead (one in every {interval}, labelled views excepted); add {eval_folder}/ "
                f"or choose another {EVAL_INTERVAL_FLAG}"
            )
        if eval_folder not in self._announced_holdout:
            self._announced_holdout.add(eval_folder)
            other = next((n for n in ("test", "validation") if n != eval_folder and (scene / n).is_dir()), None)
            hint = (
                f"; {other}/ exists: --pipeline.datamanager.dataparser.eval-split {other} evaluates on it"
                if other
                else ""
            )
            CONSOLE.print(
                f"irt-data: {scene} has no {eval_folder}/ folder: holding out {len(held)} of its {len(labelled)} "
                f"training views for evaluation (one in every {interval}, labelled views excepted; RGB metrics "
                f"only, they have no labels; {EVAL_INTERVAL_FLAG} sets the interval){hint}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return keep, held

    def _split_cameras(self, folder: str) -> Tuple[irt_io.SplitFiles, np.ndarray, np.ndarray]:
        """Files, K [N, 3, 3] and OpenCV camera-to-world [N, 4, 4] of a split folder, with its labels
        present where the split needs them (cached)."""
        if folder not in self._cameras:
            split_dir = self.scene_dir / folder
            if not split_dir.is_dir():
                raise IRTDataError(
                    f"{split_dir}: split folder does not exist (scene has: {_present_folders(self.scene_dir)})"
                )
            files = irt_io.find_split_stems(split_dir)
            Ks, c2ws_opencv = irt_io.read_cameras(files)  # [N, 3, 3], [N, 4, 4]
            labelled = [p is not None for p in files.label_paths]
            if folder == "train" and not any(labelled):
                raise IRTDataError(
                    f"{files.split_dir / 'rgb'}: no labelled training view; semsplat needs at least one label "
                    "rgb/<stem>.png whose stem matches a photo in color/"
                )
            if folder != "train" and not all(labelled):
                lacking = [
                    str(files.split_dir / "rgb" / f"{s}.png") for s, has in zip(files.stems, labelled) if not has
                ]
                raise IRTDataError(
                    f"{files.split_dir / 'rgb'}: every evaluation view needs a label; missing "
                    f"{', '.join(lacking[:5])}{f' ... ({len(lacking)} in all)' if len(lacking) > 5 else ''}"
                )
            self._cameras[folder] = (files, Ks, c2ws_opencv)
        return self._cameras[folder]

    def _checked_split(self, folder: str) -> _Views:
        """Every view of a split folder with each of its images decoded once (cached)."""
        if folder not in self._checked:
            files, Ks, c2ws_opencv = self._split_cameras(folder)
            none: List[Optional[Path]] = [None] * len(files.stems)
            use_pseudo = folder == "train" and self.config.load_pseudo_labels
            pseudo_paths = _optional_paths(files, "pseudo") if use_pseudo else none
            boundary_paths = _optional_paths(files, "boundary") if folder == "train" else list(none)
            sizes = _validate_images(files, self._scene_classes(), pseudo_paths, boundary_paths)  # [N, 2]
            self._checked[folder] = _Views(files, Ks, c2ws_opencv, sizes, pseudo_paths, boundary_paths)
        return self._checked[folder]

    def _transform_from_train(self) -> Tuple[torch.Tensor, float]:
        """Orientation/centring transform [3, 4] and scale, from the poses of every view in train/ (cached)."""
        if self._train_transform is None:
            c2ws_opencv = self._split_cameras("train")[2]  # [N, 4, 4]
            c2ws = torch.from_numpy(opencv_to_nerfstudio(c2ws_opencv)).float()  # [N, 4, 4]
            _, transform = camera_utils.auto_orient_and_center_poses(
                c2ws, method=self.config.orientation_method, center_method=self.config.center_method
            )
            transform = transform.float()  # [3, 4]
            scale = 1.0
            if self.config.auto_scale_poses:
                origins = (transform @ c2ws)[:, :3, 3]  # [N, 3]
                scale /= max(float(origins.abs().max()), 1e-8)
            scale *= float(self.config.scale_factor)
            self._train_transform = (transform, scale)
        return self._train_transform

    def _scene_classes(self) -> SceneClasses:
        """The scene's classes (cached)."""
        if self._classes is None:
            self._classes = read_scene_classes(self.scene_dir)
        return self._classes

    def _seed_points(self, views: _Views, transform: torch.Tensor, scale: float) -> Dict[str, torch.Tensor]:
        """Triangulated points (input frame) mapped into the dataparser frame; {} if too few."""
        # Imported here: triangulation pulls pycolmap, which parsing without points does not need.
        from semsplat_ns.data.points import load_or_triangulate_points

        result = load_or_triangulate_points(
            list(views.files.photo_paths), views.Ks, views.c2ws_opencv, self.scene_dir / "sparse" / "points3D.ply"
        )
        if result is None:
            return {}
        xyz, rgb = result  # [P, 3] float32, [P, 3] uint8
        xyz_t = torch.from_numpy(np.asarray(xyz, dtype=np.float32))  # [P, 3]
        xyz_t = (xyz_t @ transform[:, :3].T + transform[:, 3]) * scale  # [P, 3]
        return {
            "points3D_xyz": xyz_t.float(),
            "points3D_rgb": torch.from_numpy(np.asarray(rgb, dtype=np.uint8)),  # [P, 3]
        }


def _optional_paths(files: irt_io.SplitFiles, folder: str) -> List[Optional[Path]]:
    """``<split>/<folder>/<stem>.png`` per view where it exists, else None."""
    root = files.split_dir / folder
    return [(root / f"{stem}.png") if (root / f"{stem}.png").is_file() else None for stem in files.stems]


def _validate_images(
    files: irt_io.SplitFiles,
    classes: SceneClasses,
    pseudo_paths: List[Optional[Path]],
    boundary_paths: List[Optional[Path]],
) -> np.ndarray:
    """Decodes every photo, label, pseudo label and boundary mask once; returns sizes [N, 2] (w, h)."""
    num_classes = len(classes.names)
    sizes = np.zeros((len(files.stems), 2), dtype=np.int64)  # [N, 2]
    columns = (
        TextColumn(f"[bold]checking {files.split_dir.name}/"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        for i in progress.track(range(len(files.stems))):
            width, height = irt_io.read_photo_size(files.photo_paths[i])
            sizes[i] = (width, height)
            label_path = files.label_paths[i]
            if label_path is not None:
                label = irt_io.read_label(label_path, classes.colors, num_classes)  # [H, W]
                _check_size(label_path, label.shape, width, height, files.photo_paths[i])
            pseudo_path, boundary_path = pseudo_paths[i], boundary_paths[i]
            if pseudo_path is not None:
                pseudo = irt_io.read_pseudo_label(pseudo_path)  # [H, W]
                _check_size(pseudo_path, pseudo.shape, width, height, files.photo_paths[i])
                bad = (pseudo >= num_classes) & (pseudo != irt_io.IGNORE_ID)
                if bad.any():
                    raise IRTDataError(
                        f"{pseudo_path}: pseudo class id {int(pseudo[bad].max())} but the scene has "
                        f"{num_classes} classes (255 = no pseudo label)"
                    )
            if boundary_path is not None:
                boundary = irt_io.read_boundary_mask(boundary_path)  # [H, W]
                _check_size(boundary_path, boundary.shape, width, height, files.photo_paths[i])
    return sizes


def _check_size(path: Path, shape: Tuple[int, ...], width: int, height: int, photo: Path) -> None:
    if tuple(shape[:2]) != (height, width):
        raise IRTDataError(
            f"{path}: size {shape[1]}x{shape[0]} differs from its photo {photo.name} ({width}x{height}); "
            "labels and masks must match the photo pixel for pixel"
        )
