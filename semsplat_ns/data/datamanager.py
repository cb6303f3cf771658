"""Semantic data through nerfstudio's machinery: a dataset with labels and a full-image datamanager.

Each view yields, besides the photo, ``semantics`` (uint8 [H, W], 255 = none) for labelled views,
``pseudo_semantics`` and ``boundary_mask`` for pseudo-labelled views (plus ``pseudo_confidence``, float
[H, W] in [0, 1], where ``train/confidence/<stem>.png`` exists), and ``view_kind``.

With ``auto_pseudo_labels="prior"`` the datamanager first makes sure the scene has pseudo labels: the
prior's (:func:`semsplat_ns.pseudo.auto.ensure_pseudo_labels`), made once and cached in the scene (an IRT scene's
``train/``, a capture's ``semsplat_pseudo/``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Literal, Optional, Type, Union

import numpy as np
import torch
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image

from semsplat_ns.console import CONSOLE
from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_dataparser import STAGE_SECONDS_KEY, IRTDataParserConfig, resolve_scene_dir
from semsplat_ns.geometry.visibility import ReprojectSettings
from semsplat_ns.pseudo.prior import PriorSettings
from semsplat_ns.pseudo.store import read_confidence

# Kinds of view (see SemSplatModel): a labelled view, a view with pseudo labels, a photo only.
VIEW_LABELLED, VIEW_PSEUDO, VIEW_UNLABELLED = 0, 1, 2
SEMANTIC_KEYS = ("semantics", "pseudo_semantics", "boundary_mask", "pseudo_confidence")


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
        pseudo_seconds: Optional[float] = None
        if config.auto_pseudo_labels != "off" and test_mode == "val" and local_rank == 0:
            started = time.perf_counter()
            self._ensure_pseudo_labels(config, device)
            pseudo_seconds = time.perf_counter() - started
        super().__init__(
            config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank, **kwargs
        )
        if pseudo_seconds is not None:
            # Reported where ns-train's stage times read the data stages (semsplat_ns.trainer).
            metadata = self.train_dataparser_outputs.metadata
            metadata[STAGE_SECONDS_KEY] = {**(metadata.get(STAGE_SECONDS_KEY) or {}), "pseudo_labels": pseudo_seconds}

    @staticmethod
    def _ensure_pseudo_labels(config: SemSplatDataManagerConfig, device: Union[torch.device, str]) -> None:
        """Makes, reuses or rebuilds the prior's pseudo labels of the scene (one console line says which)."""
        if not config.dataparser.load_pseudo_labels:
            CONSOLE.print(
                "Pseudo labels: not made automatically (--pipeline.datamanager.dataparser.load-pseudo-labels False)"
            )
            return
        # Imported here: the pipeline pulls the depth and reprojection code that training otherwise skips.
        from semsplat_ns.pseudo.auto import ensure_pseudo_labels

        data = Path(config.data if config.data is not None else config.dataparser.data).expanduser()
        if not (data.is_file() and data.suffix.lower() == ".json"):  # a capture's transforms .json stays as given
            data = resolve_scene_dir(data)
        # A capture is read with the run's own options (nerfstudio's split, downscaled or undistorted pictures).
        parser = replace(config.dataparser, data=data)
        ensure_pseudo_labels(
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
