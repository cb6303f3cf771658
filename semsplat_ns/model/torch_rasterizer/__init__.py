"""Pure-PyTorch 3D Gaussian rasterizer with the contract of ``gsplat.rasterization`` (gsplat 1.4.0).

gsplat is CUDA-only; this package lets splatfacto-style models train and render on a CPU (tests, CI,
laptops) with the same inputs, outputs and ``info`` dict. It follows gsplat's CUDA kernels semantically,
so images agree with gsplat to float rounding. One module per stage of gsplat's pipeline:

- ``rasterization``: :func:`rasterization_torch`, the public function: its contract, then the stages below.
- ``projection``: EWA projection of the 3D covariances into each camera, radii and culling.
- ``spherical_harmonics``: view-dependent colours from SH coefficients (:func:`spherical_harmonics_torch`).
- ``intersections``: which (Gaussian, pixel) pairs are composited: tiles, alpha threshold, early stop.
- ``compositing``: front-to-back alpha blending of those pairs, with the AbsGS gradient.
- ``errors``: :class:`RasterizationInputError`, raised for any argument outside the contract.

Everything after the gradient-free selection of intersections is ordinary autograd, so gradients reach
means, quats, scales, opacities, colours, backgrounds and viewmats.
"""

from semsplat_ns.model.torch_rasterizer.errors import RasterizationInputError
from semsplat_ns.model.torch_rasterizer.rasterization import rasterization_torch
from semsplat_ns.model.torch_rasterizer.spherical_harmonics import spherical_harmonics_torch

__all__ = ["RasterizationInputError", "rasterization_torch", "spherical_harmonics_torch"]
