"""Depth-tested reprojection between training views: depth providers, boundary mask B, label transfer.

A pixel of a training view is back-projected with its z-depth (OpenCV camera frame, pixel centres at
+0.5), projected into each labelled view and counted as seen there when it lands inside that view and
agrees with the labelled view's own depth (relative tolerance) and colour. Pixels that no labelled view
sees form the boundary mask B of the paper; the labelled views' classes at the seen pixels give the
``reproject`` pseudo labels, kept only where the class is certain (uniform around the landing pixel and
unchanged under a small depth error).

Depth (z in the camera frame, input-world units, 0 = unknown) comes from one of three providers:
triangulated points splatted into each view (:func:`depth_from_points`), ``<stem>.npy`` files
(:func:`load_depth_dir`), or a trained nerfstudio model (:func:`render_depths_from_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError

class DepthError(IRTDataError):
    """A depth map or depth source is unusable; the message names the file and the problem."""


@dataclass
class ReprojectSettings:
    """Tests a reprojected pixel must pass to count as seen by a labelled view (and to take its class)."""

    depth_tolerance: float = 0.03
    """Visibility: accepted |z - depth| / depth between the reprojected point and the labelled view's depth."""
    color_tolerance: float = 20.0
    """Visibility: largest mean absolute RGB difference (0-255, photos 3x3-averaged) between the pixel and
    where it lands in the labelled view; a different colour means a different surface. <= 0 turns it off."""
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


