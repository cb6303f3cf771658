"""GPU-box bootstrap (benchmarks only): use a gsplat CUDA extension built earlier on the same box.

gsplat 1.4.0 JIT-compiles its kernels on first use (~3 min). When GSPLAT_PREBUILT names a
``gsplat_cuda.so`` built by that JIT for the same torch/CUDA/Python, it is given to gsplat as the
``gsplat.csrc`` module that gsplat imports before falling back to JIT compilation.

The extension is loaded when something imports ``gsplat.csrc``, not when Python starts: this file runs at the
start of every interpreter on the box, and loading the extension there imported torch in each of them. The depth
workers of the pseudo labels (one spawned process per core, which import numpy and scipy only) then took 9.7 s
for townA's 90 views on 16 cores of an H100 box, where one worker alone took 32 s (2026-11-27): the bootstrap,
not the work, set the time that users' runs do not pay.
"""

import os

_prebuilt = os.environ.get("GSPLAT_PREBUILT")
if _prebuilt and os.path.exists(_prebuilt):
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import sys

    class _PrebuiltGsplat(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Finds ``gsplat.csrc`` as the prebuilt extension; every other import passes by."""

        def __init__(self, path: str) -> None:
            self.path = path

        def find_spec(self, fullname, path=None, target=None):
            if fullname != "gsplat.csrc":
                return None
            return importlib.machinery.ModuleSpec(fullname, self, origin=self.path)

        def create_module(self, spec):
            import torch  # noqa: F401  (the extension links against libtorch)

            # The extension's init function is named after gsplat_cuda, so it is loaded under that name.
            extension = importlib.util.spec_from_file_location("gsplat_cuda", self.path)
            # A path to an existing .so always gets a spec with a loader; anything else is not an extension module.
            if extension is None or extension.loader is None:
                raise ImportError(f"GSPLAT_PREBUILT={self.path} cannot be loaded as a Python extension module")
            module = importlib.util.module_from_spec(extension)
            extension.loader.exec_module(module)
            return module

        def exec_module(self, module) -> None:
            pass  # loaded in create_module

    sys.meta_path.insert(0, _PrebuiltGsplat(_prebuilt))
