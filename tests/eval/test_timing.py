"""The one per-view timing protocol: warm-up, one timed prediction per view, scoring outside the clock."""

from __future__ import annotations

import time
from typing import Iterable, List, Tuple

import pytest
import torch

from semsplat_ns.eval import timing
from semsplat_ns.eval.timing import PerViewTiming, ViewTimes


class FakeClock:
    """Stands in for ``time.perf_counter``: advances only when a test says so, so every time is exact."""

    def __init__(self) -> None:
        self.now = 0.0
        """Current time, seconds."""

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_warmup_is_untimed_and_every_view_is_timed_once(clock: FakeClock) -> None:
    views = ["a", "b", "c", "d"]
    calls: List[str] = []
    cost_s = {"a": 0.010, "b": 0.020, "c": 0.030, "d": 0.040}

    def predict(view: str) -> torch.Tensor:
        calls.append(view)
        clock.now += cost_s[view]
        return torch.zeros(2, 2, dtype=torch.long)  # [H, W]

    times = PerViewTiming(warmup_views=2).run(predict, views, "cpu")
    # Warm-up first (the first views), then each view once, in order.
    assert calls == ["a", "b", "a", "b", "c", "d"]
    assert times.warmup_views == 2 and len(times.times_ms) == len(views)
    assert times.times_ms == pytest.approx([10.0, 20.0, 30.0, 40.0])


def test_warmup_cycles_over_fewer_views_and_zero_warmup(clock: FakeClock) -> None:
    calls: List[str] = []

    def predict(view: str) -> torch.Tensor:
        calls.append(view)
        return torch.zeros(1, 1, dtype=torch.long)

    times = PerViewTiming(warmup_views=5).run(predict, ["x", "y"], "cpu")
    assert calls == ["x", "y", "x", "y", "x"] + ["x", "y"]
    assert len(times.times_ms) == 2
    calls.clear()
    times = PerViewTiming(warmup_views=0).run(predict, ["x", "y"], "cpu")
    assert calls == ["x", "y"] and times.warmup_views == 0
    # No view: nothing is predicted, nothing is timed, no figure.
    calls.clear()
    empty = PerViewTiming(warmup_views=3).run(predict, [], "cpu")
    assert calls == [] and empty.times_ms == [] and empty.median_ms is None and empty.p95_ms is None
    assert empty.warmup_views == 0


def test_score_gets_each_prediction_outside_the_clock(clock: FakeClock) -> None:
    views = [0, 1, 2]
    predictions = {view: torch.full((2, 3), view, dtype=torch.long) for view in views}  # [H, W] each
    scored: List[Tuple[int, torch.Tensor]] = []

    def predict(view: int) -> torch.Tensor:
        clock.now += 0.005
        return predictions[view]

    def score(view: int, prediction: torch.Tensor) -> None:
        scored.append((view, prediction))
        clock.now += 10.0  # slow scoring must not show in the times

    times = PerViewTiming(warmup_views=1).run(predict, views, "cpu", score=score)
    # Only timed predictions are scored (not the warm-up), each with its own view's prediction.
    assert [view for view, _ in scored] == views
    for view, prediction in scored:
        assert prediction is predictions[view]
    assert times.times_ms == pytest.approx([5.0, 5.0, 5.0])


def test_progress_wraps_the_timed_loop_only(clock: FakeClock) -> None:
    wrapped: List[List[str]] = []

    def progress(views: Iterable[str]) -> Iterable[str]:
        wrapped.append(list(views))
        return views

    PerViewTiming(warmup_views=2).run(lambda view: torch.zeros(1, 1), ["a", "b", "c"], "cpu", progress=progress)
    assert wrapped == [["a", "b", "c"]]


def test_median_and_p95_of_known_times() -> None:
    odd = ViewTimes(times_ms=[5.0, 1.0, 3.0, 2.0, 4.0])
    assert odd.median_ms == 3.0
    assert odd.p95_ms == 5.0  # rank round(0.95 * 5) = 5 of 5
    even = ViewTimes(times_ms=[4.0, 1.0, 3.0, 2.0])
    assert even.median_ms == 2.5
    assert even.p95_ms == 4.0
    hundred = ViewTimes(times_ms=[float(v) for v in range(100, 0, -1)], warmup_views=3)
    assert hundred.median_ms == 50.5
    assert hundred.p95_ms == 95.0  # the 95th smallest of 1..100
    assert ViewTimes(times_ms=[7.0]).p95_ms == 7.0
    fields = hundred.as_fields()
    assert fields == {
        "test_ms_per_view": 50.5,
        "test_ms_per_view_p95": 95.0,
        "timing_warmup_views": 3,
        "timed_views": 100,
    }


def test_real_clock_times_a_sleep() -> None:
    times = PerViewTiming(warmup_views=0).run(lambda view: (time.sleep(0.01), torch.zeros(1))[1], [0, 1], "cpu")
    assert all(t >= 9.0 for t in times.times_ms)


def test_negative_warmup_is_refused() -> None:
    with pytest.raises(ValueError, match="warmup_views"):
        PerViewTiming(warmup_views=-1)
