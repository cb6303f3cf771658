"""How to rasterize RGB + 16 semantic channels with gsplat: one padded pass or split kernels.

gsplat compiles its rasterizer for channel counts 1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, ... and pads others:
RGB + 16 features + expected depth = 20 channels run as 32. ``channel_chunk=16`` shares one projection
and tile intersection and runs a 16-channel and a 4-channel kernel instead; rendering RGB and semantics
in two separate ``rasterization`` calls projects twice. GPU only.

    python benchmarks/raster_channels.py --out benchmarks/results/raster_channels.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Literal, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def random_scene(n: int, device: str, seed: int = 0) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``n`` small Gaussians in a flat slab under one nadir camera.

    Returns:
        [means [N, 3], quats [N, 4], scales [N, 3], opacities [N], rgb [N, 3], features [N, 16]], the
        world-to-camera matrix [1, 4, 4] and the intrinsics [1, 3, 3], on ``device``.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 2.0  # [N, 3] inside the unit cube
    means[:, 2] *= 0.2
    quats = torch.randn(n, 4, generator=g)  # [N, 4]
    scales = torch.rand(n, 3, generator=g) * 0.01 + 0.002  # [N, 3]
    opacities = torch.rand(n, generator=g) * 0.8 + 0.1  # [N]
    rgb = torch.rand(n, 3, generator=g)  # [N, 3]
    features = torch.randn(n, 16, generator=g)  # [N, 16]
    tensors = [t.to(device) for t in (means, quats, scales, opacities, rgb, features)]
    # one camera 3 units above the scene looking straight down (OpenCV axes: y down, z forward)
    viewmat = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 3], [0, 0, 0, 1]])[None].to(device)  # [1, 4, 4]
    K = torch.tensor([[515.0, 0, 256], [0, 515.0, 256], [0, 0, 1]])[None].to(device)  # [1, 3, 3]
    return tensors, viewmat, K


def time_ms(fn: Callable[[], None], repeats: int = 50) -> float:
    """Mean milliseconds of ``fn`` over ``repeats`` calls after 5 warm-up calls, by CUDA events."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", help="Gaussian counts (default 100k and 300k)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "raster_channels.json")
    args = parser.parse_args()
    from gsplat import rasterization

    from benchmarks.common import device_name, git_commit
    from semsplat_ns.atomic import write_json_atomic

    rows = []
    for n in args.n or [100_000, 300_000]:
        (means, quats, scales, opacities, rgb, features), viewmat, K = random_scene(n, "cuda")
        params = [t.requires_grad_(True) for t in (means, quats, scales, opacities, rgb, features)]

        def render(
            colors: torch.Tensor, channel_chunk: int = 32, render_mode: Literal["RGB", "RGB+ED"] = "RGB+ED"
        ) -> Tuple[torch.Tensor, torch.Tensor]:
            """One 512x512 rasterization of the scene's Gaussians with ``colors`` [N, D]: image, alpha."""
            image, alpha, _ = rasterization(
                means,
                quats,
                scales,
                opacities,
                colors,
                viewmat,
                K,
                width=512,
                height=512,
                packed=False,
                render_mode=render_mode,
                channel_chunk=channel_chunk,
            )
            return image, alpha  # [1, H, W, D(+1)], [1, H, W, 1]

        def one_pass(chunk: int) -> Callable[[bool], None]:
            def run(backward: bool) -> None:
                image, alpha = render(torch.cat([rgb, features], -1), channel_chunk=chunk)
                if backward:
                    (image.sum() + alpha.sum()).backward()

            return run

        def two_calls(backward: bool) -> None:
            image, alpha = render(rgb)
            sem, _ = render(features, channel_chunk=32, render_mode="RGB")
            if backward:
                (image.sum() + alpha.sum() + sem.sum()).backward()

        variants = {
            "one_pass_chunk32 (19+1 -> 32)": one_pass(32),
            "one_pass_chunk16 (16 + 4)": one_pass(16),
            "two_calls (3+1, 16)": two_calls,
        }
        for name, fn in variants.items():
            with torch.no_grad():
                fwd = time_ms(lambda: fn(False))
            fwd_bwd = time_ms(lambda: fn(True), repeats=30)
            for p in params:
                p.grad = None
            rows.append(
                dict(n_gaussians=n, variant=name, forward_ms=round(fwd, 3), forward_backward_ms=round(fwd_bwd, 3))
            )
            print(rows[-1], flush=True)
    payload = dict(device=device_name(), commit=git_commit(), resolution=512, rows=rows)
    write_json_atomic(args.out, payload)


if __name__ == "__main__":
    main()
