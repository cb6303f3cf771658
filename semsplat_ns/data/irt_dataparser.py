"""The ``irt-data`` dataparser: IRT / Carla-MVS scenes (photos, known poses, few labelled views).

Layout: docs/IRT_LAYOUT.md. Every file of a split is checked once, up front; a bad file
stops parsing with one :class:`~semsplat_ns.data.irt_io.IRTDataError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_io import IRTDataError

SPLIT_NAMES = ("train", "test", "validation")
"""Split folders an IRT scene may hold."""

DATA_ENV_VAR = "SEMSPLAT_DATA"
"""Environment variable naming a folder of scenes, for ``--data <scene name>``."""


@dataclass
class IRTDataParserConfig(DataParserConfig):
    """Reads an IRT scene: ``train/`` and ``test/`` (or ``validation/``) with color/, rgb/, pose/, intrinsics/."""

    _target: Type = field(default_factory=lambda: IRTDataParser)
    """Class this config instantiates."""
    data: Path = Path()
    """Scene folder, or a bare scene name looked up in $SEMSPLAT_DATA/<name>, then ./data/<name>."""
    eval_split: Literal["test", "validation"] = "test"
    """Split folder used for nerfstudio's "val"/"test" splits."""
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


def resolve_scene_dir(data: Path) -> Path:
    """Finds the scene folder named by ``--data``.

    Args:
        data: An existing folder (used as is), or a bare name resolved to ``$SEMSPLAT_DATA/<name>``,
            then ``./data/<name>``.

    Returns:
        The scene folder (absolute when found by name).
    """
    data = Path(data).expanduser()
    if data.is_dir():
        return data
    looked = [data]
    if not data.is_absolute() and len(data.parts) == 1:
        env_root = os.environ.get(DATA_ENV_VAR)
        # Absolute, so saved configs still find the scene when run from another folder.
        candidates = ([Path(env_root).expanduser() / data] if env_root else []) + [Path("data") / data]
        candidates = [candidate.absolute() for candidate in candidates]
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        looked += candidates
    where = ", ".join(str(p.absolute()) for p in looked)
    env_note = "" if os.environ.get(DATA_ENV_VAR) else f" (${DATA_ENV_VAR} is not set)"
    raise IRTDataError(f"scene {str(data)!r} not found; looked in: {where}{env_note}")


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
        self._classes: Optional[irt_io.SceneClasses] = None

    @property
    def scene_dir(self) -> Path:
        """The resolved scene folder."""
        if self._scene_dir is None:
            self._scene_dir = resolve_scene_dir(self.config.data)
        return self._scene_dir

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        folder = _split_folder_for(split, self.config.eval_split)
        scene = self.scene_dir
        if not (scene / folder).is_dir():
            present = sorted(p.name for p in scene.iterdir() if p.is_dir()) if scene.is_dir() else []
            raise IRTDataError(
                f"{scene / folder}: split folder does not exist (scene has: {', '.join(present) or 'no folders'})"
            )
        files = irt_io.find_split_stems(scene / folder)
        Ks, c2ws_opencv = irt_io.read_cameras(files)  # [N, 3, 3], [N, 4, 4]
        classes = self._scene_classes()
        num_classes = len(classes.names)

        use_pseudo = folder == "train" and self.config.load_pseudo_labels
        pseudo_paths = _optional_paths(files, "pseudo") if use_pseudo else [None] * len(files.stems)
        boundary_paths = _optional_paths(files, "boundary") if folder == "train" else [None] * len(files.stems)
        sizes = _validate_images(files, classes, pseudo_paths, boundary_paths)  # [N, 2] (width, height)

        labelled = [p is not None for p in files.label_paths]
        if folder == "train" and not any(labelled):
            raise IRTDataError(
                f"{files.split_dir / 'rgb'}: no labelled training view; semsplat needs at least one label "
                "rgb/<stem>.png whose stem matches a photo in color/"
            )
        if folder != "train" and not all(labelled):
            lacking = [str(files.split_dir / "rgb" / f"{s}.png") for s, has in zip(files.stems, labelled) if not has]
            raise IRTDataError(
                f"{files.split_dir / 'rgb'}: every evaluation view needs a label; missing "
                f"{', '.join(lacking[:5])}{f' ... ({len(lacking)} in all)' if len(lacking) > 5 else ''}"
            )

        transform, scale = self._transform_from_train()  # [3, 4], float
        c2ws = torch.from_numpy(opencv_to_nerfstudio(c2ws_opencv)).float()  # [N, 4, 4]
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
            "pseudo_filenames": pseudo_paths,
            "boundary_filenames": boundary_paths,
            "stems": list(files.stems),
            "scene_dir": scene,
            "class_names": list(classes.names),
            "class_colors": classes.colors.copy(),
            "num_classes": num_classes,
            "label_is_color": classes.label_is_color,
        }
        if folder == "train" and self.config.load_points:
            metadata.update(self._seed_points(files, Ks, c2ws_opencv, transform, scale))

        return DataparserOutputs(
            image_filenames=list(files.photo_paths),
            cameras=cameras,
            scene_box=scene_box,
            metadata=metadata,
            dataparser_transform=transform,
            dataparser_scale=scale,
        )

    def _transform_from_train(self) -> Tuple[torch.Tensor, float]:
        """Orientation/centring transform [3, 4] and scale, from the train poses (cached)."""
        if self._train_transform is None:
            files = irt_io.find_split_stems(self.scene_dir / "train")
            c2ws_opencv = np.stack([irt_io.read_pose(p) for p in files.pose_paths])  # [N, 4, 4]
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

    def _scene_classes(self) -> irt_io.SceneClasses:
        """The scene's classes (cached)."""
        if self._classes is None:
            self._classes = irt_io.read_scene_classes(self.scene_dir)
        return self._classes

    def _seed_points(
        self,
        files: irt_io.SplitFiles,
        Ks: np.ndarray,
        c2ws_opencv: np.ndarray,
        transform: torch.Tensor,
        scale: float,
    ) -> Dict[str, torch.Tensor]:
        """Triangulated points (input frame) mapped into the dataparser frame; {} if too few."""
        # Imported here: triangulation pulls pycolmap, which parsing without points does not need.
        from semsplat_ns.data.points import load_or_triangulate_points

        result = load_or_triangulate_points(
            list(files.photo_paths), Ks, c2ws_opencv, self.scene_dir / "sparse" / "points3D.ply"
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
    classes: irt_io.SceneClasses,
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
            if pseudo_paths[i] is not None:
                pseudo = irt_io.read_pseudo_label(pseudo_paths[i])  # [H, W]
                _check_size(pseudo_paths[i], pseudo.shape, width, height, files.photo_paths[i])
                bad = (pseudo >= num_classes) & (pseudo != irt_io.IGNORE_ID)
                if bad.any():
                    raise IRTDataError(
                        f"{pseudo_paths[i]}: pseudo class id {int(pseudo[bad].max())} but the scene has "
                        f"{num_classes} classes (255 = no pseudo label)"
                    )
            if boundary_paths[i] is not None:
                boundary = irt_io.read_boundary_mask(boundary_paths[i])  # [H, W]
                _check_size(boundary_paths[i], boundary.shape, width, height, files.photo_paths[i])
    return sizes


def _check_size(path: Path, shape: Tuple[int, ...], width: int, height: int, photo: Path) -> None:
    if tuple(shape[:2]) != (height, width):
        raise IRTDataError(
            f"{path}: size {shape[1]}x{shape[0]} differs from its photo {photo.name} ({width}x{height}); "
            "labels and masks must match the photo pixel for pixel"
        )
