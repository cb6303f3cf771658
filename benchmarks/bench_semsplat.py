"""Train and evaluate semsplat (or one of its ablation rows) on IRT scenes; append result rows.

Runs on the GPU box (never in CI). One row per (scene, method) goes to ``--out`` in the project's
benchmark format (see ``benchmarks/common.py``).

    python benchmarks/bench_semsplat.py --scene .scenes/townA --method semsplat --steps 30000 \
        --out benchmarks/results/semsplat.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import append_rows, result_row  # noqa: E402

# Table III rows of the paper as flag sets on the model config.
ABLATIONS = {
    "semsplat-baseline": dict(pseudo_loss_weight=0.0, agg2d_loss_weight=0.0, agg3d_loss_weight=0.0),
    "semsplat-pseudo": dict(agg2d_loss_weight=0.0, agg3d_loss_weight=0.0),
    "semsplat-pseudo-2d": dict(agg3d_loss_weight=0.0),
    "semsplat": dict(),
}


def build_config(scene: Path, method: str, steps: int, output_dir: Path, model_overrides: dict):
    from semsplat_ns.config import semsplat_trainer_config

    config = semsplat_trainer_config(max_steps=steps)
    config.vis = "tensorboard"
    config.output_dir = output_dir
    config.method_name = method
    config.steps_per_save = steps  # one checkpoint at the end
    config.steps_per_eval_image = 10 * steps  # no eval renders inside the timed loop
    config.pipeline.datamanager.data = scene
    for name, value in {**ABLATIONS[method], **model_overrides}.items():
        setattr(config.pipeline.model, name, value)
    if steps != 30_000:  # keep the paper's schedule proportional for shorter runs
        model = config.pipeline.model
        ratio = steps / 30_000
        model.stop_split_at = int(model.stop_split_at * ratio)
        model.warmup_length = int(model.warmup_length * ratio)
        model.resolution_schedule = max(1, int(model.resolution_schedule * ratio))
        model.sh_degree_interval = max(1, int(model.sh_degree_interval * ratio))
        model.stop_screen_size_at = int(model.stop_screen_size_at * ratio)
    config.set_timestamp()
    return config


def run_one(scene: Path, method: str, steps: int, out: Path, output_dir: Path, model_overrides: dict) -> dict:
    from semsplat_ns.scripts.eval import evaluate_pipeline, print_result

    config = build_config(scene, method, steps, output_dir, model_overrides)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
    result = evaluate_pipeline(trainer.pipeline, config.get_base_dir() / "eval-test")
    print_result(result)
    row = result_row(
        scene.name,
        method,
        miou=result["miou"],
        miou_present=result["miou_present"],
        acc=result["acc"],
        test_ms_per_view=result["test_ms_per_view"],
        train_s=train_s,
        steps=steps,
        peak_gpu_mem_gb=peak,
        n_gaussians=result["n_gaussians"],
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
    )
    append_rows(out, [row])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, action="append", required=True, help="IRT scene folder (repeatable)")
    parser.add_argument("--method", choices=sorted(ABLATIONS), action="append", help="method row (repeatable)")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "semsplat.json")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs-bench"))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="extra model config override, e.g. channel_chunk=16")
    args = parser.parse_args()
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig

    defaults, overrides = SemSplatModelConfig(), {}
    for item in args.set:
        name, value = item.split("=", 1)
        kind = type(getattr(defaults, name))
        overrides[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    for scene in args.scene:
        for method in args.method or ["semsplat"]:
            row = run_one(scene, method, args.steps, args.out, args.output_dir, overrides)
            print({k: row[k] for k in ("scene", "method", "miou", "miou_present", "acc", "test_ms_per_view", "train_s", "peak_gpu_mem_gb", "n_gaussians")}, flush=True)


if __name__ == "__main__":
    main()
