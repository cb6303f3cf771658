"""Semantic data through nerfstudio's machinery: a dataset with labels and a full-image datamanager.

Each view yields, besides the photo, ``semantics`` (uint8 [H, W], 255 = none) for labelled views,
``pseudo_semantics`` and ``boundary_mask`` for pseudo-labelled views (plus ``pseudo_confidence``, float
[H, W] in [0, 1], where ``train/confidence/<stem>.png`` exists), and ``view_kind``.

With ``auto_pseudo_labels="prior"`` the datamanager first makes sure the scene has pseudo labels: the
prior's (:func:`semsplat_ns.pseudo.auto.ensure_pseudo_labels`), made once and cached in the scene (an IRT scene's
``train/``, a capture's ``semsplat_pseudo/``).
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image

from semsplat_ns.console import CONSOLE
from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_dataparser import (
    PSEUDO_LABEL_STAGE_PREFIX,
    STAGE_SECONDS_KEY,
    IRTDataParserConfig,
    resolve_scene_dir,
)
from semsplat_ns.geometry.visibility import ReprojectSettings
from semsplat_ns.pseudo.prior import PriorSettings
from semsplat_ns.pseudo.store import read_confidence

if TYPE_CHECKING:  # imported when pseudo labels are made: it pulls the depth and reprojection code
    from semsplat_ns.pseudo.auto import AutoPseudoLabels

# Kinds of view (see SemSplatModel): a labelled view, a view with pseudo labels, a photo only.
VIEW_LABELLED, VIEW_PSEUDO, VIEW_UNLABELLED = 0, 1, 2
SEMANTIC_KEYS = ("semantics", "pseudo_semantics", "boundary_mask", "pseudo_confidence")


class TrainViewCamera(Cameras):
    """One training view's camera as the datamanager hands it to splatfacto every step: the pose on the device,
    the intrinsics and image size on the host.

    Splatfacto's training render reads the image size with ``.item()``, builds the intrinsics matrix from the
    camera's values into a host tensor and moves it with ``.cuda()``, and rescales the camera twice for its
    downscale schedule. On a camera that lives on the GPU each of those waits for the device (about nine times a
    step, plus one host-to-device copy per field to put the camera there). Here the values splatfacto reads on the
    host are on the host, the pose (which the render uses on the device) is on the device, and the intrinsics matrix
    of each resolution is moved to the device once (:meth:`get_intrinsics_matrices`). The values are nerfstudio's:
    the same numbers, computed by the same operations.

    Build one with :meth:`of_view`; hand out :meth:`for_step` copies (splatfacto's rescaling replaces the copy's
    fields and leaves the prepared camera as it is).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        # exact (fx, fy, cx, cy) -> that intrinsics matrix on the pose's device [1, 3, 3]; shared by this camera's
        # copies
        self._device_intrinsics: Dict[Tuple[float, ...], torch.Tensor] = {}

    @classmethod
    def of_view(cls, cameras: Cameras, index: int, device: Union[torch.device, str]) -> TrainViewCamera:
        """The prepared camera of one training view.

        Args:
            cameras: All training cameras (on any device), shape [V].
            index: The view's index, recorded as ``metadata["cam_idx"]`` as nerfstudio's datamanager does.
            device: The model's device: where the pose goes.
        """
        view = cameras[index : index + 1].to("cpu")  # [1], host tensors (read once per view)
        camera = cls(**{item.name: getattr(view, item.name) for item in dataclasses.fields(view)})
        camera.camera_to_worlds = view.camera_to_worlds.to(device)  # [1, 3, 4]; the camera's device from now on
        camera.metadata = {**(view.metadata or {}), "cam_idx": index}
        return camera

    def for_step(self) -> TrainViewCamera:
        """A copy for one training step: its own fields and metadata dict, the same tensors (nothing is copied)."""
        camera = copy.copy(self)
        camera.metadata = dict(self.metadata or {})
        return camera

    def rescale_output_resolution(
        self,
        scaling_factor: Union[torch.Tensor, float, int],
        scale_rounding_mode: str = "floor",
    ) -> None:
        """nerfstudio's rescaling, with a number's factor made on the host, where the intrinsics are (nerfstudio makes
        it on the camera's device, the pose's: a host-to-device copy, and a device mismatch here).

        Args:
            scaling_factor: The factor, as for :meth:`Cameras.rescale_output_resolution`.
            scale_rounding_mode: "floor", "round" or "ceil".
        """
        if isinstance(scaling_factor, (float, int)) and scaling_factor == 1:
            # nerfstudio's result would hold the same values (x * 1, and whole sizes floored, rounded or ceiled stay
            # themselves): splatfacto rescales by 1 and back on every full-resolution step, ~16 host operators
            return
        if isinstance(scaling_factor, (float, int)):
            # the tensor nerfstudio builds (same dtype: float32 for a float, int64 for an int), on the host
            scaling_factor = torch.tensor([scaling_factor]).broadcast_to(self.cx.shape)  # [1, 1]
        super().rescale_output_resolution(scaling_factor, scale_rounding_mode)

    def get_intrinsics_matrices(self) -> torch.Tensor:
        """nerfstudio's intrinsics matrix [1, 3, 3] (float32), on the pose's device.

        nerfstudio builds it on the host (here from host values: no wait), and splatfacto then moves it with
        ``.cuda()``; the matrix of each resolution is moved once and reused (a no-op ``.cuda()`` afterwards). Shared
        between steps: read it, never change it.
        """
        # the values the matrix is made of (nerfstudio's: fx, fy, cx, cy and constants), read on the host: no wait
        # for the device, and a few host reads instead of the ~15 operators that build the matrix
        key = (float(self.fx), float(self.fy), float(self.cx), float(self.cy))
        on_device = self._device_intrinsics.get(key)
        if on_device is None:
            matrices = super().get_intrinsics_matrices()  # [1, 3, 3] on the host
            on_device = self._device_intrinsics[key] = matrices.to(self.device)
        return on_device


