"""Parity of the pure-PyTorch rasterizer (CPU) with gsplat's CUDA rasterizer on identical inputs.

For a few scene sizes, renders the same random Gaussians with ``gsplat.rasterization`` on the GPU and
``rasterization_torch`` on the CPU, back-propagates the same random loss through both, and reports
the largest absolute difference of colours, alphas, radii and every gradient (means, quats, scales,
opacities, colors, means2d and its AbsGS ``absgrad``), next to the largest magnitude of gsplat's value.

Run on a machine with a CUDA GPU and gsplat 1.4.0::

    python benchmarks/raster_parity.py --out parity.json
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

import torch
from rich.progress import Progress

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.model.torch_rasterizer import rasterization_torch

LEAVES = ("means", "quats", "scales", "opacities", "colors")


@dataclass
class ParityCase:
    """One comparison."""

    num_gaussians: int
    """Number of Gaussians N."""
    num_cameras: int
    """Number of cameras C rendered in one call."""
    width: int
    """Image width."""
    height: int
    """Image height."""
    channels: int
    """Feature channels D (19 = RGB + 16 semantic features, as semsplat renders)."""
    render_mode: str
    """gsplat render mode."""
    packed: bool
    """gsplat's packed flag."""
    rasterize_mode: str = "classic"
    """"classic" or "antialiased"."""
    scale_max: float = 0.08
    """Largest Gaussian scale (world units; the scene spans [-1, 1]^3 seen from ~3 units)."""


DEFAULT_CASES = [
    ParityCase(200, 2, 48, 32, 3, "RGB", False),
    ParityCase(2000, 1, 64, 64, 19, "RGB+ED", False),
    ParityCase(2000, 2, 64, 64, 19, "RGB+ED", True, "antialiased"),
    ParityCase(5000, 1, 128, 96, 16, "RGB", False, scale_max=0.2),
    ParityCase(20000, 1, 256, 256, 19, "RGB+ED", False, scale_max=0.05),
]


