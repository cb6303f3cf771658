"""DerivedTensors: what a training step derives from a view's cached tensors, kept while they live."""

from __future__ import annotations

import gc

import torch

from semsplat_ns.model.step_cache import DerivedTensors


class CountingDerive:
    """Doubles its source and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return source * 2


def test_kept_per_source_and_key_and_gone_with_the_source():
    cache, derive = DerivedTensors(), CountingDerive()
    labels = torch.arange(6.0).reshape(2, 3)  # [2, 3]
    first = cache.get(labels, (1, 3), derive)
    assert cache.get(labels, (1, 3), derive) is first and derive.calls == 1
    assert torch.equal(first, labels * 2)
    assert cache.get(labels, (2, 3), derive) is not first and derive.calls == 2  # another key: computed
    other = labels.clone()  # equal values, another tensor: its own entry
    assert cache.get(other, (1, 3), derive) is not first and derive.calls == 3 and len(cache) == 3
    del labels, first
    gc.collect()
    assert len(cache) == 1  # both entries of the freed source went with it


def test_a_result_that_is_its_source_is_not_kept():
    cache = DerivedTensors()
    labels = torch.zeros(4, 4)
    assert cache.get(labels, "full size", lambda source: source) is labels and len(cache) == 0


def test_capacity_keeps_the_most_recent():
    cache, derive = DerivedTensors(capacity=1), CountingDerive()
    first, second = torch.ones(3), torch.zeros(3)
    kept = cache.get(first, 1, derive)
    assert cache.get(first, 1, derive) is kept and derive.calls == 1
    cache.get(second, 1, derive)
    assert len(cache) == 1 and derive.calls == 2
    assert cache.get(first, 1, derive) is not kept and derive.calls == 3  # evicted by the second