class SemanticIRTDataset(InputDataset):
    """Photos plus the per-view semantic maps named in the dataparser's metadata."""

    exclude_batch_keys_from_device = InputDataset.exclude_batch_keys_from_device + list(SEMANTIC_KEYS)

    def __init__(self, dataparser_outputs, scale_factor: float = 1.0):
        super().__init__(dataparser_outputs, scale_factor)
        meta = self.metadata
        count = len(self._dataparser_outputs.image_filenames)
        self.semantic_filenames: List[Optional[Path]] = list(meta.get("semantic_filenames") or [None] * count)
        self.pseudo_filenames: List[Optional[Path]] = list(meta.get("pseudo_filenames") or [None] * count)
        self.boundary_filenames: List[Optional[Path]] = list(meta.get("boundary_filenames") or [None] * count)
        self.confidence_filenames: List[Optional[Path]] = list(meta.get("confidence_filenames") or [None] * count)
        self.class_colors = np.asarray(meta["class_colors"], dtype=np.uint8)  # [C, 3]
        self.num_classes = int(meta["num_classes"])
        self.label_is_color = bool(meta.get("label_is_color", False))

    @cached_property
    def view_kinds(self) -> List[int]:
        """Kind of each view: labelled, pseudo-labelled or photo only."""
        kinds = []
        for label, pseudo in zip(self.semantic_filenames, self.pseudo_filenames):
            kinds.append(VIEW_LABELLED if label is not None else VIEW_PSEUDO if pseudo is not None else VIEW_UNLABELLED)
        return kinds

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        """Photo as uint8 [H, W, 3]: RGBA drops alpha, 16-bit is scaled (see IRT_LAYOUT.md)."""
        image = irt_io.read_photo(self._dataparser_outputs.image_filenames[image_idx])  # [H, W, 3]
        return self._resize(image, Image.Resampling.BILINEAR)

    def _resize(self, array: np.ndarray, resample) -> np.ndarray:
        if self.scale_factor == 1.0:
            return array if array.flags.writeable else array.copy()  # torch wants writable arrays
        height, width = array.shape[:2]
        size = (int(width * self.scale_factor), int(height * self.scale_factor))
        return np.array(Image.fromarray(array).resize(size, resample=resample))  # writable copy

    def get_metadata(self, data: Dict) -> Dict:
        idx = data["image_idx"]
        out: Dict = {"view_kind": self.view_kinds[idx]}
        label_path = self.semantic_filenames[idx]
        if label_path is not None:
            colors = self.class_colors if self.label_is_color else None
            label = irt_io.read_label(label_path, colors, self.num_classes)  # [H, W] uint8
            # Ids must never be interpolated: NEAREST only.
            out["semantics"] = torch.from_numpy(self._resize(label, Image.Resampling.NEAREST))
        pseudo_path = self.pseudo_filenames[idx]
        if label_path is None and pseudo_path is not None:
            pseudo = irt_io.read_pseudo_label(pseudo_path)  # [H, W] uint8, 255 = none
            out["pseudo_semantics"] = torch.from_numpy(self._resize(pseudo, Image.Resampling.NEAREST))
            boundary_path = self.boundary_filenames[idx]
            if boundary_path is not None:
                boundary = irt_io.read_boundary_mask(boundary_path).astype(np.uint8)  # [H, W] 0/1
                out["boundary_mask"] = torch.from_numpy(self._resize(boundary, Image.Resampling.NEAREST)).bool()
            confidence_path = self.confidence_filenames[idx]
            if confidence_path is not None:
                confidence = read_confidence(confidence_path)  # [H, W] float32 in [0, 1]
                # NEAREST, like the ids it describes, so each confidence stays with its pseudo label.
                out["pseudo_confidence"] = torch.from_numpy(self._resize(confidence, Image.Resampling.NEAREST))
        return out


