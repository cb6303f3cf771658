"""``rasterization_torch``: ``gsplat.rasterization`` (gsplat 1.4.0) in pure PyTorch, for CPUs.

The function states its contract (shapes and supported options, each refused with one
:class:`~.errors.RasterizationInputError`), then runs the three stages of gsplat's pipeline:
:func:`~.projection.project_gaussians` (EWA projection and culling), one colour row per visible
(camera, Gaussian) entry (features, or :func:`~.spherical_harmonics.spherical_harmonics_torch`), and
:func:`~.compositing.composite` (tile intersection and front-to-back alpha blending). The ``info`` dict
is gsplat's, so gsplat's ``DefaultStrategy`` works unchanged.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor
from typing_extensions import Literal

from semsplat_ns.model.torch_rasterizer.compositing import composite
from semsplat_ns.model.torch_rasterizer.errors import require
from semsplat_ns.model.torch_rasterizer.projection import project_gaussians, quat_scale_to_covar
from semsplat_ns.model.torch_rasterizer.spherical_harmonics import spherical_harmonics_torch

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
"""Render modes of ``gsplat.rasterization``."""


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
            :func:`~.projection.project_gaussians`), which may add a Gaussian's faint tail at a tile border;
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
    # the contract (gsplat asserts it; here each breach is one RasterizationInputError)
    require(camera_model == "pinhole", f"camera_model {camera_model!r} is not supported on CPU (only 'pinhole')")
    require(not distributed, "distributed rendering is not supported on CPU")
    require(not sparse_grad, "sparse_grad=True is not supported on CPU (gradients are dense)")
    require(render_mode in RENDER_MODES, f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    require(
        rasterize_mode in ("classic", "antialiased"),
        f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}",
    )
    require(int(width) > 0 and int(height) > 0, f"image size must be positive, got {width}x{height}")
    require(int(tile_size) > 0, f"tile_size must be positive, got {tile_size}")
    require(means.dim() == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}")
    num_gaussians = means.shape[0]
    require(
        viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4), f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}"
    )
    num_cameras = viewmats.shape[0]
    require(Ks.shape == (num_cameras, 3, 3), f"Ks must be [{num_cameras}, 3, 3], got {tuple(Ks.shape)}")
    if covars is None:
        require(quats.shape == (num_gaussians, 4), f"quats must be [{num_gaussians}, 4], got {tuple(quats.shape)}")
        require(scales.shape == (num_gaussians, 3), f"scales must be [{num_gaussians}, 3], got {tuple(scales.shape)}")
    else:
        require(
            covars.shape == (num_gaussians, 3, 3), f"covars must be [{num_gaussians}, 3, 3], got {tuple(covars.shape)}"
        )
    require(opacities.shape == (num_gaussians,), f"opacities must be [{num_gaussians}], got {tuple(opacities.shape)}")
    if sh_degree is None:
        require(
            (colors.dim() == 2 and colors.shape[0] == num_gaussians)
            or (colors.dim() == 3 and colors.shape[:2] == (num_cameras, num_gaussians)),
            f"colors must be [N, D] or [C, N, D] with N={num_gaussians}, C={num_cameras}, got {tuple(colors.shape)}",
        )
    else:
        require(
            (colors.dim() == 3 and colors.shape[0] == num_gaussians and colors.shape[2] == 3)
            or (colors.dim() == 4 and colors.shape[:2] == (num_cameras, num_gaussians) and colors.shape[3] == 3),
            f"SH colors must be [N, K, 3] or [C, N, K, 3] with N={num_gaussians}, got {tuple(colors.shape)}",
        )
        require(
            0 <= sh_degree <= 4 and (sh_degree + 1) ** 2 <= colors.shape[-2],
            f"sh_degree {sh_degree} needs 0..4 and K >= {(sh_degree + 1) ** 2} SH coefficients, "
            f"got K={colors.shape[-2]}",
        )
    num_channels = colors.shape[-1]
    if backgrounds is not None:
        require(
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
    entry_depths = depths_flat[entry_source_ids]  # [E]
    entry_colors, backgrounds = _entry_colors(
        colors, means, viewmats, camera_ids, gaussian_ids, entry_depths, sh_degree, render_mode, backgrounds
    )  # [E, X], [C, X]

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
    render_colors, render_alphas = composite(
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


def _entry_colors(
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    means: Tensor,  # [N, 3]
    viewmats: Tensor,  # [C, 4, 4]
    camera_ids: Tensor,  # [E]
    gaussian_ids: Tensor,  # [E]
    entry_depths: Tensor,  # [E]
    sh_degree: Optional[int],
    render_mode: str,
    backgrounds: Optional[Tensor],  # [C, D]
) -> Tuple[Tensor, Optional[Tensor]]:
    """The colour row of every visible (camera, Gaussian) entry, with the depth channel that ``render_mode`` asks for.

    Args:
        colors: Features [N, D] / [C, N, D], or SH coefficients [N, K, 3] / [C, N, K, 3] with ``sh_degree``.
        means: Gaussian centres; with SH the view direction is ``mean - camera centre``. [N, 3]
        viewmats: World-to-camera transforms. [C, 4, 4]
        camera_ids: Camera of each entry. [E]
        gaussian_ids: Gaussian of each entry. [E]
        entry_depths: Camera depth of each entry. [E]
        sh_degree: SH degree to evaluate, or None when ``colors`` are features.
        render_mode: One of :data:`RENDER_MODES`; "D"/"ED" render depth only, "RGB+D"/"RGB+ED" append it.
        backgrounds: Background per camera, extended like the colours (depth background 0). [C, D]

    Returns:
        Entry colours [E, X] (X = D, 1 or D + 1; SH colours are ``max(sh + 0.5, 0)``) and the backgrounds
        [C, X] (None when none were given).
    """
    num_cameras = viewmats.shape[0]
    if sh_degree is None:
        entry_colors = colors[gaussian_ids] if colors.dim() == 2 else colors[camera_ids, gaussian_ids]  # [E, D]
    else:
        camera_centres = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[gaussian_ids] - camera_centres[camera_ids]  # [E, 3]
        coeffs = colors[gaussian_ids] if colors.dim() == 3 else colors[camera_ids, gaussian_ids]  # [E, K, 3]
        entry_colors = torch.clamp_min(spherical_harmonics_torch(sh_degree, dirs, coeffs) + 0.5, 0.0)  # [E, 3]
    if render_mode in ("RGB+D", "RGB+ED"):
        entry_colors = torch.cat([entry_colors, entry_depths[:, None]], dim=-1)  # [E, D + 1]
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(num_cameras, 1)], dim=-1)  # [C, D + 1]
    elif render_mode in ("D", "ED"):
        entry_colors = entry_depths[:, None]  # [E, 1]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(num_cameras, 1)  # [C, 1]
    return entry_colors, backgrounds
