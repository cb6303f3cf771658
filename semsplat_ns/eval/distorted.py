"""Predictions of a capture camera with lens distortion, brought back to its original (distorted) photo.

nerfstudio's full-image datamanager trains on undistorted photos: ``_undistort_image`` of
``nerfstudio.data.datamanagers.full_images_datamanager`` resamples each photo whose camera has distortion
coefficients to a pinhole camera (perspective: cropped to the valid region, which changes K and the size;
fisheye: same size, new K). A trained model therefore renders that pinhole picture, and
:mod:`semsplat_ns.data.capture_labels` brings the labels into it. This module goes the other way for
prediction: for every pixel of the distorted photo, the ray through its centre is found with nerfstudio's own
camera model (:meth:`nerfstudio.cameras.cameras.Cameras.generate_rays`, which undistorts the perspective
k1..k4, p1, p2 and fisheye models as nerfstudio renders them), projected into the undistorted pinhole camera
(K and size from nerfstudio's own ``_undistort_image``, :func:`~semsplat_ns.data.capture_labels.training_geometry`),
and the render is read at the pixel it falls in (nearest neighbour: class ids are never blended). Where
nerfstudio's undistorted picture has fewer pixels across the photo's centre than the photo, it is rendered
correspondingly finer (at most twice), so neighbouring photo pixels do not share one rendered pixel. Pixels
whose ray misses the undistorted picture (the rim nerfstudio crops away, rays behind the pinhole plane) get a
fill value: 255, the "no label" id of the IRT label format, for class ids.

Tested for nerfstudio's perspective (OPENCV: k1, k2, k3, p1, p2; nerfstudio refuses k4 when it undistorts),
fisheye (OPENCV_FISHEYE) and FISHEYE624 cameras (k0..k5, p0, p1, s0..s3, with transforms.json's
``fisheye_crop_radius``), the last against nerfstudio's ``fisheye624_unproject_helper`` / ``fisheye624_project``.
nerfstudio undistorts FISHEYE624 photos with integer pixel centres (``cv2.remap``'s), which the lookup follows,
and swaps x and y doing so: only a lens symmetric about the image diagonal comes out right, and other FISHEYE624
cameras are refused (:func:`~semsplat_ns.data.capture_labels.check_undistortion`, tested on a 64x48 photo).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from semsplat_ns.data.capture_labels import training_geometry

__all__ = [
    "DistortedFrame",
    "DistortedFrames",
    "distorted_frame",
    "distorted_pixel_positions",
    "lens_key",
    "undistorted_camera",
]

_RAYS_PER_CHUNK = 1 << 20
"""Rays generated at once (bounds the memory of a full-size photo's ray bundle)."""


def _one_camera(camera: Cameras) -> Cameras:
    """The single camera of ``camera`` (shape [], [1] or [1, 1]) with shape []."""
    if int(np.prod(camera.shape)) != 1:
        raise ValueError(f"expected one camera, got a batch of shape {tuple(camera.shape)}")
    return camera.reshape(())


def undistorted_camera(camera: Cameras) -> Cameras:
    """The pinhole camera nerfstudio trains on for ``camera``: the undistorted (and, for perspective cameras,
    cropped) photo's K and size, no distortion, same pose.

    Args:
        camera: One camera (any shape of one element), on the CPU.

    Returns:
        A perspective camera of shape [1] without distortion coefficients.
    """
    one = _one_camera(camera)
    K, (height, width) = training_geometry(one)  # float64 [3, 3], pixel centres at +0.5
    return Cameras(
        camera_to_worlds=one.camera_to_worlds[None].clone(),  # [1, 3, 4]
        fx=float(K[0, 0]),
        fy=float(K[1, 1]),
        cx=float(K[0, 2]),
        cy=float(K[1, 2]),
        width=width,
        height=height,
        camera_type=CameraType.PERSPECTIVE,
    )


def distorted_pixel_positions(camera: Cameras, target: Cameras) -> torch.Tensor:
    """Where the centre of every pixel of ``camera``'s distorted photo lands in the pinhole camera ``target``.

    The ray through each pixel centre comes from nerfstudio's camera model (``Cameras.generate_rays`` with the
    camera's distortion coefficients and type); it is projected with ``target``'s K. Both cameras are taken in
    the camera's own frame (the poses are ignored; ``target`` shares the camera's pose).

    Args:
        camera: One camera (any shape of one element) with its distortion parameters.
        target: One pinhole camera.

    Returns:
        float32 [H, W, 2]: (x, y) in ``target``'s pixels, pixel centres at +0.5 (the pixel (col, row) covers
        [col, col + 1) x [row, row + 1)); NaN where the ray points away from ``target``'s image plane. H and W
        are ``camera``'s height and width. For a FISHEYE624 ``camera``, ``target``'s K is taken with integer
        pixel centres, as nerfstudio's undistortion makes it (see the comment below).
    """
    one, pinhole = _one_camera(camera), _one_camera(target)
    local = Cameras(
        camera_to_worlds=torch.eye(4)[:3],  # [3, 4]: rays in the camera's own frame (OpenGL axes)
        fx=one.fx,
        fy=one.fy,
        cx=one.cx,
        cy=one.cy,
        width=one.width,
        height=one.height,
        distortion_params=one.distortion_params,
        camera_type=one.camera_type,
        metadata=one.metadata,
    )
    # nerfstudio undistorts a FISHEYE624 photo with cv2.remap, pixel centres at integers in the photo and in
    # the picture (whose K it centres at (w - 1) / 2), not at +0.5 as generate_rays takes them: such a photo
    # pixel's ray goes through its integer coordinate, and lands half a pixel further in +0.5-centred pixels.
    offset = 0.0 if int(one.camera_type.item()) == CameraType.FISHEYE624.value else 0.5
    coords = local.get_image_coords(pixel_offset=offset)  # [H, W, 2] (y, x) pixel centres
    height, width = coords.shape[:2]
    rows_per_chunk = max(1, _RAYS_PER_CHUNK // max(width, 1))
    with warnings.catch_warnings():
        # nerfstudio 1.1.5 indexes with a list of tensors, which torch >= 2.6 warns about on every call.
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        directions = torch.cat(
            [
                local.generate_rays(camera_indices=0, coords=coords[start : start + rows_per_chunk]).directions
                for start in range(0, height, rows_per_chunk)
            ]
        )  # [H, W, 3] x right, y up, z backwards
    depth = -directions[..., 2]  # [H, W] along the viewing axis
    ahead = depth > 1e-6  # [H, W]
    safe = torch.where(ahead, depth, torch.ones_like(depth))  # [H, W]
    x = pinhole.fx * (directions[..., 0] / safe) + pinhole.cx + (0.5 - offset)  # [H, W]
    y = pinhole.fy * (-directions[..., 1] / safe) + pinhole.cy + (0.5 - offset)  # [H, W] rows grow downwards
    positions = torch.stack([x, y], dim=-1).float()  # [H, W, 2]
    return torch.where(ahead[..., None], positions, torch.full_like(positions, float("nan")))


@dataclass(frozen=True)
class DistortedFrame:
    """A distorted photo's pixels looked up in the undistorted pinhole picture a model renders for it."""

    camera: Cameras
    """The camera to render, shape [1]: nerfstudio's undistorted pinhole camera, its resolution multiplied by
    :attr:`supersample`."""
    supersample: float
    """How much finer than nerfstudio's undistorted picture :attr:`camera` samples it (1 = the same pixels)."""
    rows: torch.Tensor
    """long [H, W]: row of the render that each photo pixel reads (clamped; see ``inside``)."""
    cols: torch.Tensor
    """long [H, W]: column of the render that each photo pixel reads (clamped; see ``inside``)."""
    inside: torch.Tensor
    """bool [H, W]: whether the photo pixel falls inside nerfstudio's undistorted picture."""

    def posed(self, camera: Cameras) -> DistortedFrame:
        """This lookup for another camera with the same lens (:func:`lens_key`): :attr:`camera` takes its pose."""
        render = copy.deepcopy(self.camera)
        render.camera_to_worlds = _one_camera(camera).camera_to_worlds.to(render.device)[None].clone()  # [1, 3, 4]
        return replace(self, camera=render)

    def sample(self, rendered: torch.Tensor, fill: Union[int, float]) -> torch.Tensor:
        """A render of :attr:`camera` read at every photo pixel (nearest neighbour), ``fill`` outside the picture.

        Args:
            rendered: [h, w] or [h, w, C], the size of :attr:`camera`.
            fill: Value of photo pixels that fall outside nerfstudio's undistorted picture.

        Returns:
            [H, W] or [H, W, C], ``rendered``'s dtype and device, the photo's size.
        """
        height, width = int(self.camera.height.item()), int(self.camera.width.item())
        if tuple(rendered.shape[:2]) != (height, width):
            raise ValueError(f"expected a render of {height}x{width} pixels, got {tuple(rendered.shape)}")
        rows, cols, inside = (t.to(rendered.device) for t in (self.rows, self.cols, self.inside))
        picked = rendered[rows, cols]  # [H, W] / [H, W, C]
        mask = inside.reshape(inside.shape + (1,) * (picked.dim() - 2))  # [H, W] / [H, W, 1]
        return torch.where(mask, picked, torch.full_like(picked, fill))


def distorted_frame(camera: Cameras, max_supersample: float = 2.0) -> DistortedFrame:
    """The camera to render for a distorted capture camera, and where each pixel of the original photo reads
    that render.

    The render is nerfstudio's undistorted pinhole picture (the one training sees), sampled more finely where
    that picture has fewer pixels across the photo's centre than the photo (its focal length is shorter than
    the photo's; radial distortion leaves the centre's scale unchanged), so that neighbouring photo pixels do
    not read the same rendered pixel: by the ratio of the focal lengths, at most ``max_supersample``.

    Args:
        camera: One camera (any shape of one element) with distortion coefficients
            (:func:`~semsplat_ns.data.capture_labels.has_distortion`).
        max_supersample: Bound on the render's extra resolution per axis (its memory grows with the square).

    Returns:
        The lookup; its :attr:`DistortedFrame.camera` is the camera to render.
    """
    one = _one_camera(camera).to("cpu")
    picture = undistorted_camera(one)  # nerfstudio's undistorted picture
    positions = distorted_pixel_positions(one, picture)  # [H, W, 2] in its pixels
    height, width = int(picture.height.item()), int(picture.width.item())
    x, y = torch.nan_to_num(positions, nan=-1.0).unbind(dim=-1)  # [H, W] each
    inside = torch.isfinite(positions).all(dim=-1) & (x >= 0) & (x < width) & (y >= 0) & (y < height)  # [H, W]
    ratio = max(float(one.fx.item() / picture.fx.item()), float(one.fy.item() / picture.fy.item()))
    supersample = min(max(ratio, 1.0), max(float(max_supersample), 1.0))
    render = copy.deepcopy(picture)
    if supersample > 1.0:
        render.rescale_output_resolution(supersample, scale_rounding_mode="ceil")
    render_h, render_w = int(render.height.item()), int(render.width.item())
    return DistortedFrame(
        camera=render,
        supersample=supersample,
        rows=torch.floor(y * supersample).clamp(0, render_h - 1).long(),
        cols=torch.floor(x * supersample).clamp(0, render_w - 1).long(),
        inside=inside,
    )


def lens_key(camera: Cameras) -> Tuple[float, ...]:
    """What a :class:`DistortedFrame` depends on: the camera's type, intrinsics, size, distortion and FISHEYE624
    crop radius (not its pose)."""
    one = _one_camera(camera)
    params = one.distortion_params
    values = [one.camera_type, one.fx, one.fy, one.cx, one.cy, one.width, one.height]
    radius = (one.metadata or {}).get("fisheye_crop_radius")  # FISHEYE624: the undistorted picture's size
    key = tuple(float(v.item()) for v in values) + (() if params is None else tuple(params.reshape(-1).tolist()))
    return key + ((float(radius),) if isinstance(radius, float) else ())


class DistortedFrames:
    """:func:`distorted_frame` for many views, computed once per lens (a capture's views usually share one)."""

    def __init__(self, max_supersample: float = 2.0) -> None:
        self.max_supersample = max_supersample
        self._frames: Dict[Tuple[float, ...], DistortedFrame] = {}

    def __call__(self, camera: Cameras) -> DistortedFrame:
        """The lookup of one camera (any shape of one element), posed as it is."""
        key = lens_key(camera)
        frame: Optional[DistortedFrame] = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = distorted_frame(camera, self.max_supersample)
            return frame
        return frame.posed(camera.to("cpu"))
