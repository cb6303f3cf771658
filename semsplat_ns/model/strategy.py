"""Densification of semsplat: gsplat's DefaultStrategy with a cap on the number of Gaussians.

Written like gsplat's ``strategy/`` code: the strategy holds settings only; the parameters, their
optimisers and the running state are passed in and updated in place by gsplat's ops, so every
N-sized tensor (optimiser moments, ``grad2d``, ``count``, extra per-Gaussian state) stays aligned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple, Union

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove

Params = Union[Dict[str, torch.nn.Parameter], torch.nn.ParameterDict]


@dataclass
class CappedDefaultStrategy(DefaultStrategy):
    """DefaultStrategy that never grows past ``cap_max`` Gaussians (the paper's 300k limit).

    At or above the cap a refinement step neither duplicates nor splits (pruning and opacity resets go
    on). A step that leaves more than ``cap_max`` Gaussians (a refinement that started below the cap
    and overshot it, or a cap lowered during training) drops the least opaque ones.
    """

    cap_max: int = 300_000
    """Most Gaussians kept after any step."""

    @classmethod
    def from_default(cls, strategy: DefaultStrategy, cap_max: int) -> CappedDefaultStrategy:
        """The same settings as ``strategy`` (e.g. the one splatfacto built from its config), capped.

        Args:
            strategy: A DefaultStrategy whose fields are copied.
            cap_max: The cap.
        """
        settings = {field.name: getattr(strategy, field.name) for field in dataclasses.fields(strategy)}
        return cls(**settings, cap_max=cap_max)

    def step_post_backward(
        self,
        params: Params,
        optimizers: Dict[str, torch.optim.Optimizer],
        state: Dict[str, Any],
        step: int,
        info: Dict[str, Any],
        packed: bool = False,
    ):
        """DefaultStrategy's refinement, then the cap (also after ``refine_stop_iter``)."""
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        self._enforce_cap(params, optimizers, state)

    def _update_state(self, params: Params, state: Dict[str, Any], info: Dict[str, Any], packed: bool = False):
        """Accumulates this step's screen-space gradient norms, visibility counts and radii, without host syncs.

        DefaultStrategy's own version picks the visible (camera, Gaussian) pairs with ``torch.where(radii > 0)``
        and boolean-mask indexing, which wait for the device to learn how many there are (three host syncs per
        step until ``refine_stop_iter``). Here every Gaussian of every camera is updated, the invisible ones with
        nothing: the same sums and maxima with a fixed shape. With one camera (splatfacto's case) the running
        state is bit-for-bit gsplat's on the CPU; with several, ``grad2d`` sums the cameras before adding them
        (gsplat adds one camera at a time) and ``radii`` keeps the largest of the cameras' radii (gsplat's index
        assignment keeps one of them, which it notes should ideally be a scatter max).

        Packed ``info`` (already a list of the visible pairs) and radii of any layout but gsplat 1.4's [C, N]
        go to DefaultStrategy's version.

        Args:
            params: The Gaussians' parameters (the first one's length is N).
            state: The running state; ``grad2d``, ``count`` (and ``radii`` when ``refine_scale2d_stop_iter`` > 0)
                are created as zeros [N] on the first call, then updated in place.
            info: The rasterization's info of this step, after ``backward``.
            packed: Whether ``info`` holds packed [nnz, ...] tensors.
        """
        for key in ("width", "height", "n_cameras", "radii", "gaussian_ids", self.key_for_gradient):
            assert key in info, f"{key} is required but missing."
        radii = info["radii"]  # [C, N] int32 pixel radii, 0 where not visible
        if packed or radii.dim() != 2:
            super()._update_state(params, state, info, packed=packed)
            return

        # screen-space gradients scaled as DefaultStrategy does: to [-1, 1] coordinates, per camera of the batch
        means2d = info[self.key_for_gradient]
        grads = (means2d.absgrad if self.absgrad else means2d.grad).clone()  # [C, N, 2]
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]

        # first call: the state on the gradients' device (the strategy's state is created before the device is known)
        n_gaussians = len(next(iter(params.values())))
        if state["grad2d"] is None:
            state["grad2d"] = torch.zeros(n_gaussians, device=grads.device)
        if state["count"] is None:
            state["count"] = torch.zeros(n_gaussians, device=grads.device)
        if self.refine_scale2d_stop_iter > 0 and state["radii"] is None:
            state["radii"] = torch.zeros(n_gaussians, device=grads.device)

        visible = radii > 0  # [C, N]
        # where, not a product with the mask: an unseen Gaussian's gradient adds exactly nothing, even if not finite
        norms = torch.where(visible, grads.norm(dim=-1), 0.0)  # [C, N]
        state["grad2d"].add_(norms.sum(dim=0))
        state["count"].add_(visible.sum(dim=0))  # integer counts, exact in float32
        if self.refine_scale2d_stop_iter > 0:
            seen = state["radii"]  # [N], radii normalised by the larger image side
            normalised = radii / float(max(info["width"], info["height"]))  # [C, N]
            largest = torch.where(visible, normalised, seen).amax(dim=0)  # [N], the old value where none sees it
            torch.maximum(seen, largest, out=seen)

    @torch.no_grad()
    def _grow_gs(
        self, params: Params, optimizers: Dict[str, torch.optim.Optimizer], state: Dict[str, Any], step: int
    ) -> Tuple[int, int]:
        if len(params["means"]) >= self.cap_max:
            return 0, 0
        return super()._grow_gs(params, optimizers, state, step)

    @torch.no_grad()
    def _enforce_cap(self, params: Params, optimizers: Dict[str, torch.optim.Optimizer], state: Dict[str, Any]) -> int:
        """Removes the least opaque Gaussians above the cap; returns how many."""
        excess = len(params["means"]) - self.cap_max
        if excess <= 0:
            return 0
        opacities = params["opacities"].detach().flatten()  # [N] (logits: same order as opacities)
        drop = torch.zeros_like(opacities, dtype=torch.bool)  # [N]
        drop[opacities.argsort()[:excess]] = True
        remove(params=params, optimizers=optimizers, state=state, mask=drop)
        if self.verbose:
            print(f"{excess} GSs above the cap of {self.cap_max} removed.")
        return excess
