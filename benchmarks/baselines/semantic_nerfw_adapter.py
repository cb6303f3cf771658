"""Runs nerfstudio's ``semantic-nerfw`` (the Semantic-NeRF-style baseline) on IRT scenes.

nerfstudio 1.1.5's semantic-nerfw expects ``metadata["semantics"]`` (a
:class:`~nerfstudio.data.dataparsers.base_dataparser.Semantics`) with a label image for EVERY view, reads
those PNGs itself (``np.array(PIL.Image)``: an RGB label becomes ``[H, W, 3, 1]``, a colour-coded one is
read as colours, not ids) and trains with ``CrossEntropyLoss()`` over every sampled ray. IRT scenes label
only a few training views, store the class id in channel 0 (or colour-code it) and have no ignore value.

What this module changes, each by subclassing, and why that is the least invasive real solution:

- :class:`IRTSemanticNerfWDataParser` (``irt-data`` + ``metadata["semantics"]``): the Semantics object
  lists the label file per view, ``None`` for an unlabelled view. Pseudo labels and seed points are off by
  default: this baseline sees only the real labels, and nerfacto does not use points.
- :class:`IRTSemanticDataset` (a ``SemanticDataset``): decodes labels with
  :func:`semsplat_ns.data.irt_io.read_label` (channel 0 = id, or colour decoding through classes.json),
  exactly as the ``irt-data`` parser validated them, and fills unlabelled views with
  :data:`~semsplat_ns.data.irt_io.IGNORE_ID` (255). The ``mask`` stays nerfstudio's class mask (all True
  unless ``mask_classes``): nerfstudio's pixel sampler draws rays ONLY inside ``mask``, so masking the
  unlabelled pixels there would also stop RGB training on the unlabelled views.
- :class:`IRTSemanticNerfWModel` (a ``SemanticNerfWModel``): swaps its ``cross_entropy_loss`` module for
  :class:`IgnoreLabelCrossEntropy`, a mean over the rays whose label is not 255 (zero, still attached to
  the graph, for a batch without one). The parent's ``get_loss_dict`` is used unchanged, so RGB,
  interlevel and distortion losses cover every ray of every training view and the semantic loss only the
  labelled pixels of the labelled views.

A model subclass is needed either way (the stock loss cannot skip pixels); a dataset subclass is needed
either way (the stock reader cannot decode IRT labels). Patching the dataloader or the pixel sampler
instead would copy more of nerfstudio's logic for no gain.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, Optional, Type

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs, Semantics
from nerfstudio.data.datasets.semantic_dataset import SemanticDataset
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.semantic_nerfw import SemanticNerfWModel, SemanticNerfWModelConfig
from PIL import Image
from torch import Tensor, nn

from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_dataparser import IRTDataParser, IRTDataParserConfig
from semsplat_ns.model.compat import lazy_lpips_during_setup

__all__ = [
    "IRTSemanticNerfWDataParserConfig",
    "IRTSemanticNerfWDataParser",
    "IRTSemanticDataset",
    "IgnoreLabelCrossEntropy",
    "IRTSemanticNerfWModelConfig",
    "IRTSemanticNerfWModel",
    "adapt_semantic_nerfw_config",
]


@dataclass
class IRTSemanticNerfWDataParserConfig(IRTDataParserConfig):
    """``irt-data`` plus the ``Semantics`` metadata that nerfstudio's semantic-nerfw reads."""

    _target: Type = field(default_factory=lambda: IRTSemanticNerfWDataParser)
    """Class this config instantiates."""
    load_points: bool = False
    """Triangulate seed points; nerfacto-style fields do not use them, so off."""
    load_pseudo_labels: bool = False
    """List train/pseudo/ pseudo labels; the Semantic-NeRF baseline trains on the real labels only, so off."""


class IRTSemanticNerfWDataParser(IRTDataParser):
    """Parses an IRT scene and adds ``metadata["semantics"]`` for semantic-nerfw.

    ``Semantics.filenames`` holds the label path per view and ``None`` for an unlabelled view; only
    :class:`IRTSemanticDataset` reads it.
    """

    config: IRTSemanticNerfWDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        outputs = super()._generate_dataparser_outputs(split, **kwargs)
        metadata = outputs.metadata
        colors = torch.as_tensor(np.asarray(metadata["class_colors"]), dtype=torch.float32) / 255.0  # [C, 3]
        metadata["semantics"] = Semantics(
            filenames=list(metadata["semantic_filenames"]),
            classes=list(metadata["class_names"]),
            colors=colors,
            mask_classes=[],
        )
        return outputs


