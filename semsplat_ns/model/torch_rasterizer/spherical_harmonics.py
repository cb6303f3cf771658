"""Real spherical harmonics up to degree 4, evaluated like ``gsplat.spherical_harmonics`` (Inria 3DGS convention)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from semsplat_ns.model.torch_rasterizer.errors import require


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
    require(0 <= degrees_to_use <= 4, f"sh degree must be 0..4, got {degrees_to_use}")
    require(
        coeffs.dim() >= 2 and coeffs.shape[-1] == 3 and (degrees_to_use + 1) ** 2 <= coeffs.shape[-2],
        f"SH coefficients must be [..., K, 3] with K >= {(degrees_to_use + 1) ** 2}, got {tuple(coeffs.shape)}",
    )
    require(
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
