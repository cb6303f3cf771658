"""Depth providers: z-depth maps of training views (camera z, input-world units, 0 = unknown).

From triangulated points splatted into each view (:func:`depth_from_points`), ``<stem>.npy`` files
(:func:`load_depth_dir`), or a trained nerfstudio model (:func:`render_depths_from_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from semsplat_ns.data.irt_io import IRTDataError

if TYPE_CHECKING:
    import torch


class DepthError(IRTDataError):
    """A depth map or depth source is unusable; the message names the file and the problem."""


def _disc_offsets(radius: float) -> np.ndarray:
    reach = int(math.floor(radius))
    steps = np.arange(-reach, reach + 1)  # [S]
    dy, dx = np.meshgrid(steps, steps, indexing="ij")  # [S, S]
    inside = (dx**2 + dy**2) <= radius**2 + 1e-9  # [S, S]
    return np.stack([dx[inside], dy[inside]], axis=-1)  # [O, 2] (dx, dy)


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


DepthView = Tuple[int, np.ndarray, np.ndarray, int, int]
"""One view's (index, K [3, 3], c2w [4, 4], height, width)."""


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
    getting a depth between two surfaces. The work is :func:`depth_map_from_points` (numpy and scipy).

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
    import torch

    def as_array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().to(torch.float64).numpy()

    depth = depth_map_from_points(as_array(points), as_array(K), as_array(c2w), height, width, settings)
    return torch.from_numpy(depth)  # [H, W]


def depth_map_from_points(
    points: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    height: int,
    width: int,
    settings: Optional[PointsDepthSettings] = None,
) -> np.ndarray:
    """:func:`depth_from_points` on numpy arrays, without torch (the depth worker processes skip importing it).

    Args:
        points: float64 world points [P, 3].
        K: float64 intrinsics [3, 3].
        c2w: float64 camera-to-world [4, 4], OpenCV axes.
        height: Image height in pixels.
        width: Image width in pixels.
        settings: Parameters; defaults if None.

    Returns:
        float32 z-depth [H, W]; 0 where unknown.
    """
    from scipy.spatial import Delaunay, KDTree, QhullError

    settings = settings or PointsDepthSettings()
    unknown = np.zeros((height, width), dtype=np.float32)  # [H, W]
    reach = settings.max_edge
    u, v, z = _project(points, K, c2w)  # [P] each
    # Points just outside the image still anchor triangles that reach into it.
    near = (z > 1e-9) & (u > -reach) & (u < width + reach) & (v > -reach) & (v < height + reach)  # [P]
    u, v, z = u[near], v[near], z[near]  # [P'] each
    if len(z) < 3:
        return unknown
    visible = _visible(u, v, z, height, width, settings)  # [P']
    uv_np = np.stack([u[visible], v[visible]], axis=-1)  # [V, 2]
    z_np = z[visible]  # [V]
    if len(z_np) > settings.neighbours + 1:
        _, found = KDTree(uv_np).query(uv_np, k=settings.neighbours + 1)
        # scipy's stubs type the indices as a scalar; for [V, 2] queries and k > 1 they are [V, k + 1].
        neighbours = np.asarray(found, dtype=np.int64)  # [V, k + 1]
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
    return depth.reshape(height, width).astype(np.float32)


