"""One entry point for Gaussian rasterization: gsplat's CUDA kernels on a GPU, pure PyTorch elsewhere.

Both paths share ``gsplat.rasterization``'s (gsplat 1.4.0) signature, outputs and ``info`` dict, so
models call :func:`rasterization` and :func:`spherical_harmonics` without caring about the device.
gsplat is imported lazily: on a CPU-only machine it is never touched.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import Tensor
from typing_extensions import Literal

from semsplat_ns.model.torch_rasterizer import rasterization_torch, spherical_harmonics_torch


def rasterization(
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
    """Rasterizes 3D Gaussians into C images: ``gsplat.rasterization`` when ``means`` is on CUDA, else pure PyTorch.

    Args:
        means: Gaussian centres. [N, 3]
        quats: Rotations as quaternions (w, x, y, z), not necessarily normalised. [N, 4]
        scales: Standard deviations along the rotated axes. [N, 3]
        opacities: Opacities in [0, 1]. [N]
        colors: Features [(C,) N, D] with any D, or SH coefficients [(C,) N, K, 3] with ``sh_degree``.
        viewmats: World-to-camera transforms (OpenCV axes). [C, 4, 4]
        Ks: Pinhole intrinsics. [C, 3, 3]
        width: Image width in pixels.
        height: Image height in pixels.
        near_plane: Gaussians closer than this (camera z) are culled.
        far_plane: Gaussians farther than this are culled.
        radius_clip: Gaussians whose pixel radius is at most this are culled.
        eps2d: Added to the diagonal of each projected 2D covariance (pixels^2).
        sh_degree: SH degree to evaluate, or None when ``colors`` are post-activation features.
        packed: Whether ``info`` holds packed [nnz, ...] tensors; images are the same either way.
        tile_size: Rasterization tile size in pixels.
        backgrounds: Background colour per camera. [C, D]
        render_mode: "RGB", "D", "ED", "RGB+D" or "RGB+ED" (depth appended as the last channel).
        sparse_grad: COO gradients for means/quats/scales (CUDA, packed only).
        absgrad: Compute ``info['means2d'].absgrad`` in the backward pass (AbsGS densification).
        rasterize_mode: "classic" or "antialiased" (Mip-Splatting opacity compensation).
        channel_chunk: Channels per CUDA kernel launch.
        distributed: Multi-GPU rendering (CUDA only).
        camera_model: "pinhole"; "ortho" and "fisheye" only on CUDA.
        covars: Optional 3D covariances replacing quats and scales. [N, 3, 3]

    Returns:
        render_colors [C, H, W, X], render_alphas [C, H, W, 1] and the ``info`` dict of gsplat 1.4.
    """
    # Typed as Any: the values differ in type, and both backends take exactly these keyword arguments.
    arguments: Dict[str, Any] = dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=packed,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode=render_mode,
        sparse_grad=sparse_grad,
        absgrad=absgrad,
        rasterize_mode=rasterize_mode,
        channel_chunk=channel_chunk,
        distributed=distributed,
        camera_model=camera_model,
        covars=covars,
    )
    if means.is_cuda:
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(**arguments)
    return rasterization_torch(**arguments)


def spherical_harmonics(
    degrees_to_use: int,
    dirs: Tensor,  # [..., 3]
    coeffs: Tensor,  # [..., K, 3]
    masks: Optional[Tensor] = None,  # [...]
) -> Tensor:
    """Evaluates SH colours (3DGS convention, no +0.5 offset): gsplat's kernel on CUDA, PyTorch elsewhere.

    Args:
        degrees_to_use: Highest SH degree evaluated; needs ``(degrees_to_use + 1)**2 <= K``.
        dirs: View directions, not necessarily normalised. [..., 3]
        coeffs: SH coefficients per RGB channel. [..., K, 3]
        masks: Optional; where False the result is 0. [...]

    Returns:
        Colours. [..., 3]
    """
    if dirs.is_cuda:
        from gsplat.cuda._wrapper import spherical_harmonics as gsplat_spherical_harmonics

        return gsplat_spherical_harmonics(degrees_to_use, dirs, coeffs, masks=masks)
    return spherical_harmonics_torch(degrees_to_use, dirs, coeffs, masks=masks)
