"""GPU-box bootstrap (benchmarks only): use a gsplat CUDA extension built earlier on the same box.

gsplat 1.4.0 JIT-compiles its kernels on first use (~3 min). When GSPLAT_PREBUILT names a
``gsplat_cuda.so`` built by that JIT for the same torch/CUDA/Python, it is registered as the
``gsplat.csrc`` module that gsplat imports before falling back to JIT compilation.
"""

import os

_prebuilt = os.environ.get("GSPLAT_PREBUILT")
if _prebuilt and os.path.exists(_prebuilt):
    import importlib.util
    import sys

    import torch  # noqa: F401  (the extension links against libtorch)

    _spec = importlib.util.spec_from_file_location("gsplat_cuda", _prebuilt)
    # A path to an existing .so always gets a spec with a loader; anything else is not an extension module.
    if _spec is None or _spec.loader is None:
        raise ImportError(f"GSPLAT_PREBUILT={_prebuilt} cannot be loaded as a Python extension module")
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    sys.modules["gsplat.csrc"] = _module
