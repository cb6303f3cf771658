"""Visibility from the labelled views: which pixels of a view a labelled view observes.

A pixel of a training view is back-projected with its z-depth, projected into each labelled view and
counted as seen there when it lands inside that view and agrees with the labelled view's own depth
(relative tolerance) and colour. Pixels that no labelled view sees form the boundary mask B of the
paper. The same test carries the labelled views' classes to the seen pixels (the ``reproject`` pseudo
labels), kept only where the class is certain (uniform around the landing pixel and unchanged under a
small depth error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from semsplat_ns.data.irt_io import IGNORE_ID
from semsplat_ns.geometry.projection import backproject_depth, project_points_uvz


@dataclass
class ReprojectSettings:
    """Tests a reprojected pixel must pass to count as seen by a labelled view (and to take its class)."""

    depth_tolerance: float = 0.03
    """Visibility: accepted |z - depth| / depth between the reprojected point and the labelled view's depth."""
    color_tolerance: float = 3.0
    """Visibility: largest mean absolute RGB difference (0-255, photos 3x3-averaged) between the pixel and
    where it lands in the labelled view; a different colour means a different surface. <= 0 turns it off.
    Thin objects that sparse-point depth misses (poles, signs) land on the surface behind them in the labelled
    view; a tight tolerance keeps its class off them (townA, share of pole pixels given a wrong carried label:
    16 / 10 / 5 % at 20 / 10 / 5, label accuracy 97.6 / 98.9 / 99.6 %, coverage 41 / 36 / 30 %). The preset at
    3 against 5 (7000 steps, 2bab260): townA 75.85 / 74.89, townB 60.70 / 59.41 mIoU."""
    label_uncertainty: float = 0.005
    """Labels: the class is carried only if it is the same when the pixel's depth is off by this relative
    amount either way (depth from points is not exact, and an error moves the point along the ray)."""
    label_margin: int = 1
    """Labels: the class is carried only where the labelled view's label is uniform within this many pixels."""


@dataclass
class ReferenceView:
    """A labelled training view that other views are tested (and labels carried) against."""

    depth: torch.Tensor
    """float32 [H, W] z-depth in the view's OpenCV camera frame; 0 where unknown."""
    K: torch.Tensor
    """float64 [3, 3] pinhole intrinsics (pixel centres at +0.5)."""
    c2w: torch.Tensor
    """float64 [4, 4] camera-to-world pose, OpenCV axes."""
    labels: Optional[torch.Tensor] = None
    """uint8 [H, W] ground-truth class ids (255 = none); needed only to carry labels."""
    photo: Optional[torch.Tensor] = None
    """uint8 [H, W, 3] photo; needed only for the colour test."""
    _derived: Dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)
    """What every tested view needs of this one, made at the first use (its depth as float64, its 3x3-averaged
    photo, its uniform labels per margin): once per labelled view instead of once per tested view."""

    def flat_depth(self) -> torch.Tensor:
        """float64 [H*W] depth."""
        if "depth" not in self._derived:
            self._derived["depth"] = self.depth.reshape(-1).to(torch.float64)
        return self._derived["depth"]

    def flat_box_colors(self) -> torch.Tensor:
        """float32 [H*W, 3] 3x3 mean of the photo (:func:`_box_mean`)."""
        if self.photo is None:
            raise ValueError("reproject_from_references: the colour test needs the labelled views' photos")
        if "colors" not in self._derived:
            self._derived["colors"] = _box_mean(self.photo).reshape(-1, 3)
        return self._derived["colors"]

    def flat_uniform_labels(self, margin: int) -> torch.Tensor:
        """long [H*W] labels uniform within ``margin`` pixels, else 255 (:func:`uniform_labels`)."""
        if self.labels is None:
            raise ValueError("reproject_from_references: a reference view has no labels to carry")
        key = f"labels{margin}"
        if key not in self._derived:
            self._derived[key] = uniform_labels(self.labels, margin).reshape(-1)
        return self._derived[key]


