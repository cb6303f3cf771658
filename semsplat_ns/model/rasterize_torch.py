"""Pure-PyTorch 3D Gaussian rasterizer with the contract of ``gsplat.rasterization`` (gsplat 1.4.0).

gsplat is CUDA-only; this module lets splatfacto-style models train and render on a CPU (tests, CI,
laptops) with the same inputs, outputs and ``info`` dict. It follows gsplat's CUDA kernels
semantically, so images agree with gsplat to float rounding:

- EWA projection with the pinhole Jacobian, whose x/y are clamped to 1.3x the field of view;
  ``eps2d`` added to the 2D covariance (optionally with the "antialiased" opacity compensation);
  3-sigma radius ``ceil(3 * sqrt(lambda_max))``; culled (radius 0) when behind ``near_plane``, past
  ``far_plane``, degenerate, ``radius <= radius_clip`` or off screen.
- A Gaussian reaches exactly the pixels of the tiles (``tile_size``, 16) its radius box touches
  (gsplat's tile intersection), in front-to-back depth order (ties: lower Gaussian index first).
- gsplat 1.4's packed kernel floors the radius' eigenvalue discriminant at 0.1 (0.01 unpacked);
  mirrored, so radii match in both layouts.
- Per pixel: ``alpha = min(0.999, opacity * exp(-sigma))``; skipped when ``sigma < 0`` or
  ``alpha < 1/255``; compositing stops before the Gaussian that would drop transmittance to
  ``<= 1e-4``.

Instead of tiles and threads it works on a flat list of (Gaussian, pixel) intersections: each
Gaussian is expanded row by row over the ellipse where its alpha can reach 1/255 (cut to its
tiles), the list is sorted by (pixel, depth) and transmittance is a segmented cumulative sum of
``log(1 - alpha)``. Gaussians are taken in depth-ordered passes so that pixels already opaque are
not expanded again. Everything after the (gradient-free) selection of intersections is ordinary
autograd, so gradients reach means, quats, scales, opacities, colours, backgrounds and viewmats.
"""

from __future__ import annotations

import math
import weakref
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import Literal

ALPHA_MAX = 0.999
"""Upper bound of a Gaussian's alpha at a pixel (gsplat 1.4 ``rasterize_to_pixels``)."""
ALPHA_MIN = 1.0 / 255.0
"""Intersections with a smaller alpha are skipped."""
TRANSMITTANCE_MIN = 1e-4
"""Compositing stops before a Gaussian that would leave at most this transmittance."""
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
"""Render modes of ``gsplat.rasterization``."""


