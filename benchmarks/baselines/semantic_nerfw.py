"""Train and evaluate nerfstudio's ``semantic-nerfw`` (the Semantic-NeRF-style peer) on IRT scenes.

The TrainerConfig is nerfstudio's own ``method_configs["semantic-nerfw"]`` (deep-copied: 4096 rays per
batch, Adam 1e-2, nerfacto proposal sampling), pointed at the scene with
:func:`benchmarks.baselines.semantic_nerfw_adapter.adapt_semantic_nerfw_config`: RGB is trained on every
training view, the semantic cross-entropy only on the labelled pixels of the labelled views. After
training in-process, every test view is rendered with ``model.get_outputs_for_camera``, the argmax of
the ``semantics`` logits is scored with ONE confusion matrix over all test pixels
(:class:`~semsplat_ns.eval.metrics.SegmentationEvaluator`) and timed by the project's one per-view protocol
(:class:`~semsplat_ns.eval.timing.PerViewTiming`, as semsplat is), and one row (method ``"semantic-nerfw"``)
per scene goes to ``--out`` in the project's benchmark format (``benchmarks/common.py``).

    python benchmarks/baselines/semantic_nerfw.py --scene ../shared/data/townA --scene ../shared/data/townB \
        --steps 30000 --out benchmarks/results/semantic_nerfw.json

``--device cpu`` runs on CPU (slowly; nerfacto's hash grids fall back to their torch implementation
when tiny-cuda-nn is absent, and mixed precision is switched off).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.baselines.semantic_nerfw_adapter import IRTSemanticDataset, adapt_semantic_nerfw_config  # noqa: E402
from benchmarks.common import append_rows, scored_row  # noqa: E402
from semsplat_ns.eval.metrics import SegmentationEvaluator  # noqa: E402
from semsplat_ns.eval.timing import PerViewTiming  # noqa: E402

__all__ = ["METHOD", "build_config", "evaluate_semantic_nerfw", "evaluation_row", "run_scene", "main"]

METHOD = "semantic-nerfw"
"""Method name of the rows this benchmark writes."""

Device = Literal["cuda", "cpu"]
"""Devices the benchmark trains on (nerfstudio's ``machine.device_type``)."""


def build_config(
    scene: Path,
    steps: int,
    output_dir: Path,
    device: Device = "cuda",
    rays_per_batch: Optional[int] = None,
    eval_rays_per_chunk: Optional[int] = None,
):
    """nerfstudio's semantic-nerfw TrainerConfig on an IRT scene, for an in-process benchmark run.

    Args:
        scene: IRT scene folder.
        steps: Number of training iterations.
        output_dir: Folder for nerfstudio's run folders (config, checkpoint, tensorboard events).
        device: ``"cuda"`` or ``"cpu"``; CPU switches mixed precision off.
        rays_per_batch: Training rays per step; None keeps nerfstudio's 4096.
        eval_rays_per_chunk: Rays rendered at once at evaluation; None keeps nerfstudio's 65536.

    Returns:
        The TrainerConfig (timestamped, not yet saved).
    """
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.engine.trainer import TrainerConfig

    preset = method_configs[METHOD]
    # method_configs also holds placeholders of methods from other packages; semantic-nerfw is nerfstudio's own.
    if not isinstance(preset, TrainerConfig):
        raise RuntimeError(f"nerfstudio's {METHOD!r} preset is a {type(preset).__name__}, not a TrainerConfig")
    config = copy.deepcopy(preset)
    adapt_semantic_nerfw_config(config, scene)
    config.method_name = METHOD
    config.experiment_name = Path(scene).name
    config.output_dir = Path(output_dir)
    config.vis = "tensorboard"
    config.max_num_iterations = steps
    config.steps_per_save = steps  # one checkpoint, at the end
    # Keep nerfstudio's own evaluations out of the timed loop; the scene is scored afterwards.
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10 * steps + 1
    config.machine.device_type = device
    config.machine.num_devices = 1
    if device == "cpu":
        config.mixed_precision = False
    datamanager = config.pipeline.datamanager
    assert isinstance(datamanager, VanillaDataManagerConfig), "adapt_semantic_nerfw_config checked it"
    if rays_per_batch is not None:
        datamanager.train_num_rays_per_batch = rays_per_batch
        datamanager.eval_num_rays_per_batch = rays_per_batch
    if eval_rays_per_chunk is not None:
        config.pipeline.model.eval_num_rays_per_chunk = eval_rays_per_chunk
    config.set_timestamp()
    return config


@torch.no_grad()
def evaluate_semantic_nerfw(
    pipeline, show_progress: bool = True, timing: PerViewTiming = PerViewTiming()
) -> Dict[str, Any]:
    """Renders every evaluation view and scores the semantic argmax against its label.

    Args:
        pipeline: A set-up nerfstudio pipeline whose datamanager's ``eval_dataset`` is an
            :class:`IRTSemanticDataset` (the ``test`` split of the scene by default).
        show_progress: Show a rich progress bar over the views.
        timing: The project's per-view timing protocol (render + argmax of one view, warm-up first).

    Returns:
        :meth:`SegmentationEvaluator.compute`'s dict plus the timing fields of
        :meth:`~semsplat_ns.eval.timing.ViewTimes.as_fields` (``test_ms_per_view`` is the median) and
        ``n_views``.
    """
    dataset = pipeline.datamanager.eval_dataset
    if not isinstance(dataset, IRTSemanticDataset):
        raise ValueError(f"evaluate_semantic_nerfw: eval dataset is a {type(dataset).__name__}, not IRTSemanticDataset")
    model = pipeline.model
    device = torch.device(model.device)
    evaluator = SegmentationEvaluator(dataset.num_classes, list(dataset.semantics.classes))
    # The protocol times from a view's input already on the device: cameras are moved before the clock.
    views = [(index, dataset.cameras[index : index + 1].to(device)) for index in range(len(dataset))]

    def predict(view: Tuple[int, Cameras]) -> torch.Tensor:
        return model.get_outputs_for_camera(view[1])["semantics"].argmax(dim=-1)  # [H, W]

    def score(view: Tuple[int, Cameras], pred: torch.Tensor) -> None:
        target = dataset.read_semantics(view[0])[..., 0].to(device)  # [H, W]
        evaluator.update(pred, target)

    was_training = model.training
    model.eval()
    columns = (TextColumn("[bold]semantic-nerfw test views"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, transient=True, disable=not show_progress) as progress:
            times = timing.run(predict, views, device, score=score, progress=progress.track)
    finally:
        model.train(was_training)
    return {**evaluator.compute(), **times.as_fields(), "n_views": len(views)}


def evaluation_row(
    pipeline,
    scene_name: str,
    *,
    train_s: Optional[float],
    steps: Optional[int],
    peak_gpu_mem_gb: Optional[float],
    command: str,
    show_progress: bool = True,
    timing: PerViewTiming = PerViewTiming(),
) -> Dict[str, Any]:
    """Scores a trained pipeline on its evaluation views and returns the benchmark row.

    Args:
        pipeline: Trained pipeline (see :func:`evaluate_semantic_nerfw`).
        scene_name: Scene name for the row.
        train_s: Training wall time, seconds.
        steps: Training iterations.
        peak_gpu_mem_gb: Peak GPU memory, GiB; None on CPU.
        command: Command line that produced the row.
        show_progress: Show a rich progress bar over the views.
        timing: The per-view timing protocol (its default for every benchmark row).

    Returns:
        A row of :data:`benchmarks.common.ROW_KEYS` (method ``"semantic-nerfw"``, ``n_gaussians`` None), then
        ``test_ms_per_view_p95``, ``timing_warmup_views`` and ``per_class_iou``.
    """
    result = evaluate_semantic_nerfw(pipeline, show_progress=show_progress, timing=timing)
    device = torch.device(pipeline.model.device)
    row = scored_row(
        scene_name,
        METHOD,
        result,
        train_s=train_s,
        steps=steps,
        peak_gpu_mem_gb=peak_gpu_mem_gb,
        n_gaussians=None,
        command=command,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    )
    return row


def run_scene(
    scene: Path,
    steps: int,
    out: Path,
    output_dir: Path,
    device: Device,
    command: str,
    jobs_sharing_gpu: int = 1,
    **overrides,
) -> Dict[str, Any]:
    """Trains semantic-nerfw on one scene, scores it, and appends the row to ``out``.

    Args:
        scene: IRT scene folder.
        steps: Training iterations.
        out: JSON results file.
        output_dir: Folder for nerfstudio's run folders.
        device: ``"cuda"`` or ``"cpu"``.
        command: Command line recorded in the row.
        jobs_sharing_gpu: Trainings sharing the GPU with this one (recorded in the row).
        **overrides: ``rays_per_batch`` / ``eval_rays_per_chunk`` for :func:`build_config`.

    Returns:
        The row written.
    """
    config = build_config(scene, steps, output_dir, device, **overrides)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    row = evaluation_row(
        trainer.pipeline,
        Path(scene).resolve().name,
        train_s=train_s,
        steps=steps,
        peak_gpu_mem_gb=peak,
        command=command,
    )
    row["jobs_sharing_gpu"] = jobs_sharing_gpu  # train_s and test ms are slower when > 1
    append_rows(out, [row])
    return row


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Command line: one row per ``--scene``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, action="append", required=True, help="IRT scene folder (repeatable)")
    parser.add_argument("--steps", type=int, default=30_000, help="training iterations")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "semantic_nerfw.json",
        help="JSON results file; a (scene, method) row is replaced",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs-bench"), help="nerfstudio run folders")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--jobs-sharing-gpu",
        type=int,
        default=1,
        help="how many trainings share the GPU with this one (recorded in the row)",
    )
    parser.add_argument("--rays-per-batch", type=int, default=None, help="training rays per step (default 4096)")
    parser.add_argument("--eval-rays-per-chunk", type=int, default=None, help="rays per render chunk (default 65536)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available; use --device cpu")
    words = ["benchmarks/baselines/semantic_nerfw.py"] + (list(argv) if argv is not None else sys.argv[1:])
    command = "python " + " ".join(shlex.quote(word) for word in words)
    rows = []
    for scene in args.scene:
        row = run_scene(
            scene,
            args.steps,
            args.out,
            args.output_dir,
            args.device,
            command,
            jobs_sharing_gpu=args.jobs_sharing_gpu,
            rays_per_batch=args.rays_per_batch,
            eval_rays_per_chunk=args.eval_rays_per_chunk,
        )
        shown = ("scene", "method", "miou", "miou_present", "acc", "test_ms_per_view", "train_s", "peak_gpu_mem_gb")
        print({key: row[key] for key in shown}, flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
