"""Tensors a training step derives from its batch, kept for the next step that gets the same batch tensor.

The datamanager hands out the same tensors for a view every time it draws it (its cached images and label maps), so
what a step derives from them alone (a label map sampled at the render's size, the photo as floats at the render's
size) is the same on every draw at the same downscale factor. :class:`DerivedTensors` keeps those results, keyed by
the source tensor's identity and the settings they were computed with, for as long as the source lives.
"""

from __future__ import annotations

import weakref
from typing import Callable, Dict, Hashable, Optional, Tuple

from torch import Tensor

Derive = Callable[[Tensor], Tensor]
"""Computes the derived tensor from its source."""


class DerivedTensors:
    """Tensors derived from source tensors, each kept while its source lives (and, with a capacity, while recent).

    An entry is keyed by its source's identity and a hashable key (e.g. the render's size); it holds the source by
    weak reference, so it goes when the source goes and a new tensor at a reused address never sees it. Sources
    must not change in place while their entries are used (the datamanager's cached views never do). A derived
    tensor that is its source (nothing to derive, e.g. a label map already at the render's size) is not kept: the
    entry would keep its own source alive.

    Args:
        capacity: Most entries kept (the oldest go first); None: no limit besides the sources' lifetimes.
    """

    def __init__(self, capacity: Optional[int] = None):
        self.capacity = capacity
        # (id of the source, key) -> (weak reference to the source, the derived tensor)
        self._entries: Dict[Tuple[int, Hashable], Tuple[weakref.ref, Tensor]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: Tensor, key: Hashable, derive: Derive) -> Tensor:
        """The tensor ``derive(source)`` computed for ``key``: the kept one when there is one, else computed now.

        Args:
            source: The tensor the result is derived from (not changed in place while entries of it are used).
            key: What else the result depends on (hashable), e.g. the render's size.
            derive: Computes the result from ``source`` (called with ``source`` only; ``key`` must say the rest).

        Returns:
            The derived tensor; a kept one is the same tensor object on every call (read it, never change it).
        """
        entry_key = (id(source), key)
        entry = self._entries.get(entry_key)
        if entry is not None and entry[0]() is source:
            return entry[1]
        derived = derive(source)
        if derived is source:
            return derived
        if self.capacity is not None:
            while len(self._entries) >= self.capacity > 0:
                self._entries.pop(next(iter(self._entries)))
            if self.capacity <= 0:
                return derived
        entries = self._entries

        def forget(reference: weakref.ref) -> None:  # the source was freed: its address may be reused
            if entries.get(entry_key, (None,))[0] is reference:
                del entries[entry_key]

        entries[entry_key] = (weakref.ref(source, forget), derived)
        return derived

    def clear(self) -> None:
        """Forgets every entry."""
        self._entries.clear()