class RasterizationInputError(ValueError):
    """An argument of :func:`rasterization_torch` has the wrong shape, value or is unsupported."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RasterizationInputError(f"rasterization_torch: {message}")


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


def spherical_harmonics_torch(
    degrees_to_use: int,
    dirs: Tensor,  # [..., 3]
    coeffs: Tensor,  # [..., K, 3]
    masks: Optional[Tensor] = None,  # [...]
) -> Tensor:
    """Evaluates real spherical harmonics like ``gsplat.spherical_harmonics`` (Inria 3DGS convention).

    Bases are in the order of 3DGS' ``eval_sh`` (degree l, then m = -l..l) with its signs; the
    direction is normalised first. No +0.5 offset is applied (callers add it, as gsplat does).

    Args:
        degrees_to_use: Highest SH degree evaluated, 0 to 4; needs ``(degrees_to_use + 1)**2 <= K``.
        dirs: View directions, not necessarily normalised. [..., 3]
        coeffs: SH coefficients per RGB channel. [..., K, 3]
        masks: Optional; where False the result is 0 (as in gsplat). [...]

    Returns:
        Colours. [..., 3]
    """
    _require(0 <= degrees_to_use <= 4, f"sh degree must be 0..4, got {degrees_to_use}")
    _require(
        coeffs.dim() >= 2 and coeffs.shape[-1] == 3 and (degrees_to_use + 1) ** 2 <= coeffs.shape[-2],
        f"SH coefficients must be [..., K, 3] with K >= {(degrees_to_use + 1) ** 2}, got {tuple(coeffs.shape)}",
    )
    _require(
        dirs.shape[-1] == 3 and dirs.shape[:-1] == coeffs.shape[:-2],
        f"dirs must be [..., 3] matching coeffs {tuple(coeffs.shape)}, got {tuple(dirs.shape)}",
    )
    bases = [torch.full_like(dirs[..., 0], 0.28209479177387814)]  # [...] per basis
    if degrees_to_use >= 1:
        x, y, z = F.normalize(dirs, dim=-1).unbind(-1)  # [...] each
        bases += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
        if degrees_to_use >= 2:
            xx, yy, zz = x * x, y * y, z * z  # [...] each
            bases += [
                1.0925484305920792 * x * y,
                -1.0925484305920792 * y * z,
                0.31539156525252005 * (2 * zz - xx - yy),
                -1.0925484305920792 * x * z,
                0.5462742152960396 * (xx - yy),
            ]
            if degrees_to_use >= 3:
                bases += [
                    -0.5900435899266435 * y * (3 * xx - yy),
                    2.890611442640554 * x * y * z,
                    -0.4570457994644658 * y * (4 * zz - xx - yy),
                    0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
                    -0.4570457994644658 * x * (4 * zz - xx - yy),
                    1.445305721320277 * z * (xx - yy),
                    -0.5900435899266435 * x * (xx - 3 * yy),
                ]
                if degrees_to_use >= 4:
                    bases += [
                        2.5033429417967046 * x * y * (xx - yy),
                        -1.7701307697799304 * y * z * (3 * xx - yy),
                        0.9461746957575601 * x * y * (7 * zz - 1),
                        -0.6690465435572892 * y * z * (7 * zz - 3),
                        0.10578554691520431 * (35 * zz * zz - 30 * zz + 3),
                        -0.6690465435572892 * x * z * (7 * zz - 3),
                        0.47308734787878004 * (xx - yy) * (7 * zz - 1),
                        -1.7701307697799304 * x * z * (xx - 3 * yy),
                        0.6258357354491761 * (xx * (xx - 3 * yy) - yy * (3 * xx - yy)),
                    ]
    basis_values = torch.stack(bases, dim=-1)  # [..., B]
    colors = (basis_values[..., None] * coeffs[..., : len(bases), :]).sum(dim=-2)  # [..., 3]
    if masks is not None:
        colors = torch.where(masks[..., None], colors, torch.zeros_like(colors))  # [..., 3]
    return colors


class _GatherMeans2d(torch.autograd.Function):
    """``source[index]`` whose backward can also store the AbsGS gradient on the ``info['means2d']`` tensor.

    ``absgrad`` is the sum over intersections (pixels) of the absolute per-pixel gradient, like
    gsplat's ``means2d.absgrad``.
    """

    @staticmethod
    def forward(ctx, source: Tensor, index: Tensor, holder_ref, absgrad: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.num_rows = source.shape[0]
        ctx.holder_ref = holder_ref  # a weakref: a strong one would form a cycle holder -> graph -> holder
        ctx.absgrad = absgrad
        return source[index]  # [M, 2]

    @staticmethod
    def backward(ctx, grad_rows: Tensor):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        grad_source = grad_rows.new_zeros(ctx.num_rows, 2).index_add_(0, index, grad_rows)  # [S, 2]
        holder = ctx.holder_ref() if ctx.absgrad else None
        if holder is not None:
            absgrad = grad_rows.new_zeros(ctx.num_rows, 2).index_add_(0, index, grad_rows.abs())  # [S, 2]
            holder.absgrad = absgrad.reshape(holder.shape)
        return grad_source, None, None, None


def _take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` along dim 0 (index_select: much faster than advanced indexing on CPU)."""
    return torch.index_select(values, 0, index)


def _expand_ranges(starts: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """For ranges [start, start + count): the owning range of every element and its value. [total] each"""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)  # [T]
    first = torch.cumsum(counts, 0) - counts  # [R]
    values = _take(starts - first, owner) + torch.arange(owner.numel(), device=counts.device)  # [T]
    return owner, values


