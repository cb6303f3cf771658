"""Stands in for module-level calls of ``SplatfactoModel.get_outputs`` (its rasterization, its camera transform), per
call and per thread.

nerfstudio 1.1.5's ``SplatfactoModel.get_outputs`` does everything around the rasterization that a
subclass wants to keep (camera optimiser, crop box, downscale schedule, ``strategy.step_pre_backward``,
background, bilateral grid, depth) and calls gsplat through the module-level name
``nerfstudio.models.splatfacto.rasterization``. A subclass that renders more channels therefore only
needs to change that call, not to copy the method. The same holds for its camera transform, the module-level
``get_viewmat`` (a ``torch.compile``-d function).

:func:`install` replaces those names (:data:`FORWARDED`), once, with forwarders. A forwarder calls what splatfacto
imported unless the calling thread entered :func:`rasterization_override` (or :func:`viewmat_override`), in which case
it calls the stand-in given there. The stand-ins live in a :class:`contextvars.ContextVar`, so a viewer thread
rendering while the trainer renders never sees the other's stand-in, and plain splatfacto models in the same process
are unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from types import MappingProxyType
from typing import Callable, Dict, Iterator, Mapping, Tuple

from torch import Tensor

RasterResult = Tuple[Tensor, Tensor, Dict]
"""What gsplat's ``rasterization`` returns: render [C, H, W, X], alphas [C, H, W, 1] and the info dict."""
RasterFunction = Callable[..., RasterResult]

FORWARDED = ("rasterization", "get_viewmat")
"""Module-level names of ``nerfstudio.models.splatfacto`` that ``get_outputs`` calls and :func:`install` forwards."""

_OVERRIDES: contextvars.ContextVar[Mapping[str, Callable]] = contextvars.ContextVar(
    "splatfacto_call_overrides", default=MappingProxyType({})
)
_INSTALL_LOCK = threading.Lock()


class _Forwarder:
    """Takes the place of one of splatfacto's module-level names (:data:`FORWARDED`).

    Args:
        name: The name it replaces.
        original: What splatfacto imported under that name (e.g. gsplat's ``rasterization``).
    """

    def __init__(self, name: str, original: Callable):
        self.name = name
        self.original = original

    def __call__(self, *args, **kwargs):
        override = _OVERRIDES.get().get(self.name)
        return (self.original if override is None else override)(*args, **kwargs)


def install() -> None:
    """Puts the forwarders in place of splatfacto's :data:`FORWARDED` names (idempotent, thread-safe).

    Raises:
        RuntimeError: ``SplatfactoModel.get_outputs`` does not call one of them (another nerfstudio version): a
            stand-in would silently never be called.
    """
    import nerfstudio.models.splatfacto as splatfacto

    with _INSTALL_LOCK:
        for name in FORWARDED:
            if isinstance(getattr(splatfacto, name, None), _Forwarder):
                continue
            if name not in splatfacto.SplatfactoModel.get_outputs.__code__.co_names:
                raise RuntimeError(
                    f"SplatfactoModel.get_outputs no longer calls the module-level `{name}` "
                    "(semsplat supports nerfstudio 1.1.5); the semantic channels cannot be rendered."
                )
            setattr(splatfacto, name, _Forwarder(name, getattr(splatfacto, name)))


@contextlib.contextmanager
def _override(name: str, function: Callable) -> Iterator[None]:
    install()
    token = _OVERRIDES.set({**_OVERRIDES.get(), name: function})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def rasterization_override(function: RasterFunction) -> contextlib.AbstractContextManager:
    """Within the block, splatfacto's rasterization call (in this thread) goes to ``function``.

    Args:
        function: Called with the keyword arguments splatfacto passes to gsplat's ``rasterization``;
            must return what that returns, with the channels splatfacto reads (RGB, then depth last
            when the render mode has one).
    """
    return _override("rasterization", function)


def viewmat_override(function: Callable[[Tensor], Tensor]) -> contextlib.AbstractContextManager:
    """Within the block, splatfacto's camera transform (``get_viewmat``, in this thread) goes to ``function``.

    Args:
        function: Camera-to-world poses [C, 3, 4] -> world-to-camera transforms [C, 4, 4] in OpenCV axes, the
            values of splatfacto's ``get_viewmat``.
    """
    return _override("get_viewmat", function)