def backproject_depth(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """World points of every pixel centre of a z-depth map.

    Args:
        depth: z-depth [H, W] in the camera frame (the OpenCV z axis, not the ray length).
        K: Intrinsics [3, 3]; pixel (row r, col c) has its centre at (c + 0.5, r + 0.5).
        c2w: Camera-to-world [4, 4], OpenCV axes.

    Returns:
        float64 world points [H, W, 3].
    """
    height, width = depth.shape
    K = K.to(torch.float64)
    c2w = c2w.to(torch.float64)
    cols = torch.arange(width, dtype=torch.float64) + 0.5  # [W]
    rows = torch.arange(height, dtype=torch.float64) + 0.5  # [H]
    x = (cols[None, :] - K[0, 2]) / K[0, 0]  # [1, W]
    y = (rows[:, None] - K[1, 2]) / K[1, 1]  # [H, 1]
    z = depth.to(torch.float64)  # [H, W]
    points_cam = torch.stack([x * z, y * z, z], dim=-1)  # [H, W, 3]
    return points_cam @ c2w[:3, :3].T + c2w[:3, 3]  # [H, W, 3]


def project_points(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Projects world points into a camera.

    Args:
        points: World points [..., 3].
        K: Intrinsics [3, 3].
        c2w: Camera-to-world [4, 4], OpenCV axes.

    Returns:
        Pixel coordinates [..., 2] (x right, y down; pixel centres at +0.5) and camera z [...].
        Points with z <= 0 get meaningless coordinates; test z before using them.
    """
    K = K.to(torch.float64)
    c2w = c2w.to(torch.float64)
    rotation = c2w[:3, :3]  # [3, 3]
    points_cam = (points.to(torch.float64) - c2w[:3, 3]) @ rotation  # [..., 3] = R^T (p - t)
    z = points_cam[..., 2]  # [...]
    safe_z = torch.where(z > 0, z, torch.ones_like(z))  # [...]
    u = K[0, 0] * points_cam[..., 0] / safe_z + K[0, 2]  # [...]
    v = K[1, 1] * points_cam[..., 1] / safe_z + K[1, 2]  # [...]
    return torch.stack([u, v], dim=-1), z


def _pixel_hit(points: torch.Tensor, view: ReferenceView) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel of ``view`` each world point [N, 3] lands in: inside [N] bool, flat index [N], camera z [N]."""
    height, width = view.depth.shape
    uv, z = project_points(points, view.K, view.c2w)  # [N, 2], [N]
    # The pixel whose square holds the point (centres at +0.5) is the nearest pixel centre.
    cols = torch.floor(uv[:, 0]).long()  # [N]
    rows = torch.floor(uv[:, 1]).long()  # [N]
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
    use_color = photo is not None and settings.color_tolerance > 0
    colors = _box_mean(photo).reshape(-1, 3) if use_color else None  # [H*W, 3]
    offsets = []
    if num_classes is not None and settings.label_uncertainty > 0:
        offsets = [-settings.label_uncertainty, settings.label_uncertainty]
    shifted = [backproject_depth(depth * (1.0 + o), K, c2w).reshape(-1, 3) for o in offsets]  # [H*W, 3] each
    seen_any = torch.zeros(height * width, dtype=torch.bool)  # [H*W]
    votes = None if num_classes is None else torch.zeros(height * width, num_classes, dtype=torch.float32)
    for order, view in enumerate(references):
        inside, flat, z = _pixel_hit(points, view)  # [H*W] each
        depth_there = view.depth.reshape(-1).to(torch.float64)[flat]  # [H*W]
        seen = valid & inside & (depth_there > 0)
        seen &= (z - depth_there).abs() <= settings.depth_tolerance * depth_there
        if use_color:
            if view.photo is None:
                raise ValueError("reproject_from_references: the colour test needs the labelled views' photos")
            colors_there = _box_mean(view.photo).reshape(-1, 3)[flat]  # [H*W, 3]
            seen &= (colors - colors_there).abs().mean(dim=1) <= settings.color_tolerance
        seen_any |= seen
        if votes is None:
            continue
        if view.labels is None:
            raise ValueError("reproject_from_references: a reference view has no labels to carry")
        labels_there = uniform_labels(view.labels, settings.label_margin).reshape(-1)  # [H*W]
        classes = labels_there[flat]  # [H*W]
        counted = seen & (classes < num_classes)  # [H*W]
        for points_off in shifted:
            # The class must not change if the depth is a little off (the point slides along the ray).
            inside_off, flat_off, _ = _pixel_hit(points_off, view)  # [H*W]
            counted &= inside_off & (labels_there[flat_off] == classes)
        # Integer votes plus a bonus far below 1 that falls with the view's order: ties go to the first.
        weight = 1.0 + 1e-3 * (len(references) - order) / len(references)
        votes[counted, classes[counted]] += weight
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


def _disc_offsets(radius: float) -> torch.Tensor:
    reach = int(math.floor(radius))
    steps = torch.arange(-reach, reach + 1)  # [S]
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")  # [S, S]
    inside = (dx**2 + dy**2) <= radius**2 + 1e-9  # [S, S]
    return torch.stack([dx[inside], dy[inside]], dim=-1)  # [O, 2] (dx, dy)


@dataclass
class PointsDepthSettings:
    """How a depth map is made from a sparse, noisy point cloud."""

    visibility_radius: float = 2.5
    """Radius (pixels) of the disc each point occludes; points behind a nearer disc are hidden."""
    visibility_tolerance: float = 0.02
    """A point is visible when its depth is within this relative margin of the nearest disc over it."""
    neighbours: int = 8
    """Image-space neighbours a visible point is compared with to drop outliers."""
    outlier_tolerance: float = 0.02
    """A point whose depth is farther than this (relative) from its neighbours' median is dropped."""
    max_edge: float = 40.0
    """Triangles of the image-space Delaunay mesh with an edge longer than this (pixels) are left out."""
    max_spread: float = 0.15
    """Triangles whose corner depths differ by more than this ratio (a depth edge) are left out."""


def depth_from_points(
    points: torch.Tensor,
    K: torch.Tensor,
    c2w: torch.Tensor,
    height: int,
    width: int,
    settings: Optional[PointsDepthSettings] = None,
) -> torch.Tensor:
    """A z-depth map from a sparse point cloud: visible points, outliers dropped, meshed and interpolated.

    Points hidden behind nearer ones (a z-buffer of small discs) and points far from their neighbours'
    median depth are dropped; the rest are meshed by a Delaunay triangulation in the image and the
    inverse depth is interpolated linearly inside each triangle (exact for planes). Triangles that span
    a depth edge or a large empty area are left out, so their pixels stay unknown (0) instead of
    getting a depth between two surfaces.

    Args:
        points: World points [P, 3] (input-world frame of the poses).
        K: Intrinsics [3, 3].
        c2w: Camera-to-world [4, 4], OpenCV axes.
        height: Image height in pixels.
        width: Image width in pixels.
        settings: Parameters; defaults if None.

    Returns:
        float32 z-depth [H, W]; 0 where unknown.
    """
    from scipy.spatial import Delaunay, QhullError, cKDTree

    settings = settings or PointsDepthSettings()
    unknown = torch.zeros(height, width, dtype=torch.float32)  # [H, W]
    reach = settings.max_edge
    uv, z = project_points(points, K, c2w)  # [P, 2], [P]
    # Points just outside the image still anchor triangles that reach into it.
    near = (z > 1e-9) & (uv[:, 0] > -reach) & (uv[:, 0] < width + reach) & (uv[:, 1] > -reach) & (uv[:, 1] < height + reach)
    uv, z = uv[near], z[near]  # [P', 2], [P']
    if z.numel() < 3:
        return unknown
    offsets = _disc_offsets(settings.visibility_radius)  # [O, 2]
    centre = torch.floor(uv).long()  # [P', 2]
    pixels = centre[:, None, :] + offsets[None, :, :]  # [P', O, 2]
    cols, rows = pixels[..., 0].reshape(-1), pixels[..., 1].reshape(-1)  # [P'*O]
    z_per_pixel = z[:, None].expand(-1, offsets.shape[0]).reshape(-1)  # [P'*O]
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)  # [P'*O]
    zbuffer = torch.full((height * width,), float("inf"), dtype=torch.float64)  # [H*W]
    zbuffer.scatter_reduce_(0, rows[inside] * width + cols[inside], z_per_pixel[inside], reduce="amin")
    in_image = (centre[:, 0] >= 0) & (centre[:, 0] < width) & (centre[:, 1] >= 0) & (centre[:, 1] < height)  # [P']
    own_pixel = centre[:, 1].clamp(0, height - 1) * width + centre[:, 0].clamp(0, width - 1)  # [P']
    visible = ~in_image | (z <= zbuffer[own_pixel] * (1.0 + settings.visibility_tolerance))  # [P']
    uv_np, z_np = uv[visible].numpy(), z[visible].numpy()  # [V, 2], [V]
    if len(z_np) > settings.neighbours + 1:
        _, neighbours = cKDTree(uv_np).query(uv_np, k=settings.neighbours + 1)  # [V, k + 1]
        median = np.median(z_np[neighbours[:, 1:]], axis=1)  # [V]
        agrees = np.abs(z_np / median - 1.0) <= settings.outlier_tolerance  # [V]
        uv_np, z_np = uv_np[agrees], z_np[agrees]
    if len(z_np) < 3:
        return unknown
    try:
        mesh = Delaunay(uv_np)
    except QhullError:
        return unknown  # all points on a line
    corners = mesh.simplices  # [T, 3]
    corner_uv = uv_np[corners]  # [T, 3, 2]
    longest = np.linalg.norm(corner_uv - np.roll(corner_uv, 1, axis=1), axis=-1).max(axis=1)  # [T]
    corner_z = z_np[corners]  # [T, 3]
    spread = corner_z.max(axis=1) / corner_z.min(axis=1) - 1.0  # [T]
    usable = (longest <= settings.max_edge) & (spread <= settings.max_spread)  # [T]
    rows_g, cols_g = np.mgrid[0:height, 0:width]
    centres = np.stack([cols_g.ravel() + 0.5, rows_g.ravel() + 0.5], axis=-1)  # [H*W, 2]
    triangle = mesh.find_simplex(centres)  # [H*W], -1 outside the mesh
    known = triangle >= 0  # [H*W]
    known[known] = usable[triangle[known]]
    affine = mesh.transform[triangle[known]]  # [K, 3, 2]
    first_two = np.einsum("kij,kj->ki", affine[:, :2], centres[known] - affine[:, 2])  # [K, 2]
    barycentric = np.concatenate([first_two, 1.0 - first_two.sum(axis=1, keepdims=True)], axis=1)  # [K, 3]
    inverse_depth = (barycentric / z_np[corners[triangle[known]]]).sum(axis=1)  # [K]
    depth = np.zeros(height * width, dtype=np.float64)  # [H*W]
    depth[known] = 1.0 / inverse_depth
    return torch.from_numpy(depth.reshape(height, width).astype(np.float32))


def load_depth_dir(depth_dir: Path, stems: Sequence[str], sizes: Sequence[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
    """Reads ``<depth_dir>/<stem>.npy`` z-depth maps.

    Args:
        depth_dir: Folder of float ``.npy`` arrays [H, W] (or [H, W, 1]): z in the OpenCV camera frame,
            input-world units; NaN, inf and values <= 0 mean unknown.
        stems: Views wanted.
        sizes: (height, width) each map must have, per stem.

    Returns:
        stem -> float32 [H, W] depth, 0 where unknown.
    """
    depth_dir = Path(depth_dir)
    if not depth_dir.is_dir():
        raise DepthError(f"{depth_dir}: depth folder does not exist")
    depths: Dict[str, torch.Tensor] = {}
    for stem, (height, width) in zip(stems, sizes):
        path = depth_dir / f"{stem}.npy"
        if not path.is_file():
            raise DepthError(f"{path}: depth map missing; --depth-dir needs one <stem>.npy per training view")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DepthError(f"{path}: cannot read the .npy depth map ({err})") from None
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.shape != (height, width):
            raise DepthError(f"{path}: depth map has shape {array.shape}; the photo needs ({height}, {width})")
        if not np.issubdtype(array.dtype, np.number):
            raise DepthError(f"{path}: depth map has dtype {array.dtype}; expected floats")
        array = array.astype(np.float32)
        array[~np.isfinite(array) | (array <= 0)] = 0.0
        if not (array > 0).any():
            raise DepthError(f"{path}: depth map has no valid (finite, positive) value")
        depths[stem] = torch.from_numpy(array)  # [H, W]
    return depths


def render_depths_from_config(
    config_path: Path,
    stems: Sequence[str],
    sizes: Sequence[Tuple[int, int]],
    min_accumulation: float = 0.5,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, torch.Tensor]:
    """Renders z-depth of training views with a trained nerfstudio model (e.g. splatfacto or semsplat).

    The model renders in the dataparser's scaled frame; depth is divided by ``dataparser_scale`` to
    get back to input-world units. Views are matched to training cameras by image file stem.

    Args:
        config_path: The run's ``config.yml``.
        stems: Views wanted; each must be a training image of the run.
        sizes: (height, width) each map must have, per stem.
        min_accumulation: Pixels whose rendered opacity is below this are unknown (0).
        progress: Called with each stem after it is rendered.

    Returns:
        stem -> float32 [H, W] depth, 0 where unknown.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path)
    if not config_path.is_file():
        raise DepthError(f"{config_path}: nerfstudio config.yml does not exist (--depth-config)")
    _, pipeline, _, _ = eval_setup(config_path, test_mode="inference")
    outputs = pipeline.datamanager.train_dataparser_outputs
    scale = float(outputs.dataparser_scale)
    index_of = {Path(name).stem: i for i, name in enumerate(outputs.image_filenames)}
    depths: Dict[str, torch.Tensor] = {}
    pipeline.model.eval()
    for stem, (height, width) in zip(stems, sizes):
        if stem not in index_of:
            raise DepthError(f"{config_path}: the run has no training image {stem!r}; was it trained on this scene?")
        camera = outputs.cameras[index_of[stem] : index_of[stem] + 1]
        with torch.no_grad():
            rendered = pipeline.model.get_outputs_for_camera(camera)
        if "depth" not in rendered:
            raise DepthError(f"{config_path}: the model renders no 'depth' output; use --depth points instead")
        depth = rendered["depth"][..., 0].float().cpu() / scale  # [H, W]
        if depth.shape != (height, width):
            raise DepthError(
                f"{config_path}: rendered depth of {stem!r} is {tuple(depth.shape)}; the photo is ({height}, {width})"
            )
        known = torch.isfinite(depth) & (depth > 0)  # [H, W]
        if "accumulation" in rendered:
            known &= rendered["accumulation"][..., 0].float().cpu() >= min_accumulation
        depths[stem] = torch.where(known, depth, torch.zeros_like(depth))
        if progress is not None:
            progress(stem)
    return depths


def coverage_stats(pseudo: np.ndarray, boundary: np.ndarray) -> Dict[str, float]:
    """Share of pixels with a pseudo label and share inside B.

    Args:
        pseudo: uint8 [H, W] pseudo ids, 255 = none.
        boundary: bool [H, W] B.

    Returns:
        ``{"coverage": ..., "boundary_share": ...}`` in [0, 1].
    """
    return {"coverage": float((pseudo != IGNORE_ID).mean()), "boundary_share": float(boundary.mean())}


def accuracy_against(pseudo: np.ndarray, truth: np.ndarray) -> Tuple[int, int, int]:
    """Counts for pseudo-label accuracy against full ground truth.

    Args:
        pseudo: uint8 [H, W] pseudo ids, 255 = none.
        truth: uint8 [H, W] true ids (255 = none).

    Returns:
        (correct, set_and_judged, judged): pixels where the pseudo id equals the truth; pixels with
        both a pseudo id and a true id; pixels with a true id.
    """
    judged = truth != IGNORE_ID  # [H, W]
    set_here = judged & (pseudo != IGNORE_ID)  # [H, W]
    correct = set_here & (pseudo == truth)  # [H, W]
    return int(correct.sum()), int(set_here.sum()), int(judged.sum())


__all__: List[str] = [
    "DepthError",
    "ReprojectSettings",
    "ReferenceView",
    "PointsDepthSettings",
    "backproject_depth",
    "project_points",
    "uniform_labels",
    "reproject_from_references",
    "boundary_mask",
    "depth_from_points",
    "load_depth_dir",
    "render_depths_from_config",
    "coverage_stats",
    "accuracy_against",
]