def _project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`semsplat_ns.geometry.projection.project_points_uvz` in numpy (the same float64 operations, so the same
    values): pixel u [P], v [P] and camera z [P] of world points [P, 3]; meaningless u, v where z <= 0."""
    points_cam = (points - c2w[:3, 3]) @ c2w[:3, :3]  # [P, 3] = R^T (p - t)
    z = points_cam[:, 2]  # [P]
    safe_z = np.where(z > 0, z, 1.0)  # [P]
    u = K[0, 0] * points_cam[:, 0] / safe_z + K[0, 2]  # [P]
    v = K[1, 1] * points_cam[:, 1] / safe_z + K[1, 2]  # [P]
    return u, v, z


def _visible(
    u: np.ndarray, v: np.ndarray, z: np.ndarray, height: int, width: int, settings: PointsDepthSettings
) -> np.ndarray:
    """Which points [P] no nearer point's disc hides: each point covers the pixels of a disc around its own pixel, and
    a point in the image is visible when its depth is within the tolerance of the nearest disc over its own pixel.
    Points outside the image count as visible (nothing there to test them against).

    The nearest disc over a pixel is the minimum, over the disc's offsets, of the nearest point whose own pixel sits
    at that offset: one minimum per pixel of points, then one shifted minimum per offset over the image (21 at the
    default radius), instead of scattering every point into every pixel of its disc (the same minima).
    """
    offsets = _disc_offsets(settings.visibility_radius)  # [O, 2]
    pad = int(np.abs(offsets).max())
    cols, rows = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)  # [P] each
    # Own pixels up to `pad` outside the image still cover pixels inside it.
    in_reach = (cols >= -pad) & (cols < width + pad) & (rows >= -pad) & (rows < height + pad)  # [P]
    padded_width = width + 2 * pad
    nearest = np.full((height + 2 * pad) * padded_width, np.inf)  # [(H + 2 pad) * (W + 2 pad)]
    cells = (rows[in_reach] + pad) * padded_width + cols[in_reach] + pad
    np.minimum.at(nearest, cells, z[in_reach])
    nearest = nearest.reshape(height + 2 * pad, padded_width)  # [H + 2 pad, W + 2 pad]
    zbuffer = np.full((height, width), np.inf)  # [H, W]
    for dx, dy in offsets.tolist():
        # Pixel (r, c) is covered by the disc of a point whose own pixel is (r - dy, c - dx).
        np.minimum(zbuffer, nearest[pad - dy : pad - dy + height, pad - dx : pad - dx + width], out=zbuffer)
    in_image = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)  # [P]
    own = zbuffer[rows.clip(0, height - 1), cols.clip(0, width - 1)]  # [P]
    return ~in_image | (z <= own * (1.0 + settings.visibility_tolerance))


def depth_maps_from_points(
    points: np.ndarray, settings: PointsDepthSettings, views: Sequence[DepthView]
) -> Dict[int, np.ndarray]:
    """float32 z-depth maps [H, W] of a few views from float64 points [P, 3], by view index: one task of
    :func:`semsplat_ns.pseudo.depths.compute_depths`'s worker processes, which import numpy and scipy through this
    module, not torch (2 s of each worker's start on the 2-core box)."""
    return {i: depth_map_from_points(points, K, c2w, height, width, settings) for i, K, c2w, height, width in views}


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
    import torch

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
    import torch
    from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
    from nerfstudio.models.base_model import Model
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path)
    if not config_path.is_file():
        raise DepthError(f"{config_path}: nerfstudio config.yml does not exist (--depth-config)")
    _, pipeline, _, _ = eval_setup(config_path, test_mode="inference")
    outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
    model = pipeline.model
    # Both hold for nerfstudio's image datamanagers and models; checked, as the pipeline types them loosely.
    if not isinstance(outputs, DataparserOutputs) or not isinstance(model, Model):
        raise DepthError(f"{config_path}: the run's pipeline keeps no training cameras or has no nerfstudio model")
    scale = float(outputs.dataparser_scale)
    index_of = {Path(name).stem: i for i, name in enumerate(outputs.image_filenames)}
    depths: Dict[str, torch.Tensor] = {}
    model.eval()
    for stem, (height, width) in zip(stems, sizes):
        if stem not in index_of:
            raise DepthError(f"{config_path}: the run has no training image {stem!r}; was it trained on this scene?")
        camera = outputs.cameras[index_of[stem] : index_of[stem] + 1]
        with torch.no_grad():
            rendered = model.get_outputs_for_camera(camera)
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
