"""Train and evaluate semsplat (or one of its ablation rows) on IRT scenes; append result rows.

Runs on the GPU box (never in CI). One row per (scene, method) goes to ``--out`` in the project's
benchmark format (see ``benchmarks/common.py``).

    python benchmarks/bench_semsplat.py --scene .scenes/townA --method semsplat --steps 30000 \
        --out benchmarks/results/semsplat.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import append_rows, scored_row  # noqa: E402
from benchmarks.methods import METHODS  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402
from semsplat_ns.schedule import PAPER_STEPS, SCHEDULE_FIELDS, scaled_schedule  # noqa: E402

# Table III rows of the paper and the issue #12 rows as model-config overrides of the semsplat preset; the same
# methods as semsplat-batch settings (ns-train flags and a pseudo-label backend): benchmarks/methods.py.
ABLATIONS = {name: dict(method.model) for name, method in METHODS.items()}
DATAMANAGER_OVERRIDES = {name: dict(method.datamanager) for name, method in METHODS.items()}
PRIOR_OVERRIDES = {name: dict(method.prior) for name, method in METHODS.items()}
REPROJECT_OVERRIDES = {name: dict(method.reproject) for name, method in METHODS.items()}


def build_config(scene: Path, method: str, steps: int, output_dir: Path, model_overrides: dict):
    """The semsplat preset for one row: ``method``'s ablation flags plus ``model_overrides``, its schedule
    scaled to ``steps`` (the paper's is for 30k), one checkpoint at the end, no renders inside the loop."""
    from semsplat_ns.config import semsplat_trainer_config
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig

    config = semsplat_trainer_config(max_steps=steps)
    config.vis = "tensorboard"
    config.output_dir = output_dir
    # method_name stays "semsplat" so ns-viewer/ns-eval (which look it up) load every ablation's run.
    config.experiment_name = f"{scene.name}_{method}_{steps}"
    config.steps_per_save = steps  # one checkpoint at the end
    config.steps_per_eval_image = 10 * steps  # no eval renders inside the timed loop
    config.pipeline.datamanager.data = scene
    for name, value in {**ABLATIONS[method], **model_overrides}.items():
        setattr(config.pipeline.model, name, value)
    for name, value in DATAMANAGER_OVERRIDES[method].items():
        setattr(config.pipeline.datamanager, name, value)
    prior = config.pipeline.datamanager.pseudo_prior  # type: ignore[attr-defined]
    for name, value in PRIOR_OVERRIDES[method].items():
        # The prior's own settings (threshold, margin) or, as their shared flags do, its Unet recipe's.
        setattr(prior if hasattr(prior, name) else prior.unet, name, value)
    for name, value in REPROJECT_OVERRIDES[method].items():
        setattr(config.pipeline.datamanager.pseudo_reproject, name, value)  # type: ignore[attr-defined]
    if steps != PAPER_STEPS:  # keep the paper's schedule proportional for shorter runs
        model = config.pipeline.model
        assert isinstance(model, SemSplatModelConfig), "the semsplat preset builds a SemSplatModelConfig"
        defaults = {name: int(getattr(model, name)) for name in SCHEDULE_FIELDS}
        for name, value in scaled_schedule(defaults, steps).items():
            setattr(model, name, value)
    config.set_timestamp()
    return config


def train_one(scene: Path, method: str, steps: int, output_dir: Path, model_overrides: dict, jobs_sharing_gpu: int = 1):
    """Trains one row's model; returns what its row needs besides the evaluation (the "state") and
    the trained pipeline. ``jobs_sharing_gpu`` (trainings on the GPU at once) is recorded in the row."""
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
    state = dict(
        scene=scene.name,
        method=method,
        steps=steps,
        train_s=train_s,
        peak_gpu_mem_gb=peak,
        config=str(config.get_base_dir() / "config.yml"),
        jobs_sharing_gpu=jobs_sharing_gpu,
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
    )
    return state, trainer.pipeline


def eval_one(state: dict, pipeline, out: Path) -> dict:
    """Evaluates a trained pipeline on the test split and appends its row to ``out``."""
    from semsplat_ns.eval.evaluate import evaluate_pipeline, print_result

    result = evaluate_pipeline(pipeline, Path(state["config"]).parent / "eval-test")
    print_result(result)
    row = scored_row(
        state["scene"],
        state["method"],
        result,
        train_s=state["train_s"],
        steps=state["steps"],
        peak_gpu_mem_gb=state["peak_gpu_mem_gb"],
        n_gaussians=result["n_gaussians"],
        command=state["command"],
    )
    # Training runs that shared the GPU have slower train_s; the row says how many ran at once.
    row["jobs_sharing_gpu"] = state.get("jobs_sharing_gpu", 1)
    # Set by the caller when other trainings still ran during this evaluation.
    row["test_ms_shared_gpu"] = os.environ.get("SEMSPLAT_TEST_SHARED_GPU") == "1"
    append_rows(out, [row])
    return row


def eval_from_state(state_path: Path, out: Path) -> dict:
    """Loads the checkpoint a ``--stage train`` run left and evaluates it (``--stage eval``)."""
    from nerfstudio.utils.eval_utils import eval_setup

    state = json.loads(state_path.read_text())
    _, pipeline, _, _ = eval_setup(Path(state["config"]), test_mode="test")
    return eval_one(state, pipeline, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, action="append", required=True, help="IRT scene folder (repeatable)")
    parser.add_argument("--method", choices=sorted(ABLATIONS), action="append", help="method row (repeatable)")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "semsplat.json")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs-bench"))
    parser.add_argument(
        "--stage",
        choices=("all", "train", "eval"),
        default="all",
        help="train: train only and write --state; eval: evaluate the run a --state names "
        "(so evaluations can wait until concurrent trainings are done)",
    )
    parser.add_argument(
        "--jobs-sharing-gpu",
        type=int,
        default=1,
        help="how many trainings share the GPU with this one (recorded in the row)",
    )
    parser.add_argument("--state", type=Path, help="JSON handed from --stage train to --stage eval")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="extra model config override, e.g. channel_chunk=16",
    )
    args = parser.parse_args()
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig

    defaults, overrides = SemSplatModelConfig(), {}
    for item in args.set:
        name, value = item.split("=", 1)
        kind = type(getattr(defaults, name))
        overrides[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    if args.stage != "all" and (args.state is None or len(args.scene) * len(args.method or [1]) != 1):
        parser.error("--stage train/eval needs --state and exactly one --scene and --method")
    if args.stage == "eval":
        row = eval_from_state(args.state, args.out)
        print({k: row[k] for k in ("scene", "method", "miou", "acc", "test_ms_per_view", "train_s")}, flush=True)
        return
    for scene in args.scene:
        for method in args.method or ["semsplat"]:
            state, pipeline = train_one(scene, method, args.steps, args.output_dir, overrides, args.jobs_sharing_gpu)
            if args.stage == "train":
                write_json_atomic(args.state, state)
                continue
            row = eval_one(state, pipeline, args.out)
            print(
                {
                    k: row[k]
                    for k in (
                        "scene",
                        "method",
                        "miou",
                        "miou_present",
                        "acc",
                        "test_ms_per_view",
                        "train_s",
                        "peak_gpu_mem_gb",
                        "n_gaussians",
                    )
                },
                flush=True,
            )


if __name__ == "__main__":
    main()
