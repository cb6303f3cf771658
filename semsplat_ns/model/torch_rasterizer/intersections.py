"""Which (Gaussian, pixel) pairs a render composites: gsplat's tile intersection and early stop, on a flat list.

A projected Gaussian reaches exactly the pixels of the tiles (``tile_size``, 16) its radius box touches,
in front-to-back depth order (ties: lower index first). At a pixel ``alpha = min(0.999, opacity *
exp(-sigma))``; the pair is skipped when ``sigma < 0`` or ``alpha < 1/255``, and compositing stops before
the Gaussian that would drop the transmittance to ``<= 1e-4``.

Instead of tiles and threads, each Gaussian is expanded row by row over the ellipse where its alpha can
reach 1/255 (cut to its tiles), the pairs are sorted by (pixel, depth), and transmittance is a segmented
cumulative sum of ``log(1 - alpha)``. Gaussians are taken in depth-ordered passes so that pixels already
opaque are not expanded again. The selection is gradient-free; compositing.py blends what it selects.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

ALPHA_MAX = 0.999
"""Upper bound of a Gaussian's alpha at a pixel (gsplat 1.4 ``rasterize_to_pixels``)."""
ALPHA_MIN = 1.0 / 255.0
"""Intersections with a smaller alpha are skipped."""
TRANSMITTANCE_MIN = 1e-4
"""Compositing stops before a Gaussian that would leave at most this transmittance."""


def take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` along dim 0 (index_select: much faster than advanced indexing on CPU)."""
    return torch.index_select(values, 0, index)


def _expand_ranges(starts: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """For ranges [start, start + count): the owning range of every element and its value. [total] each"""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)  # [T]
    first = torch.cumsum(counts, 0) - counts  # [R]
    values = take(starts - first, owner) + torch.arange(owner.numel(), device=counts.device)  # [T]
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
    row_centre_x = take(centre_x, row_entry)  # [R]
    delta_y = take(centre_y, row_entry) - (row_y.to(dtype) + 0.5)  # [R]
    conic_xx, conic_xy, conic_yy = take(conic_xx, row_entry), take(conic_xy, row_entry), take(conic_yy, row_entry)
    disc = delta_y**2 * (conic_xy**2 - conic_xx * conic_yy) + 2 * conic_xx * take(sigma_max, row_entry)  # [R]
    root = torch.sqrt(torch.clamp_min(disc, 0))  # [R]
    # pixel centre x + 0.5 = mean_x - dx
    span_x0 = row_centre_x - (-conic_xy * delta_y + root) / conic_xx  # [R]
    span_x1 = row_centre_x - (-conic_xy * delta_y - root) / conic_xx  # [R]
    pixel_x0 = torch.maximum(take(tile_x0, row_entry), torch.ceil(span_x0 - 0.5) - 1)  # [R]
    pixel_x1 = torch.minimum(take(tile_x1, row_entry), torch.floor(span_x1 - 0.5) + 2)  # [R] exclusive
    # rows that miss the ellipse (disc < 0, only the margin rows) keep a 3-pixel span: rounding-safe and cheap
    row_width = torch.clamp_min(pixel_x1 - pixel_x0, 0)  # [R]
    pixel_row, pixel_x = _expand_ranges(pixel_x0.long(), row_width.long())  # [M0] each
    return take(row_entry, pixel_row), pixel_x, take(row_y, pixel_row)


@torch.no_grad()
def select_intersections(
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
        pixel_ids = (take(camera_ids, entry_ids) * height + pixel_y) * width + pixel_x  # [M0]
        open_ids = torch.nonzero(~take(terminated, pixel_ids)).squeeze(1)  # [M1]
        entry_ids, pixel_x, pixel_y, pixel_ids = (
            take(entry_ids, open_ids),
            take(pixel_x, open_ids),
            take(pixel_y, open_ids),
            take(pixel_ids, open_ids),
        )  # [M1] each
        alphas, sigmas = alpha_at(
            take(means2d, entry_ids), take(conics, entry_ids), take(opacities, entry_ids), pixel_x, pixel_y
        )  # [M1] each
        kept_ids = torch.nonzero((sigmas >= 0) & (alphas >= ALPHA_MIN)).squeeze(1)  # [M2]
        entry_ids, alphas, pixel_ids = take(entry_ids, kept_ids), take(alphas, kept_ids), take(pixel_ids, kept_ids)

        # stable: within a pixel, entries stay front to back
        pixel_ids, order = torch.sort(pixel_ids, stable=True)  # [M2]
        entry_ids, alphas = take(entry_ids, order), take(alphas, order)  # [M2]
        log_transmit = torch.log1p(-alphas.double())  # [M2]
        log_transmit_after = take(log_transmit_pixels, pixel_ids) + segmented_cumsum(
            log_transmit, segment_starts(pixel_ids)
        )  # [M2]
        # transmittance falls monotonically, so this keeps a prefix of every pixel's list
        lit = torch.exp(log_transmit_after) > TRANSMITTANCE_MIN  # [M2]
        terminated[pixel_ids[~lit]] = True
        lit_ids = torch.nonzero(lit).squeeze(1)  # [M3]
        pixel_ids = take(pixel_ids, lit_ids)  # [M3]
        log_transmit_pixels.index_add_(0, pixel_ids, take(log_transmit, lit_ids))
        selected_entries.append(take(entry_ids, lit_ids))
        selected_pixels.append(pixel_ids)
    if not selected_entries:
        empty = torch.zeros(0, dtype=torch.long, device=means2d.device)
        return empty, empty.clone()
    # passes are in depth order, so a stable sort by pixel keeps every pixel's list front to back
    pixel_ids, order = torch.sort(torch.cat(selected_pixels), stable=True)  # [M]
    return take(torch.cat(selected_entries), order), pixel_ids


def alpha_at(
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


def segment_starts(sorted_keys: Tensor) -> Tensor:
    """Position of the first element of each element's run of equal keys. [M]"""
    is_start = torch.ones_like(sorted_keys, dtype=torch.bool)  # [M]
    is_start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    positions = torch.arange(len(sorted_keys), device=sorted_keys.device)  # [M]
    return torch.cummax(torch.where(is_start, positions, torch.zeros_like(positions)), 0).values  # [M]


def segmented_cumsum(values: Tensor, segment_start: Tensor) -> Tensor:
    """Inclusive cumulative sum restarting at every segment (differentiable). [M]"""
    totals = torch.cumsum(values, 0)  # [M]
    before_segment = take(totals - values, segment_start)  # [M]
    return totals - before_segment
