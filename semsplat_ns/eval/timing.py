"""The one timing protocol behind every "ms / view" figure (semsplat, the Unet, semantic-nerfw).

A method is timed as a user would meet it: one view at a time, from the view's input already on the device
to its class-id map ``[H, W]`` on the device (render or forward pass + argmax), with the device synchronised
before and after, and no metric or I/O work inside the clock. The first ``warmup_views`` predictions are
made untimed (kernel compilation, allocator and cache warm-up); the figure is the median over every view
(all views are timed once after the warm-up), with the 95th percentile beside it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Generic, Iterable, List, Optional, Sequence, TypeVar, Union

import torch

View = TypeVar("View")


def synchronize(device: Union[torch.device, str]) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ViewTimes:
    """Per-view prediction times of one run of the protocol."""

    times_ms: List[float] = field(default_factory=list)
    """Milliseconds per timed view, in view order."""
    warmup_views: int = 0
    """Untimed predictions made before the first timed one."""

    @property
    def median_ms(self) -> Optional[float]:
        """Median milliseconds per view (the reported figure); None when no view was timed."""
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def p95_ms(self) -> Optional[float]:
        """95th percentile (nearest rank) of the milliseconds per view; None when no view was timed."""
        if not self.times_ms:
            return None
        ordered = sorted(self.times_ms)
        return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]

    def as_fields(self) -> Dict[str, Optional[float]]:
        """The figures as result-row fields."""
        return {
            "test_ms_per_view": self.median_ms,
            "test_ms_per_view_p95": self.p95_ms,
            "timing_warmup_views": self.warmup_views,
            "timed_views": len(self.times_ms),
        }


@dataclass(frozen=True)
class PerViewTiming(Generic[View]):
    """Times ``predict(view) -> class ids`` over views; see the module docstring."""

    warmup_views: int = 3
    """Untimed predictions before timing (the first views, cycled when there are fewer views)."""

    def __post_init__(self) -> None:
        if self.warmup_views < 0:
            raise ValueError(f"warmup_views must be >= 0, got {self.warmup_views}")

    def run(
        self,
        predict: Callable[[View], torch.Tensor],
        views: Sequence[View],
        device: Union[torch.device, str],
        score: Optional[Callable[[View, torch.Tensor], None]] = None,
        progress: Optional[Callable[[Iterable[View]], Iterable[View]]] = None,
    ) -> ViewTimes:
        """Predicts every view once (after the warm-up), timing each prediction alone.

        Args:
            predict: Maps one view to its class ids [H, W] on ``device``.
            views: The views, in order.
            device: Where ``predict`` computes; synchronised around each timed call.
            score: Called with each view and its prediction, outside the clock.
            progress: Wraps the timed loop's iterable (e.g. a rich ``track``).

        Returns:
            The per-view times.
        """
        if views:
            for index in range(self.warmup_views):
                predict(views[index % len(views)])
        times = ViewTimes(warmup_views=self.warmup_views if views else 0)
        for view in progress(views) if progress is not None else views:
            synchronize(device)
            start = time.perf_counter()
            prediction = predict(view)  # [H, W]
            synchronize(device)
            times.times_ms.append(1000.0 * (time.perf_counter() - start))
            if score is not None:
                score(view, prediction)
        return times
