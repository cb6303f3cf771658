"""EWA projection of 3D Gaussians into pinhole cameras, as gsplat 1.4's ``fully_fused_projection`` does it.

- The pinhole Jacobian is evaluated at a centre whose x/y are clamped to 1.3x the field of view.
- ``eps2d`` is added to the 2D covariance (optionally with the "antialiased" opacity compensation).
- The 3-sigma radius is ``ceil(3 * sqrt(lambda_max))``; a Gaussian is culled (radius 0) when behind
  ``near_plane``, past ``far_plane``, degenerate, ``radius <= radius_clip`` or off screen.
- gsplat 1.4's packed kernel floors the radius' eigenvalue discriminant at 0.1 (0.01 unpacked);
  mirrored, so radii match in both layouts.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances ``R S S^T R^T`` from quaternions and scales.

    Args:
        quats: Rotations as quaternions (w, x, y, z), not necessarily normalised. [N, 4]
        scales: Standard deviations along the rotated axes. [N, 3]

    Returns:
        Covariance matrices. [N, 3, 3]
    """
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)  # [N] each
    rotations = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # [N, 3, 3]
    rotation_scale = rotations * scales[:, None, :]  # [N, 3, 3] = R @ diag(s)
    return rotation_scale @ rotation_scale.transpose(-1, -2)  # [N, 3, 3]


def project_gaussians(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
    packed: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Projects 3D Gaussians into pinhole cameras (EWA splatting), like gsplat's ``fully_fused_projection``.

    Args:
        means: Gaussian centres in world space. [N, 3]
        covars: 3D covariances in world space. [N, 3, 3]
        viewmats: World-to-camera transforms (OpenCV axes). [C, 4, 4]
        Ks: Pinhole intrinsics. [C, 3, 3]
        width: Image width in pixels.
        height: Image height in pixels.
        eps2d: Added to the diagonal of each 2D covariance (minimum footprint, in pixels^2).
        near_plane: Gaussians with camera depth below this are culled.
        far_plane: Gaussians with camera depth above this are culled.
        radius_clip: Gaussians whose pixel radius is at most this are culled.
        calc_compensations: Also return ``sqrt(det(cov2d) / det(cov2d + eps2d I))`` (Mip-Splatting).
        packed: Use the radius of gsplat 1.4's packed kernel, whose eigenvalue discriminant is floored
            at 0.1 instead of 0.01 (slightly larger radii for near-isotropic footprints).

    Returns:
        A tuple; entries of culled Gaussians are 0:

        - **radii**: 3-sigma pixel radius, 0 when culled. [C, N] int32
        - **means2d**: Projected centres in pixels. [C, N, 2]
        - **depths**: Camera z of the centres. [C, N]
        - **conics**: Upper triangle (xx, xy, yy) of the inverse blurred 2D covariance. [C, N, 3]
        - **compensations**: Opacity factors, or None. [C, N]
    """
    rotations = viewmats[:, :3, :3]  # [C, 3, 3]
    translations = viewmats[:, :3, 3]  # [C, 3]
    means_cam = torch.einsum("cij,nj->cni", rotations, means) + translations[:, None, :]  # [C, N, 3]
    covars_cam = torch.einsum("cij,njk,clk->cnil", rotations, covars, rotations)  # [C, N, 3, 3]
    x, y, z = means_cam.unbind(-1)  # [C, N] each
    depth_ok = (z >= near_plane) & (z <= far_plane)  # [C, N]
    # culled entries get a harmless depth so that no inf/nan reaches the gradients through torch.where
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))  # [C, N]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]  # [C, 1]
    # the Jacobian is evaluated at a centre clamped to 1.3x the field of view (as in 3DGS / gsplat)
    tan_fov_x, tan_fov_y = 0.5 * width / fx, 0.5 * height / fy  # [C, 1]
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fov_x, cx / fx + 0.3 * tan_fov_x  # [C, 1]
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fov_y, cy / fy + 0.3 * tan_fov_y  # [C, 1]
    inv_z = 1.0 / z_safe  # [C, N]
    tx = z_safe * torch.clamp(x * inv_z, min=-lim_x_neg, max=lim_x_pos)  # [C, N]
    ty = z_safe * torch.clamp(y * inv_z, min=-lim_y_neg, max=lim_y_pos)  # [C, N]
    zeros = torch.zeros_like(z)  # [C, N]
    jacobians = torch.stack(
        [fx * inv_z, zeros, -fx * tx * inv_z**2, zeros, fy * inv_z, -fy * ty * inv_z**2], dim=-1
    ).reshape(*z.shape, 2, 3)  # [C, N, 2, 3]
    covars2d = jacobians @ covars_cam @ jacobians.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * x * inv_z + cx, fy * y * inv_z + cy], dim=-1)  # [C, N, 2]

    cov_xx, cov_xy, cov_yy = covars2d[..., 0, 0], covars2d[..., 0, 1], covars2d[..., 1, 1]  # [C, N] each
    det_orig = cov_xx * cov_yy - cov_xy * covars2d[..., 1, 0]  # [C, N]
    cov_xx, cov_yy = cov_xx + eps2d, cov_yy + eps2d  # [C, N] each
    det = cov_xx * cov_yy - cov_xy * covars2d[..., 1, 0]  # [C, N]
    det_ok = det > 0  # [C, N]
    det_safe = torch.where(det_ok, det, torch.ones_like(det))  # [C, N]
    conics = torch.stack([cov_yy / det_safe, -cov_xy / det_safe, cov_xx / det_safe], dim=-1)  # [C, N, 3]

    compensations = None
    if calc_compensations:
        ratio = det_orig / det_safe  # [C, N]
        ratio_ok = ratio > 0  # [C, N]
        compensations = torch.where(
            ratio_ok, torch.sqrt(torch.where(ratio_ok, ratio, torch.ones_like(ratio))), torch.zeros_like(ratio)
        )  # [C, N]

    with torch.no_grad():
        half_trace = 0.5 * (cov_xx + cov_yy)  # [C, N]
        discriminant_floor = 0.1 if packed else 0.01
        lambda_max = half_trace + torch.sqrt(torch.clamp_min(half_trace * half_trace - det, discriminant_floor))
        radii_float = torch.ceil(3.0 * torch.sqrt(lambda_max))  # [C, N]
        onscreen = (
            (means2d[..., 0] + radii_float > 0)
            & (means2d[..., 0] - radii_float < width)
            & (means2d[..., 1] + radii_float > 0)
            & (means2d[..., 1] - radii_float < height)
        )  # [C, N]
        valid = depth_ok & det_ok & (radii_float > radius_clip) & onscreen  # [C, N]
        radii = torch.where(valid, radii_float, torch.zeros_like(radii_float)).to(torch.int32)  # [C, N]

    means2d = torch.where(valid[..., None], means2d, torch.zeros_like(means2d))  # [C, N, 2]
    depths = torch.where(valid, z, torch.zeros_like(z))  # [C, N]
    conics = torch.where(valid[..., None], conics, torch.zeros_like(conics))  # [C, N, 3]
    if compensations is not None:
        compensations = torch.where(valid, compensations, torch.zeros_like(compensations))  # [C, N]
    return radii, means2d, depths, conics, compensations
