"""Splatfacto whose checkpoints resume training (nerfstudio 1.1.5's splatfacto does not).

* ``load_state_dict`` keeps the Parameter objects the optimisers hold (splatfacto replaces them: a resumed
  run then stepped tensors that no longer render and the loaded Gaussians stayed frozen);
* the densification strategy's per-Gaussian running state is saved with the model (extra state), since
  nerfstudio checkpoints modules and optimisers but not ``strategy_state``;
* the step after loading is the checkpoint's, not splatfacto's 30000.

Subclasses add to it through two hooks: :meth:`ResumableSplatfacto.after_checkpoint_load` (forget caches built
from the old Gaussians) and :meth:`ResumableSplatfacto.accepts_strategy_state` (reject a saved entry).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from nerfstudio.models.splatfacto import SplatfactoModel


class ResumableSplatfacto(SplatfactoModel):
    """Splatfacto with checkpoints that resume training; see the module docstring."""

    _checkpoint_step: Optional[int] = None

    def after_checkpoint_load(self) -> None:
        """Called after :meth:`load_state_dict` replaced the Gaussians' values (a hook; does nothing here)."""

    def accepts_strategy_state(self, name: str, value: torch.Tensor, count: int) -> bool:
        """Whether a saved strategy-state entry is restored (a hook; every entry of the right length is).

        Args:
            name: The entry's name in ``strategy_state``.
            value: The saved tensor [N, ...].
            count: N, the loaded Gaussian count.
        """
        return True

    def update_to_step(self, step: int) -> None:
        """Remembers the checkpoint's step; ``Pipeline.load_pipeline`` calls this before ``load_state_dict``.

        Args:
            step: Training step of the checkpoint being loaded.
        """
        super().update_to_step(step)
        self._checkpoint_step = step

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore[override]
        """Splatfacto's load, which resizes every Gaussian tensor to the checkpoint's count, keeping the
        Parameter objects that the optimisers hold.

        Splatfacto replaces each ``gauss_params`` entry with a new Parameter; the Trainer built its
        optimisers on the old ones before loading (``Trainer.setup``, then ``_load_checkpoint``), so a
        resumed run would step tensors that no longer render and leave the loaded Gaussians frozen.
        Here the loaded values move into the old Parameters instead (``.data`` swap), so the optimiser
        state loaded next attaches to the Gaussians that render. The strategy's running state is the
        checkpoint's (:meth:`get_extra_state`) or, for older checkpoints, fresh, so that every per-Gaussian
        tensor has the checkpoint's count. The step is the checkpoint's, not splatfacto's 30000.

        Args:
            state_dict: The model's state, as ``state_dict()`` returns it.
            **kwargs: ``strict``, as for ``nn.Module.load_state_dict``.
        """
        held = dict(self.gauss_params.items())  # name -> the Parameter the optimisers hold
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.strategy_state.get("scene_scale", 1.0))
        try:
            return super().load_state_dict(state_dict, **kwargs)
        finally:
            # Also when the strict load raised (e.g. an older checkpoint without the extra state):
            # the values are loaded by then, and the pipeline retries non-strict.
            for name, param in held.items():
                loaded = self.gauss_params[name]  # [N_checkpoint, ...]
                param.data = loaded.data
                param.grad = None
                self.gauss_params[name] = param
            if self._checkpoint_step is not None:
                self.step = self._checkpoint_step
            self.after_checkpoint_load()

    def get_extra_state(self) -> Dict[str, torch.Tensor]:
        """The densification strategy's per-Gaussian running state, saved with the model.

        nerfstudio 1.1.5 checkpoints modules and optimisers but not ``strategy_state``: without it a
        resumed run would restart the gradient statistics of the current refinement interval.

        Returns:
            Name -> tensor [N, ...] (entries not yet created are left out).
        """
        return {name: value for name, value in self.strategy_state.items() if isinstance(value, torch.Tensor)}

    def set_extra_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Restores the strategy state saved by :meth:`get_extra_state`.

        Args:
            state: Name -> tensor [N, ...]; entries whose length is not the loaded Gaussian count are
                skipped (they start afresh).
        """
        count = self.gauss_params["means"].shape[0]  # already resized to the checkpoint's count
        for name, value in state.items():
            if not isinstance(value, torch.Tensor) or value.shape[:1] != (count,):
                continue
            if not self.accepts_strategy_state(name, value, count):
                continue
            self.strategy_state[name] = value.to(self.device)