@dataclass
class SemSplatDataManagerConfig(FullImageDatamanagerConfig):
    """Full-image datamanager that also serves labels, pseudo labels and boundary masks."""

    _target: Type = field(default_factory=lambda: SemSplatDataManager)
    dataparser: IRTDataParserConfig = field(default_factory=IRTDataParserConfig)
    """The scene reader; ``irt-data`` by default."""
    labelled_to_other_ratio: int = 8
    """Training views are drawn labelled : other = 1 : this (paper: GT : pseudo = 1 : 8). Every view is
    still drawn once per pass, so all of them contribute their RGB loss; 0 = plain random order."""
    auto_pseudo_labels: Literal["prior", "off"] = "off"
    """prior: before training, give a scene without pseudo labels the prior's (semsplat-pseudo-labels
    --backend prior: reprojected labels, elsewhere a 2D network trained on this scene), cached in
    train/pseudo/ (a capture: semsplat_pseudo/pseudo/) with their parameters; reused while the scene and
    --pipeline.datamanager.pseudo-prior.* are unchanged, rebuilt when they change; pseudo labels made otherwise
    are kept. off: use what is there, if anything."""
    pseudo_prior: PriorSettings = field(default_factory=PriorSettings)
    """The prior of the automatic pseudo labels (steps, crop, width, threshold, seed, device)."""
    pseudo_reproject: ReprojectSettings = field(default_factory=ReprojectSettings)
    """The reprojection of the automatic pseudo labels (depth and colour tolerances, label margin): which labelled
    pixels are carried into the other views, as semsplat-pseudo-labels' flags of the same names."""