def _candidate_pixels(
    means2d: Tensor,  # [E, 2]
    conics: Tensor,  # [E, 3]
    opacities: Tensor,  # [E]
    radii: Tensor,  # [E]
    width: int,
    height: int,
    tile_size: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Pixels each entry may reach: inside the tiles its radius box touches and where alpha can be >= 1/255.

    alpha >= 1/255 needs sigma <= log(255 * opacity), an ellipse; it is enumerated row by row with a
    one-pixel margin (the exact test follows), which avoids most of the tile's pixels.

    Returns the entry [M0], x [M0] and y [M0] of every candidate, grouped by entry in entry order.
    """
    dtype = means2d.dtype
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    radius_tiles = radii.to(dtype) / tile_size  # [E]
    centre_x, centre_y = means2d[:, 0], means2d[:, 1]  # [E] each
    # gsplat's tile box; pixels outside it are never evaluated, even when alpha would pass
    tile_x0 = torch.floor(centre_x / tile_size - radius_tiles).clamp(0, tiles_x) * tile_size  # [E]
    tile_x1 = (torch.ceil(centre_x / tile_size + radius_tiles).clamp(0, tiles_x) * tile_size).clamp(max=width)
    tile_y0 = torch.floor(centre_y / tile_size - radius_tiles).clamp(0, tiles_y) * tile_size  # [E]
    tile_y1 = (torch.ceil(centre_y / tile_size + radius_tiles).clamp(0, tiles_y) * tile_size).clamp(max=height)

    conic_xx, conic_xy, conic_yy = conics.unbind(-1)  # [E] each
    sigma_max = torch.log(torch.clamp_min(opacities * 255.0, 1.0))  # [E]
    det = torch.clamp_min(conic_xx * conic_yy - conic_xy**2, 1e-30)  # [E]
    half_y = torch.sqrt(2 * sigma_max * conic_xx / det)  # [E] ellipse half-height
    row_y0 = torch.maximum(tile_y0, torch.ceil(centre_y - half_y - 0.5) - 1)  # [E]
    row_y1 = torch.minimum(tile_y1, torch.floor(centre_y + half_y - 0.5) + 2)  # [E] exclusive
    row_entry, row_y = _expand_ranges(row_y0.long(), torch.clamp_min(row_y1 - row_y0, 0).long())  # [R] each

    # on row y the ellipse 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= s spans dx in (-b dy -+ sqrt(disc)) / a
    row_centre_x = _take(centre_x, row_entry)  # [R]
    delta_y = _take(centre_y, row_entry) - (row_y.to(dtype) + 0.5)  # [R]
    conic_xx, conic_xy, conic_yy = _take(conic_xx, row_entry), _take(conic_xy, row_entry), _take(conic_yy, row_entry)
    disc = delta_y**2 * (conic_xy**2 - conic_xx * conic_yy) + 2 * conic_xx * _take(sigma_max, row_entry)  # [R]
    root = torch.sqrt(torch.clamp_min(disc, 0))  # [R]
    # pixel centre x + 0.5 = mean_x - dx
    span_x0 = row_centre_x - (-conic_xy * delta_y + root) / conic_xx  # [R]
    span_x1 = row_centre_x - (-conic_xy * delta_y - root) / conic_xx  # [R]
    pixel_x0 = torch.maximum(_take(tile_x0, row_entry), torch.ceil(span_x0 - 0.5) - 1)  # [R]
    pixel_x1 = torch.minimum(_take(tile_x1, row_entry), torch.floor(span_x1 - 0.5) + 2)  # [R] exclusive
    # rows that miss the ellipse (disc < 0, only the margin rows) keep a 3-pixel span: rounding-safe and cheap
    row_width = torch.clamp_min(pixel_x1 - pixel_x0, 0)  # [R]
    pixel_row, pixel_x = _expand_ranges(pixel_x0.long(), row_width.long())  # [M0] each
    return _take(row_entry, pixel_row), pixel_x, _take(row_y, pixel_row)


@torch.no_grad()
def _select_intersections(
    means2d: Tensor,  # [E, 2]
    conics: Tensor,  # [E, 3]
    opacities: Tensor,  # [E]
    radii: Tensor,  # [E]
    camera_ids: Tensor,  # [E]
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int,
    entries_per_pass: int = 512,
) -> Tuple[Tensor, Tensor]:
    """The (entry, pixel) pairs that contribute to the image, sorted by pixel then by entry.

    Entries must come in front-to-back order. They are taken in passes of ``entries_per_pass``;
    pixels that a pass terminates (transmittance would drop to <= 1e-4) are skipped by later
    passes, which is what keeps dense, opaque scenes cheap.

    Returns entry indices [M] and flat pixel indices ``(camera * height + y) * width + x`` [M].
    """
    num_entries = means2d.shape[0]
    num_pixels = n_cameras * height * width
    log_transmit_pixels = torch.zeros(num_pixels, dtype=torch.float64, device=means2d.device)  # [C*H*W]
    terminated = torch.zeros(num_pixels, dtype=torch.bool, device=means2d.device)  # [C*H*W]
    selected_entries, selected_pixels = [], []
    for first in range(0, num_entries, entries_per_pass):
        span = slice(first, first + entries_per_pass)
        entry_ids, pixel_x, pixel_y = _candidate_pixels(
            means2d[span], conics[span], opacities[span], radii[span], width, height, tile_size
        )  # [M0] each
        entry_ids = entry_ids + first
        pixel_ids = (_take(camera_ids, entry_ids) * height + pixel_y) * width + pixel_x  # [M0]
        open_ids = torch.nonzero(~_take(terminated, pixel_ids)).squeeze(1)  # [M1]
        entry_ids, pixel_x, pixel_y, pixel_ids = (
            _take(entry_ids, open_ids),
            _take(pixel_x, open_ids),
            _take(pixel_y, open_ids),
            _take(pixel_ids, open_ids),
        )  # [M1] each
        alphas, sigmas = _alpha_at(
            _take(means2d, entry_ids), _take(conics, entry_ids), _take(opacities, entry_ids), pixel_x, pixel_y
        )  # [M1] each
        kept_ids = torch.nonzero((sigmas >= 0) & (alphas >= ALPHA_MIN)).squeeze(1)  # [M2]
        entry_ids, alphas, pixel_ids = _take(entry_ids, kept_ids), _take(alphas, kept_ids), _take(pixel_ids, kept_ids)

        # stable: within a pixel, entries stay front to back
        pixel_ids, order = torch.sort(pixel_ids, stable=True)  # [M2]
        entry_ids, alphas = _take(entry_ids, order), _take(alphas, order)  # [M2]
        log_transmit = torch.log1p(-alphas.double())  # [M2]
        log_transmit_after = _take(log_transmit_pixels, pixel_ids) + _segmented_cumsum(
            log_transmit, _segment_starts(pixel_ids)
        )  # [M2]
        # transmittance falls monotonically, so this keeps a prefix of every pixel's list
        lit = torch.exp(log_transmit_after) > TRANSMITTANCE_MIN  # [M2]
        terminated[pixel_ids[~lit]] = True
        lit_ids = torch.nonzero(lit).squeeze(1)  # [M3]
        pixel_ids = _take(pixel_ids, lit_ids)  # [M3]
        log_transmit_pixels.index_add_(0, pixel_ids, _take(log_transmit, lit_ids))
        selected_entries.append(_take(entry_ids, lit_ids))
        selected_pixels.append(pixel_ids)
    if not selected_entries:
        empty = torch.zeros(0, dtype=torch.long, device=means2d.device)
        return empty, empty.clone()
    # passes are in depth order, so a stable sort by pixel keeps every pixel's list front to back
    pixel_ids, order = torch.sort(torch.cat(selected_pixels), stable=True)  # [M]
    return _take(torch.cat(selected_entries), order), pixel_ids


def _alpha_at(
    means2d: Tensor,  # [M, 2]
    conics: Tensor,  # [M, 3]
    opacities: Tensor,  # [M]
    pixel_x: Tensor,  # [M]
    pixel_y: Tensor,  # [M]
) -> Tuple[Tensor, Tensor]:
    """Alpha and Mahalanobis half-distance of each Gaussian at a pixel centre (x + 0.5, y + 0.5)."""
    delta_x = means2d[:, 0] - (pixel_x.to(means2d.dtype) + 0.5)  # [M]
    delta_y = means2d[:, 1] - (pixel_y.to(means2d.dtype) + 0.5)  # [M]
    sigmas = 0.5 * (conics[:, 0] * delta_x * delta_x + conics[:, 2] * delta_y * delta_y) + (
        conics[:, 1] * delta_x * delta_y
    )  # [M]
    alphas = torch.clamp(opacities * torch.exp(-sigmas), max=ALPHA_MAX)  # [M]
    return alphas, sigmas


def _segment_starts(sorted_keys: Tensor) -> Tensor:
    """Position of the first element of each element's run of equal keys. [M]"""
    is_start = torch.ones_like(sorted_keys, dtype=torch.bool)  # [M]
    is_start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    positions = torch.arange(len(sorted_keys), device=sorted_keys.device)  # [M]
    return torch.cummax(torch.where(is_start, positions, torch.zeros_like(positions)), 0).values  # [M]


def _segmented_cumsum(values: Tensor, segment_start: Tensor) -> Tensor:
    """Inclusive cumulative sum restarting at every segment (differentiable). [M]"""
    totals = torch.cumsum(values, 0)  # [M]
    before_segment = _take(totals - values, segment_start)  # [M]
    return totals - before_segment


def _composite(
    means2d_holder: Tensor,  # [C, N, 2] or [nnz, 2]
    conics: Tensor,  # [S, 3]
    opacities: Tensor,  # [S]
    colors: Tensor,  # [E, D]
    entry_source_ids: Tensor,  # [E]
    entry_camera_ids: Tensor,  # [E]
    entry_radii: Tensor,  # [E]
    entry_depths: Tensor,  # [E]
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int,
    backgrounds: Optional[Tensor],  # [C, D]
    absgrad: bool,
) -> Tuple[Tensor, Tensor]:
    """Alpha-composites projected Gaussians front to back (gsplat's ``rasterize_to_pixels`` on a flat list).

    Args:
        means2d_holder: ``info['means2d']``; ``.absgrad`` is set on it in the backward pass. [C, N, 2] or [nnz, 2]
        conics: Inverse 2D covariances (xx, xy, yy), flattened like ``means2d_holder``. [S, 3]
        opacities: Opacities (after compensation), flattened like ``means2d_holder``. [S]
        colors: Colour of each entry. [E, D]
        entry_source_ids: Row in the flattened ``means2d_holder``/``conics``/``opacities`` of each visible entry. [E]
        entry_camera_ids: Camera of each entry. [E]
        entry_radii: Pixel radius of each entry (> 0). [E]
        entry_depths: Camera depth of each entry; sets the compositing order. [E]
        n_cameras: Number of images C.
        width: Image width W.
        height: Image height H.
        tile_size: gsplat's tile size; a Gaussian reaches the pixels of the tiles its radius box touches.
        backgrounds: Optional background colour per camera, weighted by the final transmittance. [C, D]
        absgrad: Store the AbsGS gradient on ``means2d_holder`` in the backward pass.

    Returns:
        Colours [C, H, W, D] and alphas [C, H, W, 1].
    """
    num_channels = colors.shape[-1]
    dtype, device = colors.dtype, colors.device
    num_pixels = n_cameras * height * width
    means2d_flat = means2d_holder.reshape(-1, 2)  # [S, 2]

    # front to back; ties keep the lower (camera, Gaussian) index first, like gsplat's stable radix sort
    depth_order = torch.sort(entry_depths.detach(), stable=True).indices  # [E]
    entry_source_ids, entry_camera_ids = entry_source_ids[depth_order], entry_camera_ids[depth_order]  # [E]
    colors = colors[depth_order]  # [E, D]
    entry_ids, pixel_ids = _select_intersections(
        means2d_flat.detach()[entry_source_ids],
        conics.detach()[entry_source_ids],
        opacities.detach()[entry_source_ids],
        entry_radii[depth_order],
        entry_camera_ids,
        n_cameras,
        width,
        height,
        tile_size,
    )  # [M] each

    source_ids = _take(entry_source_ids, entry_ids)  # [M]
    means2d_hits = _GatherMeans2d.apply(means2d_flat, source_ids, weakref.ref(means2d_holder), absgrad)  # [M, 2]
    pixel_x, pixel_y = pixel_ids % width, (pixel_ids // width) % height  # [M] each
    alphas, _ = _alpha_at(means2d_hits, conics[source_ids], _take(opacities, source_ids), pixel_x, pixel_y)  # [M]
    # transmittance in float64: the running sum spans all pixels and would lose float32 precision
    log_transmit = torch.log1p(-alphas.double())  # [M]
    transmit_before = torch.exp(_segmented_cumsum(log_transmit, _segment_starts(pixel_ids)) - log_transmit)  # [M]
    weights = alphas * transmit_before.to(dtype)  # [M]

    render_colors = torch.zeros(num_pixels, num_channels, dtype=dtype, device=device).index_add(
        0, pixel_ids, weights[:, None] * colors[entry_ids]
    )  # [C*H*W, D]
    log_transmit_pixels = torch.zeros(num_pixels, dtype=torch.float64, device=device).index_add(
        0, pixel_ids, log_transmit
    )  # [C*H*W]
    transmit_final = torch.exp(log_transmit_pixels).to(dtype).reshape(n_cameras, height * width, 1)  # [C, H*W, 1]
    render_colors = render_colors.reshape(n_cameras, height * width, num_channels)  # [C, H*W, D]
    if backgrounds is not None:
        render_colors = render_colors + transmit_final * backgrounds[:, None, :]  # [C, H*W, D]
    render_alphas = 1.0 - transmit_final  # [C, H*W, 1]
    return (
        render_colors.reshape(n_cameras, height, width, num_channels),
        render_alphas.reshape(n_cameras, height, width, 1),
    )


def rasterization_torch(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterizes 3D Gaussians (N) into C images in pure PyTorch, with ``gsplat.rasterization``'s contract.

    Differentiable through autograd w.r.t. means, quats, scales (or covars), opacities, colors,
    backgrounds and viewmats. After ``backward``, ``info['means2d'].grad`` (when ``retain_grad()``
    was called) and, with ``absgrad=True``, ``info['means2d'].absgrad`` are filled as gsplat does,
    so gsplat's ``DefaultStrategy`` works unchanged.

    Args:
        means: Gaussian centres. [N, 3]
        quats: Rotations as quaternions (w, x, y, z), not necessarily normalised. [N, 4]
        scales: Standard deviations along the rotated axes. [N, 3]
        opacities: Opacities in [0, 1]. [N]
        colors: Post-activation features with any D, [N, D] or [C, N, D]; or, with ``sh_degree``,
            SH coefficients [N, K, 3] or [C, N, K, 3].
        viewmats: World-to-camera transforms (OpenCV axes). [C, 4, 4]
        Ks: Pinhole intrinsics. [C, 3, 3]
        width: Image width in pixels.
        height: Image height in pixels.
        near_plane: Gaussians closer than this (camera z) are culled.
        far_plane: Gaussians farther than this are culled.
        radius_clip: Gaussians whose pixel radius is at most this are culled.
        eps2d: Added to the diagonal of each projected 2D covariance (pixels^2).
        sh_degree: SH degree to evaluate (0 to 4), or None when ``colors`` are features. View
            directions are ``mean - camera centre``; colours are ``max(sh + 0.5, 0)``.
        packed: Whether ``info`` holds packed [nnz, ...] tensors (with camera_ids/gaussian_ids) or
            dense [C, N, ...] ones. As in gsplat 1.4, packed radii can be a pixel larger (see
            :func:`project_gaussians`), which may add a Gaussian's faint tail at a tile border;
            otherwise the images are identical.
        tile_size: gsplat's tile size; a Gaussian reaches the pixels of the tiles its radius box touches.
        backgrounds: Background colour per camera. [C, D]
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D" or "RGB+ED";
            depth is appended as the last channel.
        sparse_grad: Must be False (COO gradients are not produced).
        absgrad: Compute ``info['means2d'].absgrad`` (AbsGS) in the backward pass.
        rasterize_mode: "classic", or "antialiased" to scale opacities by the Mip-Splatting compensation.
        channel_chunk: Accepted for compatibility; all channels are composited in one pass.
        distributed: Must be False.
        camera_model: Must be "pinhole".
        covars: Optional 3D covariances that replace quats and scales. [N, 3, 3]

    Returns:
        A tuple:

        **render_colors**: [C, height, width, X], X = D, 1 or D + 1 depending on ``render_mode``.

        **render_alphas**: [C, height, width, 1].

        **info**: "camera_ids", "gaussian_ids", "radii", "means2d", "depths", "conics",
        "opacities", "width", "height", "tile_size", "n_cameras" (plus "tile_width",
        "tile_height"), shaped as gsplat 1.4 returns them.
    """
    _require(camera_model == "pinhole", f"camera_model {camera_model!r} is not supported on CPU (only 'pinhole')")
    _require(not distributed, "distributed rendering is not supported on CPU")
    _require(not sparse_grad, "sparse_grad=True is not supported on CPU (gradients are dense)")
    _require(render_mode in RENDER_MODES, f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    _require(
        rasterize_mode in ("classic", "antialiased"),
        f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}",
    )
    _require(int(width) > 0 and int(height) > 0, f"image size must be positive, got {width}x{height}")
    _require(int(tile_size) > 0, f"tile_size must be positive, got {tile_size}")
    _require(means.dim() == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}")
    num_gaussians = means.shape[0]
    _require(
        viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4), f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}"
    )
    num_cameras = viewmats.shape[0]
    _require(Ks.shape == (num_cameras, 3, 3), f"Ks must be [{num_cameras}, 3, 3], got {tuple(Ks.shape)}")
    if covars is None:
        _require(quats.shape == (num_gaussians, 4), f"quats must be [{num_gaussians}, 4], got {tuple(quats.shape)}")
        _require(scales.shape == (num_gaussians, 3), f"scales must be [{num_gaussians}, 3], got {tuple(scales.shape)}")
    else:
        _require(
            covars.shape == (num_gaussians, 3, 3), f"covars must be [{num_gaussians}, 3, 3], got {tuple(covars.shape)}"
        )
    _require(opacities.shape == (num_gaussians,), f"opacities must be [{num_gaussians}], got {tuple(opacities.shape)}")
    if sh_degree is None:
        _require(
            (colors.dim() == 2 and colors.shape[0] == num_gaussians)
            or (colors.dim() == 3 and colors.shape[:2] == (num_cameras, num_gaussians)),
            f"colors must be [N, D] or [C, N, D] with N={num_gaussians}, C={num_cameras}, got {tuple(colors.shape)}",
        )
    else:
        _require(
            (colors.dim() == 3 and colors.shape[0] == num_gaussians and colors.shape[2] == 3)
            or (colors.dim() == 4 and colors.shape[:2] == (num_cameras, num_gaussians) and colors.shape[3] == 3),
            f"SH colors must be [N, K, 3] or [C, N, K, 3] with N={num_gaussians}, got {tuple(colors.shape)}",
        )
        _require(
            0 <= sh_degree <= 4 and (sh_degree + 1) ** 2 <= colors.shape[-2],
            f"sh_degree {sh_degree} needs 0..4 and K >= {(sh_degree + 1) ** 2} SH coefficients, "
            f"got K={colors.shape[-2]}",
        )
    num_channels = colors.shape[-1]
    if backgrounds is not None:
        _require(
            backgrounds.shape == (num_cameras, num_channels),
            f"backgrounds must be [{num_cameras}, {num_channels}], got {tuple(backgrounds.shape)}",
        )

    dtype = means.dtype
    viewmats, Ks = viewmats.to(dtype), Ks.to(dtype)  # [C, 4, 4], [C, 3, 3]
    if covars is None:
        covars = quat_scale_to_covar(quats, scales)  # [N, 3, 3]
    radii, means2d, depths, conics, compensations = project_gaussians(
        means,
        covars,
        viewmats,
        Ks,
        int(width),
        int(height),
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        calc_compensations=rasterize_mode == "antialiased",
        packed=packed,
    )  # [C, N] / [C, N, 2] / [C, N] / [C, N, 3] / [C, N]
    opacities_cn = opacities[None, :].expand(num_cameras, -1)  # [C, N]
    if compensations is not None:
        opacities_cn = opacities_cn * compensations  # [C, N]

    camera_ids, gaussian_ids = torch.nonzero(radii > 0, as_tuple=True)  # [E] each, camera-major like gsplat
    if packed:
        # packed info tensors are selected here so that the rasterizer reads them (and their .grad is filled)
        means2d, depths, conics = (
            means2d[camera_ids, gaussian_ids],
            depths[camera_ids, gaussian_ids],
            conics[camera_ids, gaussian_ids],
        )  # [E, 2], [E], [E, 3]
        radii, opacities_info = radii[camera_ids, gaussian_ids], opacities_cn[camera_ids, gaussian_ids]  # [E], [E]
        entry_source_ids = torch.arange(len(camera_ids), device=means.device)  # [E]
    else:
        opacities_info = opacities_cn
        entry_source_ids = camera_ids * num_gaussians + gaussian_ids  # [E]
    depths_flat = depths.reshape(-1)  # [S]

    # one colour row per visible (camera, Gaussian) entry
    if sh_degree is None:
        entry_colors = colors[gaussian_ids] if colors.dim() == 2 else colors[camera_ids, gaussian_ids]  # [E, D]
    else:
        camera_centres = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[gaussian_ids] - camera_centres[camera_ids]  # [E, 3]
        coeffs = colors[gaussian_ids] if colors.dim() == 3 else colors[camera_ids, gaussian_ids]  # [E, K, 3]
        entry_colors = torch.clamp_min(spherical_harmonics_torch(sh_degree, dirs, coeffs) + 0.5, 0.0)  # [E, 3]
    entry_depths = depths_flat[entry_source_ids]  # [E]
    if render_mode in ("RGB+D", "RGB+ED"):
        entry_colors = torch.cat([entry_colors, entry_depths[:, None]], dim=-1)  # [E, D + 1]
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(num_cameras, 1)], dim=-1)  # [C, D + 1]
    elif render_mode in ("D", "ED"):
        entry_colors = entry_depths[:, None]  # [E, 1]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(num_cameras, 1)  # [C, 1]

    info = {
        "camera_ids": camera_ids if packed else None,
        "gaussian_ids": gaussian_ids if packed else None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities_info,
        "tile_width": math.ceil(width / float(tile_size)),
        "tile_height": math.ceil(height / float(tile_size)),
        "width": int(width),
        "height": int(height),
        "tile_size": int(tile_size),
        "n_cameras": num_cameras,
    }
    render_colors, render_alphas = _composite(
        means2d,
        conics.reshape(-1, 3),
        opacities_info.reshape(-1),
        entry_colors,
        entry_source_ids,
        camera_ids,
        radii.reshape(-1)[entry_source_ids],
        entry_depths,
        num_cameras,
        int(width),
        int(height),
        int(tile_size),
        backgrounds,
        absgrad,
    )  # [C, H, W, X], [C, H, W, 1]
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )  # [C, H, W, X]
    return render_colors, render_alphas, info
