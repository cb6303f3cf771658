"""Semantic losses of semsplat: cross-entropy on labels and pseudo labels, 2D and 3D aggregation.

Pure functions on tensors; the model decides which views and Gaussians they see.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from semsplat_ns.data.irt_io import IGNORE_ID

IGNORE_INDEX = IGNORE_ID  # the label format's "no label" id


def downscale_labels(labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour downscaling of an id map to a rendered size.

    Area averaging (what splatfacto does to photos) mixes class ids, so labels are sampled at the
    centre of each block instead.

    Args:
        labels: Integer (or bool) map [H, W].
        height: Target height (<= H).
        width: Target width (<= W).

    Returns:
        The map sampled to [height, width].
    """
    full_h, full_w = labels.shape
    if (full_h, full_w) == (height, width):
        return labels
    rows = ((torch.arange(height, device=labels.device) + 0.5) * full_h / height).long().clamp_(max=full_h - 1)  # [h]
    cols = ((torch.arange(width, device=labels.device) + 0.5) * full_w / width).long().clamp_(max=full_w - 1)  # [w]
    return labels[rows][:, cols]


def psnr_unit_range(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] over all their elements (torchmetrics' value for data_range=1).

    Args:
        prediction: Image(s), any shape.
        target: Same shape as ``prediction``.
    """
    return -10.0 * torch.log10(torch.mean((prediction - target) ** 2))


def semantic_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid_mask: Optional[torch.Tensor] = None,
    pixel_weights: Optional[torch.Tensor] = None,
    class_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean cross-entropy over pixels with a label (Eq. 9; Eq. 10 with ``valid_mask`` = B).

    Args:
        logits: Class logits [H, W, C].
        labels: Class ids [H, W]; 255 means "no label".
        valid_mask: Optional bool mask [H, W]; only pixels where it is True count.
        pixel_weights: Optional weight of each pixel's term [H, W]; the mean stays over the counted
            pixels, so weights below 1 lower the loss rather than only redistribute it.
        class_weights: Optional weight of each class [C]: a pixel's term is weighted by its label's class and
            the mean is the weighted mean (sum of weighted terms over the sum of the counted pixels' weights),
            so the weights shift the loss between classes without changing its scale.

    Returns:
        Scalar loss; 0 (with a graph to ``logits``) when no pixel counts.
    """
    labels = labels.long()
    if valid_mask is not None:
        labels = torch.where(valid_mask, labels, torch.full_like(labels, IGNORE_INDEX))
    counted = labels != IGNORE_INDEX  # [H, W]
    flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)  # [P, C], [P]
    per_pixel = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="none")  # [P]
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights.reshape(-1)
    if class_weights is not None:
        label_weights = class_weights[flat_labels.clamp(max=class_weights.shape[0] - 1)] * counted.reshape(-1)  # [P]
        return (per_pixel * label_weights).sum() / label_weights.sum().clamp_min(1e-12)
    # Ignored pixels add 0. Sum over the count rather than a test for "any pixel counted", which would wait for
    # the device on every training step; no pixel counted gives 0 over 1.
    return per_pixel.sum() / counted.sum().clamp_min(1)


