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
