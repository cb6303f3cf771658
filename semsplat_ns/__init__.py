"""semsplat: efficient semantic splatting for multi-view remote-sensing segmentation (nerfstudio plugin)."""

from semsplat_ns.errors import install_excepthook

# nerfstudio's commands import this package through its entry points before they read a scene: from then
# on a bad scene ends them with one line and exit code 2, not a traceback (see semsplat_ns.errors).
install_excepthook()
