"""Host time of a training step's optimiser stage: nerfstudio's one ``Adam.step`` per group against semsplat's steps
taken together (``SemSplatTrainerConfig.optimizers_step_together``, semsplat_ns/optimizers.py).

Sets up the ``semsplat`` trainer on the procedural demo town (random Gaussians, no pseudo labels; every optimiser
group of the preset plus the camera optimiser), then times the stage as nerfstudio's ``train_iteration`` runs it:
clear the gradients, hand each parameter a gradient (precomputed, outside the clock's interest but inside the
loop), step every group. With few Gaussians the kernels are tiny and the figure is the host's overhead, which is
what the GPU box's step waits on (issue #13). Both modes run on one trainer in alternating rounds; the JSON gives
each mode's median µs per stage and their ratio.

    python benchmarks/optimizer_step_overhead.py --device cpu --out benchmarks/results/profile/optimizer_step.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semsplat_ns.atomic import write_json_atomic  # noqa: E402

MODES = ("apart", "together")
"""nerfstudio's per-group steps; semsplat's steps taken together."""


def set_up_trainer(root: Path, device: str, gaussians: int):
    """The ``semsplat`` trainer on a 10-view demo town under ``root``, ``gaussians`` random Gaussians, with
    nerfstudio's own optimisers (the steps together are made from them per round, :func:`time_stage`)."""
    from semsplat_ns.config import semsplat_trainer_config
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig
    from semsplat_ns.synthetic.scene_writer import make_scene

    scene = make_scene(root / "town", n_views=10, resolution=33, n_labelled=2, seed=11)
    config = semsplat_trainer_config(max_steps=1000)
    assert device in ("cpu", "cuda"), device
    config.machine.device_type = "cuda" if device == "cuda" else "cpu"
    config.vis = "tensorboard"
    config.output_dir = root / "runs"
    datamanager, model = config.pipeline.datamanager, config.pipeline.model
    assert isinstance(datamanager, SemSplatDataManagerConfig) and isinstance(model, SemSplatModelConfig)
    datamanager.data = scene
    datamanager.auto_pseudo_labels = "off"
    model.camera_optimizer.mode = "SO3xR3"
    model.random_init = True
    model.num_random = gaussians
    config.optimizers_step_together = False
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def time_stage(trainer, together: bool, steps: int) -> float:
    """Median host µs of ``steps`` optimiser stages in the given mode."""
    from semsplat_ns.optimizers import SteppedTogetherOptimizers

    optimizers = SteppedTogetherOptimizers.of(trainer.optimizers) if together else trainer.optimizers
    names = list(optimizers.optimizers)
    params = [p for optimizer in optimizers.optimizers.values() for g in optimizer.param_groups for p in g["params"]]
    gradients = [torch.full_like(p, 1e-3) for p in params]
    synchronize = torch.cuda.synchronize if params[0].is_cuda else (lambda: None)
    seconds: List[float] = []
    for _ in range(steps):
        synchronize()
        start = time.perf_counter()
        optimizers.zero_grad_some(names)
        for param, gradient in zip(params, gradients):
            param.grad = gradient
        optimizers.optimizer_scaler_step_some(trainer.grad_scaler, names)
        synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gaussians", type=int, default=64, help="random Gaussians (few: the host's overhead)")
    parser.add_argument("--steps", type=int, default=1000, help="stages timed per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of both modes")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    parser.add_argument("--commit", default="", help="stamped into the JSON")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="the demo town and the run's folder (default: a new temp folder)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    # kept, not removed at the end: nerfstudio's event writers are global and may still write there
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="optimizer_step_"))
    trainer = set_up_trainer(work_dir, args.device, args.gaussians)
    time_stage(trainer, True, 3)  # the Adam state exists (torch's first step makes it)
    rounds: Dict[str, List[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            rounds[mode].append(time_stage(trainer, mode == "together", args.steps))
    groups = list(trainer.optimizers.optimizers)
    medians = {mode: statistics.median(values) for mode, values in rounds.items()}
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "gaussians": args.gaussians,
        "groups": groups,
        "us_per_stage": medians,
        "rounds_us": rounds,
        "together_over_apart": medians["together"] / medians["apart"],
        "date": date.today().isoformat(),
        "commit": args.commit,
        "command": " ".join(sys.argv),
    }
    print({key: result[key] for key in ("device", "us_per_stage", "together_over_apart")})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
