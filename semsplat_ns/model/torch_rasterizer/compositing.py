"""Front-to-back alpha compositing of the selected intersections, differentiable through ordinary autograd.

gsplat's ``rasterize_to_pixels`` on a flat list: :func:`~.intersections.select_intersections` picks the
(Gaussian, pixel) pairs without gradients; everything after it is autograd, so gradients reach means2d,
conics, opacities, colours and backgrounds, and ``info['means2d'].absgrad`` (AbsGS) is filled on request.
"""

from __future__ import annotations

import weakref
from typing import Optional, Tuple

import torch
from torch import Tensor

from semsplat_ns.model.torch_rasterizer.intersections import (
    alpha_at,
    segment_starts,
    segmented_cumsum,
    select_intersections,
    take,
)


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


def composite(
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
    entry_ids, pixel_ids = select_intersections(
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

    source_ids = take(entry_source_ids, entry_ids)  # [M]
    means2d_hits = _GatherMeans2d.apply(means2d_flat, source_ids, weakref.ref(means2d_holder), absgrad)  # [M, 2]
    pixel_x, pixel_y = pixel_ids % width, (pixel_ids // width) % height  # [M] each
    alphas, _ = alpha_at(means2d_hits, conics[source_ids], take(opacities, source_ids), pixel_x, pixel_y)  # [M]
    # transmittance in float64: the running sum spans all pixels and would lose float32 precision
    log_transmit = torch.log1p(-alphas.double())  # [M]
    transmit_before = torch.exp(segmented_cumsum(log_transmit, segment_starts(pixel_ids)) - log_transmit)  # [M]
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
