"""How the pure-PyTorch rasterizer refuses an argument: one :class:`RasterizationInputError` saying which and why."""

from __future__ import annotations


class RasterizationInputError(ValueError):
    """An argument of :func:`rasterization_torch` has the wrong shape, value or is unsupported."""


def require(condition: bool, message: str) -> None:
    """States one part of the contract: raises :class:`RasterizationInputError` with ``message`` unless it holds."""
    if not condition:
        raise RasterizationInputError(f"rasterization_torch: {message}")