class SemSplatDataManager(FullImageDatamanager[SemanticIRTDataset]):
    """Serves whole views with their semantic maps; draws labelled and other views at a fixed ratio."""

    config: SemSplatDataManagerConfig

    def __init__(
        self,
        config: SemSplatDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        # Only training needs pseudo labels ("val" is ns-train's mode; ns-eval and ns-render use the others),
        # and one process makes them. Before the dataparser runs, so that it lists what was made.
        pseudo_seconds: Dict[str, float] = {}
        if config.auto_pseudo_labels != "off" and test_mode == "val" and local_rank == 0:
            started = time.perf_counter()
            outcome = self._ensure_pseudo_labels(config, device)
            pseudo_seconds["pseudo_labels"] = time.perf_counter() - started
            if outcome is not None:  # the pipeline's own stages, when it ran (the prior's training, depth, ...)
                stages = outcome.stage_seconds.items()
                pseudo_seconds.update({PSEUDO_LABEL_STAGE_PREFIX + name: seconds for name, seconds in stages})
        super().__init__(
            config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank, **kwargs
        )
        if pseudo_seconds:
            # Reported where ns-train's stage times read the data stages (semsplat_ns.trainer).
            metadata = self.train_dataparser_outputs.metadata
            metadata[STAGE_SECONDS_KEY] = {**(metadata.get(STAGE_SECONDS_KEY) or {}), **pseudo_seconds}

    @staticmethod
    def _ensure_pseudo_labels(
        config: SemSplatDataManagerConfig, device: Union[torch.device, str]
    ) -> Optional[AutoPseudoLabels]:
        """Makes, reuses or rebuilds the prior's pseudo labels of the scene (one console line says which); returns
        what was done (None: the dataparser loads no pseudo labels, so none are made)."""
        if not config.dataparser.load_pseudo_labels:
            CONSOLE.print(
                "Pseudo labels: not made automatically (--pipeline.datamanager.dataparser.load-pseudo-labels False)"
            )
            return None
        # Imported here: the pipeline pulls the depth and reprojection code that training otherwise skips.
        from semsplat_ns.pseudo.auto import ensure_pseudo_labels

        data = Path(config.data if config.data is not None else config.dataparser.data).expanduser()
        if not (data.is_file() and data.suffix.lower() == ".json"):  # a capture's transforms .json stays as given
            data = resolve_scene_dir(data)
        # A capture is read with the run's own options (nerfstudio's split, downscaled or undistorted pictures).
        parser = replace(config.dataparser, data=data)
        return ensure_pseudo_labels(
            data, config.pseudo_prior, device=str(device), dataparser=parser, reproject=config.pseudo_reproject
        )

    def sample_train_cameras(self) -> List[int]:
        """One pass over the training views: each non-labelled view once, a labelled view every
        ``ratio`` of them (the labelled views cycle in random order)."""
        if not hasattr(self, "random_generator"):
            self.random_generator = random.Random(self.config.train_cameras_sampling_seed)
        kinds = self.train_dataset.view_kinds
        labelled = [i for i, kind in enumerate(kinds) if kind == VIEW_LABELLED]
        others = [i for i, kind in enumerate(kinds) if kind != VIEW_LABELLED]
        ratio = self.config.labelled_to_other_ratio
        if ratio <= 0 or not labelled or not others:
            return super().sample_train_cameras()
        self.random_generator.shuffle(others)
        order: List[int] = []
        cycle: List[int] = []
        for start in range(0, len(others), ratio):
            if not cycle:
                cycle = labelled[:]
                self.random_generator.shuffle(cycle)
            order.append(cycle.pop())
            order.extend(others[start : start + ratio])
        return order

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """The next training view, as nerfstudio's ``next_train`` draws it, from what was prepared once per view.

        nerfstudio slices its camera out of all training cameras and copies it field by field to the device every
        step (Python work and a wait for the device per field), then splatfacto reads values of it back to the host.
        Here each view's :class:`TrainViewCamera` is built on its first draw and a step gets a copy of it; the batch is
        a copy of the view's cached dict (images and label maps already on the device when cached there), as
        nerfstudio's. Views are drawn in nerfstudio's order: the front of ``train_unseen_cameras``, refilled by
        :meth:`sample_train_cameras` when empty.

        Args:
            step: The training step (unused, as in nerfstudio).

        Returns:
            The view's camera (shape [1], ``metadata["cam_idx"]`` its index) and its batch.
        """
        image_idx = self.train_unseen_cameras.pop(0)
        if not self.train_unseen_cameras:
            self.train_unseen_cameras = self.sample_train_cameras()
        camera = self._train_view_cameras.get(image_idx)
        if camera is None:
            # the dataset's cameras (host), the values of nerfstudio's train_cameras (which may be their device copy)
            cameras = self.train_dataset.cameras
            camera = self._train_view_cameras[image_idx] = TrainViewCamera.of_view(cameras, image_idx, self.device)
        batch = dict(self.cached_train[image_idx])  # the model must not change the cached dict (nor its tensors)
        # non_blocking: a photo cached in (pinned) host memory is copied without waiting; on the device already, a no-op
        batch["image"] = batch["image"].to(self.device, non_blocking=True)
        return camera.for_step(), batch

    @cached_property
    def _train_view_cameras(self) -> Dict[int, TrainViewCamera]:
        """Training view index -> its prepared camera (built on the view's first draw)."""
        return {}

    def _load_images(self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]):
        if cache_images_device == "cpu" and not torch.cuda.is_available():
            # "cpu" caching pins host memory, which needs CUDA; without it, "gpu" caching on the
            # CPU device holds the same tensors in host memory.
            cache_images_device = "gpu"
        cached = super()._load_images(split, cache_images_device)
        if cache_images_device == "gpu":
            for data in cached:
                for key in SEMANTIC_KEYS:
                    if key in data:
                        data[key] = data[key].to(self.device)
        return cached
