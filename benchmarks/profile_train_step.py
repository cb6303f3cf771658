"""Where a semsplat training step spends its time: ms/step of a few variants, and a cProfile of one.

Runs the first ``--iterations`` steps of the 30k schedule (GPU box; works on CPU too, slowly) for each
variant and prints ms/step over the last half of them; the first variant also runs under cProfile, whose
top entries go to ``--out``/profile_<variant>.txt. The variants isolate what semsplat adds to
splatfacto's step:

- ``semsplat``: the paper preset;
- ``no-agg``: without the 2D/3D aggregation losses;
- ``rgb-only``: every semantic loss off (splatfacto's work plus rendering 16 more channels).

    python benchmarks/profile_train_step.py --scene .scenes/townA --iterations 1500 --out /tmp/profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_semsplat import build_config  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402

VARIANTS = {
    "semsplat": {},
    "no-agg": dict(agg2d_loss_weight=0.0, agg3d_loss_weight=0.0),
    "rgb-only": dict(semantic_loss_weight=0.0, pseudo_loss_weight=0.0, agg2d_loss_weight=0.0, agg3d_loss_weight=0.0),
}


class StepClock:
    """Training callback that stamps the wall time of every step (after a CUDA sync)."""

    def __init__(self) -> None:
        self.stamps: List[float] = []
        """``time.perf_counter()`` after each step."""

    def __call__(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())


def run_variant(
    scene: Path, variant: str, iterations: int, output_dir: Path, profile_to: Optional[Path] = None
) -> dict:
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    config = build_config(scene, "semsplat", 30_000, output_dir, VARIANTS[variant])
    config.max_num_iterations = iterations
    config.steps_per_save = 10 * iterations
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    clock = StepClock()
    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], clock))
    profiler = cProfile.Profile() if profile_to is not None else None
    if profiler is not None:
        profiler.enable()
    trainer.train()
    if profiler is not None and profile_to is not None:
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        profile_to.write_text(text.getvalue())
    half = clock.stamps[len(clock.stamps) // 2 :]
    ms = 1000 * (half[-1] - half[0]) / max(1, len(half) - 1)
    return dict(
        variant=variant,
        iterations=iterations,
        ms_per_step_second_half=ms,
        n_gaussians=int(trainer.pipeline.model.num_points),
        profiled=bool(profiler),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    parser.add_argument("--out", type=Path, default=Path("profile-out"))
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/profile-runs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, variant in enumerate(args.variant or list(VARIANTS)):
        for profiled in [True, False] if index == 0 else [False]:
            target = args.out / f"profile_{variant}.txt" if profiled else None
            row = run_variant(args.scene, variant, args.iterations, args.output_dir, target)
            print(row, flush=True)
            rows.append(row)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    write_json_atomic(args.out / "step_times.json", dict(device=device, rows=rows), indent=1)


if __name__ == "__main__":
    main()
