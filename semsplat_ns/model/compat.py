"""What splatfacto 1.1.5 needs to run offline, on CPU and under torch >= 2.6, handled in the plugin.

- torchmetrics' LPIPS downloads AlexNet weights when it is *built*; machines without network (and
  CPU test boxes) cannot. We build it lazily on first use and skip the metric with one warning.
- torch >= 2.6 loads checkpoints with ``weights_only=True``; nerfstudio checkpoints hold numpy
  scalars (scheduler learning rates), so ``ns-viewer``/``ns-render``/``ns-eval`` fail with
  "Weights only load failed". We allow-list exactly those numpy types.
- ``SplatfactoModel.get_outputs`` moves the intrinsics with ``.cuda()``, which raises on a machine
  without CUDA. :func:`cuda_calls_stay_on` turns those calls into moves to the model's device,
  for the calling thread and only inside the block.
- splatfacto compiles its camera transform (``get_viewmat``, ``torch.compile``). Outside training its first
  call comes from the viewer's render thread, where a camera move interrupts the render by raising from a
  trace function; raised during compilation it arrives as ``InternalTorchDynamoError``, which the render
  thread does not catch, and the viewer stops rendering. :func:`renders_run_eagerly` runs it eagerly.
- ``ns-train`` turns cuDNN's benchmarking on for the whole process, so each new shape of a convolution first
  times every algorithm. Splatfacto's ground-truth downscaling is one small box-filter convolution whose shape
  changes with the resolution schedule: about 1.4 s of the first 30 steps went to timing it (cProfile, one H200,
  023e95c). :func:`cudnn_benchmark_off` lets cuDNN's heuristics pick at once.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from torch.overrides import TorchFunctionMode


def allow_numpy_scalars_in_checkpoints() -> None:
    """Allow-list the numpy scalar types nerfstudio checkpoints contain for ``torch.load``."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 loads everything anyway
        return
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore
    safe = [scalar, np.dtype]
    # numpy >= 1.25 pickles dtypes through their classes (np.dtypes.Float64DType, ...)
    dtypes_module = getattr(np, "dtypes", None)
    if dtypes_module is not None:
        safe += [getattr(dtypes_module, name) for name in dir(dtypes_module) if name.endswith("DType")]
    add_safe_globals(safe)


class LazyLPIPS:
    """LPIPS metric built on first call; returns NaN (and warns once) when it cannot be built.

    Deliberately not an ``nn.Module``: its weights do not belong in our checkpoints.
    """

    def __init__(self, normalize: bool = True, **kwargs):
        self._kwargs: Dict[str, Any] = dict(normalize=normalize, **kwargs)
        self._metric: Optional[torch.nn.Module] = None
        self._unavailable = False

    def __call__(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._unavailable:
            return torch.tensor(float("nan"))
        if self._metric is None:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._metric = LearnedPerceptualImagePatchSimilarity(**self._kwargs)
            except Exception as err:  # no network / no cached AlexNet weights
                self._unavailable = True
                warnings.warn(
                    "LPIPS is skipped: its AlexNet weights could not be loaded "
                    f"({type(err).__name__}: {err}). Put alexnet-owt-7be5be79.pth under "
                    "$TORCH_HOME/hub/checkpoints to enable it.",
                    stacklevel=2,
                )
                return torch.tensor(float("nan"))
        self._metric = self._metric.to(preds.device)
        return self._metric(preds, target)


@contextlib.contextmanager
def lazy_lpips_during_setup():
    """Within the block, building torchmetrics' LPIPS yields a :class:`LazyLPIPS` instead.

    Scoped to ``SplatfactoModel.populate_modules`` so that constructing the model never downloads.
    """
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = LazyLPIPS  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]


class _CudaCallsToDevice(TorchFunctionMode):
    """Torch function mode in which ``Tensor.cuda()`` moves the tensor to a given device instead."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cuda:
            return args[0].to(self.device)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def cuda_calls_stay_on(device: torch.device) -> Iterator[None]:
    """Within the block, ``tensor.cuda()`` means ``tensor.to(device)`` when ``device`` is not CUDA.

    Torch function modes are per thread, so a viewer thread rendering at the same time is unaffected.
    On a CUDA device nothing is changed (and nothing is paid per torch call).

    Args:
        device: The model's device.
    """
    if torch.device(device).type == "cuda":
        yield
        return
    with _CudaCallsToDevice(torch.device(device)):
        yield


@contextlib.contextmanager
def renders_run_eagerly() -> Iterator[None]:
    """Within the block, ``torch.compile``-d functions run eagerly (nothing is compiled).

    For renders outside training (viewer, ``ns-render``, evaluation): the only compiled function on that path
    is splatfacto's 3x4 camera transform, whose compilation costs seconds on the first render and gains
    nothing measurable per view. The stance is process-wide: a training thread inside the block also runs
    that transform eagerly, with the same result.
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:  # torch < 2.6: nothing to switch
        yield
        return
    with set_stance("force_eager"):
        yield


@contextlib.contextmanager
def cudnn_benchmark_off() -> Iterator[None]:
    """Within the block, cuDNN picks convolution algorithms by its heuristics instead of timing them (the
    process's ``torch.backends.cudnn.benchmark`` is restored after it). The flag is process-wide: a viewer thread
    convolving at the same time would not time its algorithms either."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