def pseudo_agreement(logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """How little the model objects to each pseudo label: 1 - (p_top - p_pseudo) of its softmax [H, W].

    1 where the pseudo label is the model's own top class, near 1 where the model hesitates, near 0 where it is
    sure of another class. Pixels without a pseudo label (255) get 1 (the loss ignores them anyway).

    Args:
        logits: The model's class logits [H, W, C] (detach them: the weight is no training target).
        pseudo: Pseudo labels [H, W], 255 for none.
    """
    probabilities = logits.float().softmax(dim=-1)  # [H, W, C]
    pseudo = pseudo.long()
    labelled = pseudo != IGNORE_INDEX  # [H, W]
    ids = torch.where(labelled, pseudo, torch.zeros_like(pseudo)).clamp(max=logits.shape[-1] - 1)  # [H, W]
    p_pseudo = probabilities.gather(-1, ids[..., None])[..., 0]  # [H, W]
    p_top = probabilities.amax(dim=-1)  # [H, W]
    return torch.where(labelled, 1.0 - (p_top - p_pseudo), torch.ones_like(p_top))


def inverse_sqrt_frequency_weights(class_pixels: torch.Tensor) -> torch.Tensor:
    """Class weights proportional to 1 / sqrt(pixel count), with mean 1 over the classes seen [C].

    Args:
        class_pixels: Labelled pixels counted per class [C].

    Returns:
        Weights [C]; classes never seen get the weight of a class seen once (they appear in no term).
    """
    weights = (class_pixels.float() + 1.0).rsqrt()  # [C]
    seen = class_pixels > 0  # [C]
    mean_seen = (weights * seen).sum() / seen.sum().clamp_min(1)
    return weights / mean_seen.clamp_min(1e-12)


def rows_of(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``values[ids]`` for row ids of any shape, through ``index_select``.

    The same values as advanced indexing; the gradient differs in how it is gathered back. Advanced indexing's
    backward is an accumulating ``index_put_``, which on CUDA sorts the ids first (a radix sort and several
    launches, ~0.3 ms of host time per call in the GPU profile, benchmarks/results/profile/kernels_e1f317d.txt);
    ``index_select``'s is one ``index_add_``. The aggregation losses gather four times a step.

    Args:
        values: Rows to gather from [N, D].
        ids: Row ids, any shape [...] (long).

    Returns:
        The rows [..., D].
    """
    return values.index_select(0, ids.reshape(-1)).reshape(*ids.shape, values.shape[-1])


def softmax_kl(features: torch.Tensor, neighbour_features: torch.Tensor) -> torch.Tensor:
    """Mean KL(P || Q) between softmax-normalised features and those of their neighbours (Eq. 11).

    Args:
        features: Features of the sampled elements [M, D].
        neighbour_features: Features of their k neighbours [M, K, D].

    Returns:
        Scalar mean over the M*K pairs.
    """
    log_p = F.log_softmax(features, dim=-1)[:, None, :]  # [M, 1, D]
    log_q = F.log_softmax(neighbour_features, dim=-1)  # [M, K, D]
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


# The k nearest pixels of a pixel are its 4-neighbours (distance 1), then the 4 diagonals
# (distance sqrt 2); ties among the diagonals are broken at random per sample.
_DIRECT_OFFSETS = ((0, 1), (0, -1), (1, 0), (-1, 0))
_DIAGONAL_OFFSETS = ((1, 1), (1, -1), (-1, 1), (-1, -1))


@functools.cache
def _offset_tables(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The direct and diagonal neighbour offsets on ``device`` ([4, 2] each), built once per device.

    Built from Python lists, each table is a host-to-device copy, which waits for the device: once per run
    instead of twice per training step. Callers only read them (index and concatenate into new tensors).

    Args:
        device: Where the tables live.
    """
    with torch.inference_mode(False):  # ordinary tensors, also when first built inside an inference block
        return torch.tensor(_DIRECT_OFFSETS, device=device), torch.tensor(_DIAGONAL_OFFSETS, device=device)


def pixel_neighbour_offsets(num_samples: int, k: int, generator: Optional[torch.Generator] = None, device=None):
    """Row/column offsets of the k nearest pixels (k <= 8) for each sample.

    Returns:
        Integer offsets [M, K, 2] as (drow, dcol).
    """
    if not 1 <= k <= 8:
        raise ValueError(f"agg2d k must be in 1..8 (pixel neighbours), got {k}")
    direct, diagonal = _offset_tables(torch.device(device) if device is not None else torch.device("cpu"))  # [4, 2] x2
    if k <= 4:
        order = torch.rand(num_samples, 4, generator=generator, device=device).argsort(dim=1)[:, :k]  # [M, k]
        return direct[order]
    order = torch.rand(num_samples, 4, generator=generator, device=device).argsort(dim=1)[:, : k - 4]  # [M, k-4]
    return torch.cat([direct[None].expand(num_samples, 4, 2), diagonal[order]], dim=1)  # [M, k, 2]


def aggregation_2d_loss(
    feature_map: torch.Tensor, num_samples: int, k: int = 5, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """L2D: KL between m random pixels of the rendered feature map and their k nearest pixels.

    Args:
        feature_map: Rendered semantic features [H, W, D].
        num_samples: m, the number of sampled pixels.
        k: Neighbours per pixel (<= 8).
        generator: Optional random generator (on the feature map's device).

    Returns:
        Scalar loss.
    """
    height, width, _ = feature_map.shape
    device = feature_map.device
    rows = torch.randint(0, height, (num_samples,), generator=generator, device=device)  # [M]
    cols = torch.randint(0, width, (num_samples,), generator=generator, device=device)  # [M]
    offsets = pixel_neighbour_offsets(num_samples, k, generator=generator, device=device)  # [M, K, 2]
    # Reflect at the border so every sample keeps k in-image neighbours.
    n_rows = rows[:, None] + offsets[..., 0]  # [M, K]
    n_cols = cols[:, None] + offsets[..., 1]  # [M, K]
    n_rows = torch.where((n_rows < 0) | (n_rows >= height), rows[:, None] - offsets[..., 0], n_rows)
    n_cols = torch.where((n_cols < 0) | (n_cols >= width), cols[:, None] - offsets[..., 1], n_cols)
    n_rows = n_rows.clamp(0, height - 1)
    n_cols = n_cols.clamp(0, width - 1)
    pixels = feature_map.reshape(height * width, -1)  # [H*W, D]
    return softmax_kl(rows_of(pixels, rows * width + cols), rows_of(pixels, n_rows * width + n_cols))


@torch.no_grad()
def knn_indices(
    queries: torch.Tensor, points: torch.Tensor, k: int, query_ids: Optional[torch.Tensor] = None, chunk: int = 1024
) -> torch.Tensor:
    """Brute-force k nearest neighbours on the tensors' device, excluding the query itself.

    Args:
        queries: Query positions [M, 3].
        points: All positions [N, 3].
        k: Neighbours to return (clamped to N - 1).
        query_ids: Indices of the queries in ``points`` [M], so they can exclude themselves.
        chunk: Queries per distance block (memory: chunk * N floats).

    Returns:
        Neighbour indices into ``points`` [M, k].
    """
    k = min(k, points.shape[0] - 1)
    out = []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.cdist(queries[start : start + chunk], points)  # [m, N]
        if query_ids is not None:
            dist.scatter_(1, query_ids[start : start + chunk, None], float("inf"))
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out, dim=0)


def aggregation_3d_loss(
    semantic_features: torch.Tensor, sample_ids: torch.Tensor, neighbour_ids: torch.Tensor
) -> torch.Tensor:
    """L3D: KL between sampled Gaussians' features and their k nearest Gaussians' features.

    Args:
        semantic_features: Per-Gaussian features [N, D].
        sample_ids: Sampled Gaussians [M].
        neighbour_ids: Their k nearest Gaussians [M, K].

    Returns:
        Scalar loss.
    """
    return softmax_kl(rows_of(semantic_features, sample_ids), rows_of(semantic_features, neighbour_ids))
