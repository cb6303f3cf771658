"""Label support: how much of what a labelled view shows of each Gaussian, measured in the training render.

For a Gaussian i and a labelled view, the support is the transmittance it sees there, averaged over its
footprint: its alpha-blending weight ``w_i(p) = alpha_i(p) T_i(p)`` summed over the view's pixels, divided by
what that sum would be if nothing occluded it, ``sum_p alpha_i(p) = o_i`` times the integral of ``G_i``:

    s_i = sum_p w_i(p) / (o_i * 2 pi / sqrt(det conic_i))      (clamped to [0, 1])

``G_i`` is its 2D Gaussian kernel (peak 1), whose integral over the image plane is ``2 pi / sqrt(det conic_i)``
pixels, and ``o_i`` its opacity in that render. An unoccluded Gaussian inside the view has support 1 whatever
its opacity: the labelled view's cross-entropy reaches its feature, and Adam's normalised steps teach a faint
Gaussian as much as a dense one. An occluded or off-screen one has less, and one the view never renders 0.
(Without the division by the opacity, the first definition measured, the support of most Gaussians was their
opacity, well below 1 on surfaces the labelled views see, and weighting the pseudo loss by it changed mIoU by
+0.0 / +0.3 on the benchmark towns.) Dividing by the footprint makes the value independent of the render's
resolution (splatfacto's downscale schedule).

A view's support map is the support of its Gaussians alpha-blended like a colour and divided by the
accumulated alpha (:func:`normalised_support`): the share of the pixel's colour that comes from Gaussians a
labelled view sees.

``sum_p w_i(p)`` comes from the same rasterization pass as the colours: a *probe* channel whose
per-Gaussian values are all zero is rendered with them, and the gradient flowing into the probe's
render is replaced by ones (:func:`unit_gradient_on`). The probe's gradient is then exactly
``sum_p w_i(p)``, while the probe adds nothing to any other gradient: its render is zero whatever the
geometry, so its derivative with respect to positions, shapes and opacities vanishes.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor


def blending_weight_probe(count: int, device: torch.device) -> Tensor:
    """Zero-valued per-Gaussian channel whose gradient will hold the summed blending weights.

    Args:
        count: Number of rendered Gaussians.
        device: Their device.

    Returns:
        Leaf tensor [count, 1] that requires grad.
    """
    return torch.zeros(count, 1, device=device, requires_grad=True)


def unit_gradient_on(render: Tensor, channel: int) -> None:
    """Makes the gradient reaching ``render[..., channel]`` one at every pixel during backward.

    Args:
        render: Rasterization output [C, H, W, X] that requires grad.
        channel: Channel of the probe in ``render``.
    """

    def hook(grad: Tensor) -> Tensor:  # [C, H, W, X]
        grad = grad.clone()
        grad[..., channel] = 1.0
        return grad

    render.register_hook(hook)


def support_from_probe(weight_sums: Tensor, conics: Tensor, radii: Tensor, opacities: Tensor) -> Tensor:
    """Support of each Gaussian in one view (its footprint-averaged transmittance) from its summed blending weights.

    Args:
        weight_sums: ``sum_p w_i(p)`` per Gaussian (the probe's gradient) [N].
        conics: Inverse 2D covariances (xx, xy, yy) of the same render [N, 3].
        radii: Pixel radii of the same render; 0 = not rendered [N].
        opacities: Opacities the same render blended with (after any antialiasing compensation) [N].

    Returns:
        Support in [0, 1] [N]; 0 for Gaussians not rendered.
    """
    determinant = conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2  # [N]
    visible = (radii > 0) & (determinant > 0) & (opacities > 0)  # [N]
    unoccluded = opacities * 2.0 * math.pi * torch.rsqrt(determinant.clamp_min(1e-12))  # [N] sum_p alpha_i(p)
    support = (weight_sums / unoccluded.clamp_min(1e-12)).clamp(0.0, 1.0)  # [N]
    return torch.where(visible, support, torch.zeros_like(support))


def normalised_support(blended: Tensor, alpha: Tensor) -> Tensor:
    """A view's support map: the alpha-blended support divided by the accumulated alpha.

    Args:
        blended: ``sum_i w_i(p) s_i`` rendered like a colour [H, W, 1].
        alpha: Accumulated alpha ``sum_i w_i(p)`` of the same render [H, W, 1].

    Returns:
        Support per pixel in [0, 1] [H, W, 1]; 0 where nothing is rendered.
    """
    return torch.where(alpha > 1e-4, blended / alpha.clamp_min(1e-4), torch.zeros_like(blended)).clamp(0.0, 1.0)


class LabelSupport:
    """Per-Gaussian, per-labelled-view support table kept in the densification strategy's state.

    The table lives in ``state[KEY]`` as [N, V] (V labelled training views), so gsplat's ops
    (duplicate, split, remove) carry it row by row with the Gaussians, and it is saved with the rest
    of the strategy state. Each labelled view's column is replaced whenever that view is rendered in
    training, so the support is the max over labelled views under the geometry of their last render.

    Args:
        labelled_views: Training-image index of each labelled view, in column order.
    """

    KEY = "label_support"

    def __init__(self, labelled_views: Sequence[int]):
        self.column_of: Dict[int, int] = {int(index): column for column, index in enumerate(labelled_views)}

    @property
    def num_views(self) -> int:
        """V, the number of labelled views."""
        return len(self.column_of)

    def column(self, camera_metadata: Optional[dict]) -> Optional[int]:
        """The table column of a training camera, or None when it is not a labelled view.

        Args:
            camera_metadata: ``Cameras.metadata`` (the datamanager sets "cam_idx").
        """
        if not camera_metadata or "cam_idx" not in camera_metadata:
            return None
        return self.column_of.get(int(camera_metadata["cam_idx"]))

    def table(self, state: Dict, count: int, device: torch.device) -> Tensor:
        """The [N, V] table in ``state``, created (zeros) when absent.

        Args:
            state: The strategy state.
            count: N, the current number of Gaussians.
            device: Device of a new table.

        Raises:
            RuntimeError: The table does not have N rows (something changed the Gaussians without
                going through the strategy's ops).
        """
        table = state.get(self.KEY)
        if table is None:
            table = torch.zeros(count, self.num_views, device=device)  # [N, V]
            state[self.KEY] = table
        if tuple(table.shape) != (count, self.num_views):
            raise RuntimeError(
                f"label support table {tuple(table.shape)} for {count} Gaussians, {self.num_views} views"
            )
        return table

    def per_gaussian(self, state: Dict, count: int, device: torch.device) -> Tensor:
        """Max over labelled views of the support [N] in [0, 1] (zeros without labelled views).

        Args:
            state: The strategy state.
            count: N, the current number of Gaussians.
            device: Device of a new table.
        """
        table = self.table(state, count, device)  # [N, V]
        if table.shape[1] == 0:
            return table.new_zeros(count)
        return table.max(dim=1).values

    def accepts(self, value: Tensor, count: int) -> bool:
        """Whether a saved table fits N Gaussians and this scene's labelled views.

        Args:
            value: A saved table.
            count: N.
        """
        return tuple(value.shape) == (count, self.num_views)

    @torch.no_grad()
    def record(self, state: Dict, column: int, support: Tensor) -> None:
        """Replaces a labelled view's column with the support measured in its latest render.

        Args:
            state: The strategy state.
            column: The view's column.
            support: Support per Gaussian [N].
        """
        self.table(state, support.shape[0], support.device)[:, column] = support
