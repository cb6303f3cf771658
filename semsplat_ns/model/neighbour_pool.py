"""The Gaussians that L3D samples and their k nearest neighbours, refreshed every so many steps.

A kNN over all N Gaussians each step would dominate the step; instead a pool of ``pool_factor * m`` Gaussians
gets its neighbours at each refresh, and every step samples ``m`` of them. The pool is stale when the
Gaussians were replaced or their count changed (densification), or after ``refresh_every`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from semsplat_ns.model.losses import knn_indices


@dataclass
class NeighbourPool:
    """Sampled Gaussians and their neighbours, with the key and step they were computed for.

    Args:
        num_samples: m, Gaussians sampled per step.
        pool_factor: The pool holds ``pool_factor * m`` Gaussians.
        k: Neighbours per Gaussian.
        refresh_every: Steps after which the pool is recomputed even if the Gaussians did not change.
    """

    num_samples: int
    pool_factor: int
    k: int
    refresh_every: int
    ids: Optional[torch.Tensor] = None  # [P] pool members
    neighbours: Optional[torch.Tensor] = None  # [P, k] their nearest Gaussians
    key: Optional[Tuple[int, int]] = None  # (id of the means Parameter, N) the pool was built for
    built_at: int = 0  # step of the last refresh

    def reset(self) -> None:
        """Forgets the pool (e.g. after loading a checkpoint)."""
        self.ids, self.neighbours, self.key = None, None, None

    def sample(self, means: torch.Tensor, key: Tuple[int, int], step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """This step's sample ids [m] and their k nearest Gaussians [m, k].

        Args:
            means: Gaussian centres [N, 3] (detached).
            key: Identifies the Gaussians: (id of the means Parameter, N).
            step: The training step.
        """
        count = means.shape[0]
        if self.ids is None or self.key != key or step - self.built_at >= self.refresh_every:
            pool_size = min(count, self.num_samples * self.pool_factor)
            self.ids = torch.randperm(count, device=means.device)[:pool_size]  # [P]
            self.neighbours = knn_indices(means[self.ids], means, self.k, query_ids=self.ids)  # [P, k]
            self.key, self.built_at = key, step
        assert self.neighbours is not None
        pick = torch.randint(0, self.ids.shape[0], (min(self.num_samples, self.ids.shape[0]),), device=means.device)
        return self.ids[pick], self.neighbours[pick]