def _pixel_hit(points: torch.Tensor, view: ReferenceView) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel of ``view`` each world point [N, 3] lands in: inside [N] bool, flat index [N], camera z [N]."""
    height, width = view.depth.shape
    u, v, z = project_points_uvz(points, view.K, view.c2w)  # [N] each
    # The pixel whose square holds the point (centres at +0.5) is the nearest pixel centre.
    cols = torch.floor(u).long()  # [N]
    rows = torch.floor(v).long()  # [N]
    inside = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)  # [N]
    flat = torch.where(inside, rows * width + cols, torch.zeros_like(cols))  # [N]
    return inside, flat, z


def _box_mean(photo: torch.Tensor) -> torch.Tensor:
    """3x3 mean of an image [H, W, 3] (borders average the pixels that exist), float32 [H, W, 3]."""
    channels_first = photo.permute(2, 0, 1)[None].float()  # [1, 3, H, W]
    return F.avg_pool2d(channels_first, 3, stride=1, padding=1, count_include_pad=False)[0].permute(1, 2, 0)


def uniform_labels(labels: torch.Tensor, margin: int) -> torch.Tensor:
    """Class ids where the label is the same over a (2 * margin + 1)^2 window, else 255.

    Args:
        labels: uint8 [H, W] class ids.
        margin: Half size of the window; 0 returns the labels unchanged.

    Returns:
        long [H, W].
    """
    labels = labels.long()
    if margin <= 0:
        return labels
    size = 2 * margin + 1
    as_float = labels.float()[None, None]  # [1, 1, H, W]
    largest = F.max_pool2d(as_float, size, stride=1, padding=margin)[0, 0]  # [H, W]
    smallest = -F.max_pool2d(-as_float, size, stride=1, padding=margin)[0, 0]  # [H, W]
    return torch.where(largest == smallest, labels, torch.full_like(labels, IGNORE_ID))


def reproject_from_references(
    depth: torch.Tensor,
    K: torch.Tensor,
    c2w: torch.Tensor,
    references: Sequence[ReferenceView],
    num_classes: Optional[int] = None,
    settings: Optional[ReprojectSettings] = None,
    photo: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Tests every pixel of a view against the labelled views and (optionally) carries their labels.

    A pixel is seen by a labelled view when its back-projected point lands inside that view, in front of
    it, on a pixel whose depth agrees (``depth_tolerance``) and, given photos, whose colour agrees
    (``color_tolerance``). A seen pixel takes the labelled view's class if the class is uniform within
    ``label_margin`` pixels and unchanged when the depth is off by ``label_uncertainty`` either way.
    Where several labelled views give a class, the one most of them agree on wins; a tie goes to the view
    listed first.

    Args:
        depth: z-depth [H, W] of the view; 0 = unknown (such pixels are seen by nobody).
        K: Intrinsics [3, 3] of the view.
        c2w: Camera-to-world [4, 4] of the view.
        references: Labelled views (with ``labels`` when ``num_classes`` is given, ``photo`` when
            ``photo`` is given).
        num_classes: Number of classes; None only computes visibility.
        settings: The tests' tolerances; defaults if None.
        photo: uint8 [H, W, 3] photo of the view, for the colour test; None skips that test.

    Returns:
        Bool [H, W] "seen by at least one labelled view", and uint8 [H, W] carried class ids (255 where
        no labelled view gives a class), or None when ``num_classes`` is None.
    """
    settings = settings or ReprojectSettings()
    height, width = depth.shape
    valid = (depth > 0).reshape(-1)  # [H*W]
    points = backproject_depth(depth, K, c2w).reshape(-1, 3)  # [H*W, 3]
    # None: no colour test (no photo, or a tolerance of 0).
    colors = _box_mean(photo).reshape(-1, 3) if photo is not None and settings.color_tolerance > 0 else None  # [H*W, 3]
    offsets = []
    if num_classes is not None and settings.label_uncertainty > 0:
        offsets = [-settings.label_uncertainty, settings.label_uncertainty]
    shifted = [backproject_depth(depth * (1.0 + o), K, c2w).reshape(-1, 3) for o in offsets]  # [H*W, 3] each
    seen_any = torch.zeros(height * width, dtype=torch.bool, device=depth.device)  # [H*W]
    votes = None
    if num_classes is not None:
        votes = torch.zeros(height * width, num_classes, dtype=torch.float32, device=depth.device)  # [H*W, C]
    for order, view in enumerate(references):
        inside, flat, z = _pixel_hit(points, view)  # [H*W] each
        depth_there = view.flat_depth()[flat]  # [H*W]
        seen = valid & inside & (depth_there > 0)
        seen &= (z - depth_there).abs() <= settings.depth_tolerance * depth_there
        if colors is not None:
            colors_there = view.flat_box_colors()[flat]  # [H*W, 3]
            seen &= (colors - colors_there).abs().mean(dim=1) <= settings.color_tolerance
        seen_any |= seen
        if votes is None or num_classes is None:  # both None together: visibility only
            continue
        labels_there = view.flat_uniform_labels(settings.label_margin)  # [H*W]
        classes = labels_there[flat]  # [H*W]
        counted = seen & (classes < num_classes)  # [H*W]
        for points_off in shifted:
            # The class must not change if the depth is a little off (the point slides along the ray).
            inside_off, flat_off, _ = _pixel_hit(points_off, view)  # [H*W]
            counted &= inside_off & (labels_there[flat_off] == classes)
        # Integer votes plus a bonus far below 1 that falls with the view's order: ties go to the first.
        weight = 1.0 + 1e-3 * (len(references) - order) / len(references)
        # a weight for every pixel (0 where not counted) instead of boolean indexing, which waits for a GPU
        votes.scatter_add_(1, classes.clamp(max=num_classes - 1)[:, None], (counted * weight)[:, None].float())
    if votes is None:
        return seen_any.reshape(height, width), None
    best_votes, best_class = votes.max(dim=1)  # [H*W], [H*W]
    labels = torch.where(best_votes > 0, best_class, torch.full_like(best_class, IGNORE_ID))  # [H*W]
    return seen_any.reshape(height, width), labels.to(torch.uint8).reshape(height, width)


def boundary_mask(
    depth: torch.Tensor,
    K: torch.Tensor,
    c2w: torch.Tensor,
    references: Sequence[ReferenceView],
    settings: Optional[ReprojectSettings] = None,
    photo: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The boundary mask B: pixels of a view that no labelled view observes.

    Args:
        depth: z-depth [H, W] of the view; pixels with unknown depth (0) are in B.
        K: Intrinsics [3, 3] of the view.
        c2w: Camera-to-world [4, 4] of the view.
        references: The labelled views, each with its own depth (and photo for the colour test).
        settings: The visibility tests' tolerances; defaults if None.
        photo: uint8 [H, W, 3] photo of the view for the colour test; None skips it.

    Returns:
        Bool [H, W], True inside B.
    """
    seen, _ = reproject_from_references(depth, K, c2w, references, None, settings, photo)  # [H, W]
    return ~seen
