"""Stands in for the one rasterization call of ``SplatfactoModel.get_outputs``, per call and per thread.

nerfstudio 1.1.5's ``SplatfactoModel.get_outputs`` does everything around the rasterization that a
subclass wants to keep (camera optimiser, crop box, downscale schedule, ``strategy.step_pre_backward``,
background, bilateral grid, depth) and calls gsplat through the module-level name
``nerfstudio.models.splatfacto.rasterization``. A subclass that renders more channels therefore only
needs to change that call, not to copy the method.

:func:`install` replaces that name, once, with a forwarder. The forwarder calls gsplat's function (what
splatfacto imported) unless the calling thread entered :func:`rasterization_override`, in which case it
calls the stand-in given there. The stand-in lives in a :class:`contextvars.ContextVar`, so a viewer
thread rendering while the trainer renders never sees the other's stand-in, and plain splatfacto models
in the same process are unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Callable, Dict, Iterator, Optional, Tuple

from torch import Tensor

RasterResult = Tuple[Tensor, Tensor, Dict]
"""What gsplat's ``rasterization`` returns: render [C, H, W, X], alphas [C, H, W, 1] and the info dict."""
RasterFunction = Callable[..., RasterResult]

_OVERRIDE: contextvars.ContextVar[Optional[RasterFunction]] = contextvars.ContextVar(
    "splatfacto_rasterization_override", default=None
)
_INSTALL_LOCK = threading.Lock()


class _Forwarder:
    """Takes the place of ``nerfstudio.models.splatfacto.rasterization``.

    Args:
        original: The function splatfacto imported (gsplat's ``rasterization``).
    """

    def __init__(self, original: RasterFunction):
        self.original = original

    def __call__(self, **kwargs) -> RasterResult:
        override = _OVERRIDE.get()
        if override is None:
            return self.original(**kwargs)
        return override(**kwargs)


def install() -> None:
    """Puts the forwarder in place of splatfacto's ``rasterization`` (idempotent, thread-safe).

    Raises:
        RuntimeError: ``SplatfactoModel.get_outputs`` does not call a module-level ``rasterization``
            (another nerfstudio version): the stand-in would silently never be called.
    """
    import nerfstudio.models.splatfacto as splatfacto

    with _INSTALL_LOCK:
        if isinstance(getattr(splatfacto, "rasterization", None), _Forwarder):
            return
        if "rasterization" not in splatfacto.SplatfactoModel.get_outputs.__code__.co_names:
            raise RuntimeError(
                "SplatfactoModel.get_outputs no longer calls the module-level `rasterization` "
                "(semsplat supports nerfstudio 1.1.5); the semantic channels cannot be rendered."
            )
        splatfacto.rasterization = _Forwarder(splatfacto.rasterization)  # type: ignore[assignment]


@contextlib.contextmanager
def rasterization_override(function: RasterFunction) -> Iterator[None]:
    """Within the block, splatfacto's rasterization call (in this thread) goes to ``function``.

    Args:
        function: Called with the keyword arguments splatfacto passes to gsplat's ``rasterization``;
            must return what that returns, with the channels splatfacto reads (RGB, then depth last
            when the render mode has one).
    """
    install()
    token = _OVERRIDE.set(function)
    try:
        yield
    finally:
        _OVERRIDE.reset(token)
