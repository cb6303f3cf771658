"""SSIM as splatfacto scores it (pytorch_msssim's ``SSIM(data_range=1.0, size_average=True, channel=3)``), for the
training step: the same value, without a host sync and in fewer kernel launches.

pytorch_msssim keeps its Gaussian window on the host and copies it to the images' device on every call (a
host-to-device copy, which waits for the device each training step), then filters the five maps (X, Y, X², Y², XY)
one at a time, each in two passes: ten convolutions. :class:`SSIM` keeps the window as a buffer, so it moves with
the model, and filters the five maps stacked along the channels: one grouped convolution per pass, two in all.
Every output pixel is the same 11-tap sum in the same order as pytorch_msssim's, and autograd adds up each image's
gradients in pytorch_msssim's order, so value and gradient are the same up to float rounding (on the CPU, bit for
bit: tests/model/test_ssim.py).
"""

from __future__ import annotations

import warnings
from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

WINDOW_SIZE = 11
"""Taps of the Gaussian window (pytorch_msssim's default)."""
WINDOW_SIGMA = 1.5
"""Standard deviation of the window in pixels (pytorch_msssim's default)."""


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> torch.Tensor:
    """The normalised 1D Gaussian window [size] (float32), centred on its middle tap.

    Args:
        size: Number of taps (odd).
        sigma: Standard deviation in taps.
    """
    offsets = torch.arange(size, dtype=torch.float32) - size // 2  # [size]
    window = torch.exp(-(offsets**2) / (2 * sigma**2))  # [size]
    return window / window.sum()


class SSIM(nn.Module):
    """Mean structural similarity of two batches of images, with 'valid' (unpadded) Gaussian filtering.

    The value of pytorch_msssim's ``SSIM(data_range, size_average=True, channel)``: the SSIM map of each image and
    channel averaged over its pixels, then over images and channels. As there, an image side shorter than the
    window is not filtered along (with a warning).
    """

    window: torch.Tensor  # [5 * channel, 1, 1, size], a buffer

    def __init__(
        self,
        data_range: float = 1.0,
        channel: int = 3,
        size: int = WINDOW_SIZE,
        sigma: float = WINDOW_SIGMA,
        k: Tuple[float, float] = (0.01, 0.03),
    ):
        """Builds the window.

        Args:
            data_range: Value range of the images (1.0 for images in [0, 1]).
            channel: Channels per image.
            size: Taps of the Gaussian window (odd).
            sigma: Standard deviation of the window in pixels.
            k: SSIM's constants (K1, K2).
        """
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"the window needs an odd number of taps, got {size}")
        self.channel = channel
        self.c1 = (k[0] * data_range) ** 2
        self.c2 = (k[1] * data_range) ** 2
        # one copy of the window per filtered channel: X, Y, X², Y², XY, each with `channel` channels. Not
        # persistent: checkpoints stay as splatfacto's (whose SSIM module holds no state).
        window = gaussian_window(size, sigma).reshape(1, 1, 1, size).repeat(5 * channel, 1, 1, 1)
        self.register_buffer("window", window, persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """SSIM of ``x`` against ``y`` (symmetric), a 0-dim tensor.

        Args:
            x: Images [B, C, H, W].
            y: Images [B, C, H, W].
        """
        if x.shape != y.shape:
            raise ValueError(f"the images differ in shape: {tuple(x.shape)} and {tuple(y.shape)}")
        if x.dim() != 4 or x.shape[1] != self.channel:
            raise ValueError(f"expected images [B, {self.channel}, H, W], got {tuple(x.shape)}")
        size = self.window.shape[-1]
        filtered_dims = [dim for dim in (2, 3) if x.shape[dim] >= size]
        if len(filtered_dims) < 2:
            message = f"SSIM: images of shape {tuple(x.shape)} are filtered along dimensions {filtered_dims} only"
            warnings.warn(message, stacklevel=2)
        if not filtered_dims:
            # nothing to filter: the means are the images, and the second moments are made after the means' products,
            # in pytorch_msssim's order (so that autograd sums each image's gradients in the same order)
            return self._mean_ssim(x, y, lambda: (x * x, y * y, x * y))
        # x and y join the stack through views made before the products: autograd then adds the gradients of each
        # image's three uses (filtered, squared, multiplied) in pytorch_msssim's order, so training with this module
        # is bit-for-bit training with pytorch_msssim on the CPU (with x and y straight in the stack, the filtered
        # use is added first: the same gradient up to rounding)
        x_filtered, y_filtered = x.view_as(x), y.view_as(y)
        stacked = torch.cat([x_filtered, y_filtered, x * x, y * y, x * y], dim=1)  # [B, 5C, H, W]
        window = self.window if self.window.dtype == x.dtype else self.window.to(x.dtype)  # [5C, 1, 1, size]
        for dim in filtered_dims:  # H, then W: [5C, 1, size, 1], then [5C, 1, 1, size]
            weight = window.transpose(2, 3) if dim == 2 else window
            stacked = F.conv2d(stacked, weight, groups=stacked.shape[1])  # [B, 5C, H', W'], 'valid'
        mu_x, mu_y, xx, yy, xy = stacked.chunk(5, dim=1)  # [B, C, H', W'] each
        return self._mean_ssim(mu_x, mu_y, lambda: (xx, yy, xy))

    def _mean_ssim(
        self,
        mu_x: torch.Tensor,
        mu_y: torch.Tensor,
        second_moments: Callable[[], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """The mean of the SSIM map, from the filtered images and (called after their products) the filtered
        squares and product, [B, C, H', W'] each: the arithmetic of pytorch_msssim's ``_ssim``, term for term."""
        mu_x_sq = mu_x.pow(2)
        mu_y_sq = mu_y.pow(2)
        mu_xy = mu_x * mu_y
        xx, yy, xy = second_moments()
        sigma_x_sq = xx - mu_x_sq
        sigma_y_sq = yy - mu_y_sq
        sigma_xy = xy - mu_xy
        contrast_structure = (2 * sigma_xy + self.c2) / (sigma_x_sq + sigma_y_sq + self.c2)  # [B, C, H', W']
        ssim_map = ((2 * mu_xy + self.c1) / (mu_x_sq + mu_y_sq + self.c1)) * contrast_structure  # [B, C, H', W']
        # per image and channel first, then over those: pytorch_msssim's order of the sums
        return ssim_map.flatten(2).mean(-1).mean()
