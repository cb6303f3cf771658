"""semsplat: efficient semantic splatting for multi-view remote-sensing segmentation (nerfstudio plugin)."""