class IRTSemanticDataset(SemanticDataset):
    """``SemanticDataset`` reading IRT labels; unlabelled views and pixels are 255.

    Each item holds ``semantics`` (int64 ``[H, W, 1]`` class ids, 255 = no label) and ``mask`` (bool
    ``[H, W, 1]``, False only on nerfstudio ``mask_classes``).

    Args:
        dataparser_outputs: Outputs of :class:`IRTSemanticNerfWDataParser`.
        scale_factor: Image scale applied to photos and labels (labels resized nearest-neighbour).
    """

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0):
        super().__init__(dataparser_outputs, scale_factor)
        self.class_colors: np.ndarray = np.asarray(self.metadata["class_colors"], dtype=np.uint8)  # [C, 3]
        self.num_classes: int = int(self.metadata["num_classes"])

    def read_semantics(self, image_idx: int) -> Tensor:
        """Class ids of one view at the dataset's scale.

        Args:
            image_idx: Index of the view.

        Returns:
            int64 ``[H, W, 1]``; 255 everywhere for an unlabelled view.
        """
        height = int(self.cameras.height[image_idx, 0])
        width = int(self.cameras.width[image_idx, 0])
        path: Optional[Path] = self.semantics.filenames[image_idx]
        if path is None:
            return torch.full((height, width, 1), irt_io.IGNORE_ID, dtype=torch.int64)  # [H, W, 1]
        ids = irt_io.read_label(path, self.class_colors, self.num_classes)  # [H0, W0] uint8
        if ids.shape != (height, width):
            # Same nearest-neighbour resize as nerfstudio's label reader.
            ids = np.asarray(Image.fromarray(ids).resize((width, height), resample=Image.Resampling.NEAREST))
        return torch.from_numpy(ids.astype(np.int64))[..., None]  # [H, W, 1]

    def get_metadata(self, data: Dict) -> Dict:
        semantics = self.read_semantics(data["image_idx"])  # [H, W, 1]
        # [H, W, 1]: False on mask_classes (none by default), as in SemanticDataset.
        mask = torch.sum(semantics == self.mask_indices, dim=-1, keepdim=True) == 0
        if "mask" in data:
            mask = mask & data["mask"]
        return {"mask": mask, "semantics": semantics}


class IgnoreLabelCrossEntropy(nn.Module):
    """Cross-entropy averaged over the rays whose label is not ``ignore_index``.

    Unlike ``nn.CrossEntropyLoss(ignore_index=...)``, a batch without any labelled ray gives 0 (attached
    to the graph) instead of NaN.

    Args:
        ignore_index: Label value of rays without a class.
    """

    def __init__(self, ignore_index: int = irt_io.IGNORE_ID) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy over labelled rays.

        Args:
            logits: ``[R, C]`` class logits.
            target: ``[R]`` int64 class ids, ``ignore_index`` = unlabelled.

        Returns:
            Scalar loss.
        """
        num_labelled = (target != self.ignore_index).sum().clamp_min(1)  # []
        total = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="sum")  # []
        return total / num_labelled


@dataclass
class IRTSemanticNerfWModelConfig(SemanticNerfWModelConfig):
    """semantic-nerfw whose semantic loss skips unlabelled pixels (label 255)."""

    _target: Type = field(default_factory=lambda: IRTSemanticNerfWModel)
    """Class this config instantiates."""


class IRTSemanticNerfWModel(SemanticNerfWModel):
    """``SemanticNerfWModel`` with :class:`IgnoreLabelCrossEntropy` as its semantic loss.

    Also logs ``labelled_ray_fraction``, the share of rays of a batch that carry a label.
    """

    config: IRTSemanticNerfWModelConfig

    def populate_modules(self):
        # LPIPS would download AlexNet weights at construction; build it lazily (offline boxes, CI).
        with lazy_lpips_during_setup():
            super().populate_modules()
        self.cross_entropy_loss = IgnoreLabelCrossEntropy(irt_io.IGNORE_ID)

    def get_metrics_dict(self, outputs, batch):
        metrics_dict = super().get_metrics_dict(outputs, batch)
        if "semantics" in batch:
            labels = batch["semantics"][..., 0]  # [R]
            metrics_dict["labelled_ray_fraction"] = (labels != irt_io.IGNORE_ID).float().mean()
        return metrics_dict


def adapt_semantic_nerfw_config(config: TrainerConfig, data: Path) -> TrainerConfig:
    """Points a semantic-nerfw TrainerConfig at an IRT scene, in place.

    Keeps every setting of ``config`` (rays per batch, optimisers, model fields) and swaps in
    :class:`IRTSemanticNerfWDataParserConfig`, :class:`IRTSemanticDataset` and
    :class:`IRTSemanticNerfWModelConfig`.

    Args:
        config: A copy of ``method_configs["semantic-nerfw"]`` (or any TrainerConfig whose datamanager
            is a ``VanillaDataManagerConfig`` and whose model is a ``SemanticNerfWModelConfig``).
        data: Scene folder (or name, resolved as by ``irt-data``).

    Returns:
        ``config``.
    """
    datamanager = config.pipeline.datamanager
    model = config.pipeline.model
    if not isinstance(datamanager, VanillaDataManagerConfig) or not isinstance(model, SemanticNerfWModelConfig):
        raise ValueError(
            "adapt_semantic_nerfw_config: expected a semantic-nerfw TrainerConfig (VanillaDataManagerConfig + "
            f"SemanticNerfWModelConfig); got {type(datamanager).__name__} + {type(model).__name__}"
        )
    datamanager._target = VanillaDataManager[IRTSemanticDataset]
    datamanager.dataparser = IRTSemanticNerfWDataParserConfig(data=Path(data))
    datamanager.data = None
    kept = {f.name: getattr(model, f.name) for f in fields(model) if f.init and f.name != "_target"}
    config.pipeline.model = IRTSemanticNerfWModelConfig(**kept)
    return config