def make_inputs(case: ParityCase, seed: int) -> Dict[str, torch.Tensor]:
    """Random Gaussians in [-1, 1]^3 and cameras on a circle looking at the origin (float32, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    n = case.num_gaussians
    inputs = dict(
        means=torch.rand(n, 3, generator=gen) * 2 - 1,  # [N, 3]
        quats=torch.randn(n, 4, generator=gen),  # [N, 4]
        scales=torch.exp(
            torch.rand(n, 3, generator=gen) * (math.log(case.scale_max) - math.log(0.005)) + math.log(0.005)
        ),  # [N, 3]
        opacities=torch.rand(n, generator=gen) * 0.95 + 0.02,  # [N]
        colors=torch.rand(n, case.channels, generator=gen),  # [N, D]
    )
    viewmats, Ks = [], []
    for c in range(case.num_cameras):
        angle = 2 * math.pi * c / case.num_cameras + 0.4
        eye = torch.tensor([3.0 * math.cos(angle), 3.0 * math.sin(angle), 1.2])
        forward = -eye / eye.norm()  # [3]
        right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        rotation = torch.stack([right, down, forward])  # [3, 3]
        viewmat = torch.eye(4)
        viewmat[:3, :3], viewmat[:3, 3] = rotation, -rotation @ eye
        viewmats.append(viewmat)
        focal = 1.2 * case.width
        Ks.append(torch.tensor([[focal, 0.0, case.width / 2], [0.0, focal, case.height / 2], [0.0, 0.0, 1.0]]))
    inputs["viewmats"] = torch.stack(viewmats)  # [C, 4, 4]
    inputs["Ks"] = torch.stack(Ks)  # [C, 3, 3]
    inputs["backgrounds"] = torch.rand(case.num_cameras, case.channels, generator=gen)  # [C, D]
    return inputs


def _grad(tensor: torch.Tensor) -> torch.Tensor:
    """The gradient the backward pass left on ``tensor`` (every compared input receives one)."""
    if tensor.grad is None:
        raise RuntimeError("no gradient reached a rasterizer input; the comparison needs every gradient")
    return tensor.grad


def render_and_backward(render_fn, inputs: Dict[str, torch.Tensor], case: ParityCase, device: str, seed: int):
    """Renders on ``device``, back-propagates a fixed random loss, returns CPU copies and timings."""
    tensors = {k: v.to(device) for k, v in inputs.items()}
    for name in LEAVES:
        tensors[name] = tensors[name].detach().requires_grad_(True)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    colors, alphas, info = render_fn(
        **tensors,
        width=case.width,
        height=case.height,
        render_mode=case.render_mode,
        packed=case.packed,
        rasterize_mode=case.rasterize_mode,
        absgrad=True,
    )
    info["means2d"].retain_grad()
    synchronize()
    forward_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed + 1)
    weights_c = torch.randn(colors.shape, generator=gen).to(device)
    weights_a = torch.randn(alphas.shape, generator=gen).to(device)
    start = time.perf_counter()
    ((colors * weights_c).sum() + (alphas * weights_a).sum()).backward()
    synchronize()
    backward_s = time.perf_counter() - start
    out = dict(
        colors=colors.detach().cpu(),
        alphas=alphas.detach().cpu(),
        radii=info["radii"].cpu(),
        means2d_grad=_grad(info["means2d"]).cpu(),
        means2d_absgrad=info["means2d"].absgrad.cpu(),
        **{f"{name}_grad": _grad(tensors[name]).cpu() for name in LEAVES},
    )
    if case.packed:
        # scatter the per-(camera, Gaussian) entries to [C, N, ...] so that both sides line up
        camera_ids, gaussian_ids = info["camera_ids"].cpu(), info["gaussian_ids"].cpu()
        shape = (case.num_cameras, case.num_gaussians)
        for key in ("radii", "means2d_grad", "means2d_absgrad"):
            dense = torch.zeros(shape + out[key].shape[1:], dtype=out[key].dtype)
            dense[camera_ids, gaussian_ids] = out[key]
            out[key] = dense
    return out, forward_s, backward_s


def compare(case: ParityCase, seed: int) -> Dict:
    """One case: gsplat CUDA vs the PyTorch rasterizer on CPU."""
    from gsplat.rendering import rasterization as gsplat_rasterization

    inputs = make_inputs(case, seed)
    # warm-up: the first CUDA call pays for kernel loading
    render_and_backward(gsplat_rasterization, inputs, case, "cuda", seed)
    ours, ours_fwd, ours_bwd = render_and_backward(rasterization_torch, inputs, case, "cpu", seed)
    ref, ref_fwd, ref_bwd = render_and_backward(gsplat_rasterization, inputs, case, "cuda", seed)
    keys = ["colors", "alphas", "means2d_grad", "means2d_absgrad"] + [f"{name}_grad" for name in LEAVES]
    max_abs_diff, max_abs_ref = {}, {}
    for key in keys:
        max_abs_diff[key] = float((ours[key].double() - ref[key].double()).abs().max()) if ref[key].numel() else 0.0
        max_abs_ref[key] = float(ref[key].double().abs().max()) if ref[key].numel() else 0.0
    return dict(
        case=asdict(case),
        visible=int((ref["radii"] > 0).sum()),
        radii_equal=torch.equal(ours["radii"], ref["radii"]),
        radii_mismatches=int((ours["radii"] != ref["radii"]).sum()),
        max_abs_diff=max_abs_diff,
        max_abs_gsplat=max_abs_ref,
        pixels_colour_diff_over_1e_3=int(((ours["colors"] - ref["colors"]).abs().amax(-1) > 1e-3).sum()),
        seconds=dict(
            torch_cpu_forward=ours_fwd, torch_cpu_backward=ours_bwd, gsplat_forward=ref_fwd, gsplat_backward=ref_bwd
        ),
    )


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scenes and losses")
    parser.add_argument("--quick", action="store_true", help="only the two smallest cases")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("raster_parity.py needs a CUDA GPU (gsplat's kernels are the reference)")

    cases = DEFAULT_CASES[:2] if args.quick else DEFAULT_CASES
    results = []
    with Progress() as progress:
        task = progress.add_task("parity cases", total=len(cases))
        for index, case in enumerate(cases):
            results.append(compare(case, args.seed + index))
            progress.advance(task)
    for result in results:
        case = result["case"]
        print(
            f"N={case['num_gaussians']} C={case['num_cameras']} {case['width']}x{case['height']} "
            f"D={case['channels']} {case['render_mode']} packed={case['packed']} {case['rasterize_mode']}: "
            f"visible={result['visible']} radii_equal={result['radii_equal']}"
        )
        for key, diff in result["max_abs_diff"].items():
            print(f"    {key:18s} max|diff| {diff:.3e}   max|gsplat| {result['max_abs_gsplat'][key]:.3e}")
        print("    seconds", {k: round(v, 4) for k, v in result["seconds"].items()})
    payload = dict(
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name(0),
        cpu=platform.processor() or platform.machine(),
        cpu_threads=torch.get_num_threads(),
        results=results,
    )
    if args.out is not None:
        write_json_atomic(args.out, payload)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
