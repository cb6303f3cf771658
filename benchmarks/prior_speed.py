"""Issue #13: how fast the prior's training step runs under each way of running it, and how long each
pseudo-label stage takes.

Two kinds of rows, printed and written as a JSON list to ``--out``:

* one per step variant (:data:`VARIANTS`, each a real setting of :class:`~semsplat_ns.pseudo.unet.UnetRecipe`):
  ms per training step of the prior (the recipe's batch: 4 labelled + 4 reprojected crops of 256 px, on the
  scene's own views and reprojected labels), warm-up steps excluded, a device-synced clock around each block of
  steps, the median over blocks; and whether the variant is deterministic (two short runs from one seed give the
  same weights bit for bit) and how far its weights are from the eager step's after those steps;
* one per scene (variant ``"stages"``): the wall time of each CPU/GPU stage of ``ns-train``'s automatic pseudo
  labels, run once as the pipeline runs them (seed points, depth, photos, reprojection, prediction, writing; the
  prediction with the benchmark's barely trained network, whose time does not depend on its weights; the files are
  written into a temporary folder, never into the scene); with CUDA, reprojection once more on the GPU as ``ns-train``
  runs it, its time and the number of carried labels that differ from the CPU's.

Variants that cannot run on the device (CUDA graphs on the CPU) get a row that says why, with no time.

``--gpu-busy`` runs one more block of each variant under torch's profiler and adds the GPU's busy ms per step (its
kernels' and copies' own time) beside that block's wall ms per step: a step whose GPU is busy for most of its wall
time is bound by the GPU (fewer pixels per step make it shorter), one busy for a small part of it waits on the host.

GPU box, from the repository root (about 2-3 minutes on one H100)::

    .venv/bin/python benchmarks/prior_speed.py .scenes/townA .scenes/townB --out $OUT/prior_speed.json

Whether the default step (a CUDA graph) waits on the GPU or on the host, and the same at 192-pixel crops::

    .venv/bin/python benchmarks/prior_speed.py .scenes/townA --variants cuda-graph --gpu-busy --check-steps 0 \
        --no-stages --out $OUT/prior_busy.json
    .venv/bin/python benchmarks/prior_speed.py .scenes/townA --variants cuda-graph --gpu-busy --check-steps 0 \
        --no-stages --prior.crop 192 --out $OUT/prior_busy_192.json
"""

from __future__ import annotations

import datetime
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import tyro
from torch._C._autograd import DeviceType  # the profiler events' device kind (torch.autograd re-exports it privately)
from torch.profiler import ProfilerActivity

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.common import busiest_events, device_name, git_commit  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402
from semsplat_ns.console import CONSOLE, progress_bar  # noqa: E402
from semsplat_ns.data.irt_io import IGNORE_ID  # noqa: E402
from semsplat_ns.geometry.visibility import ReprojectSettings  # noqa: E402
from semsplat_ns.pseudo.depths import compute_depths, scene_points, usable_cores  # noqa: E402
from semsplat_ns.pseudo.pipeline import labelled_references, reproject_views, write_views  # noqa: E402
from semsplat_ns.pseudo.prior import (  # noqa: E402
    PriorSettings,
    fitting_crop,
    predict_views,
    prior_pools,
    resolve_device,
)
from semsplat_ns.pseudo.scene import TrainSplit, read_labels, read_photos, read_scene  # noqa: E402
from semsplat_ns.pseudo.unet import CropSampler, UnetTraining, effective_step_runner, synchronize  # noqa: E402

VARIANTS: Dict[str, Dict[str, Any]] = {
    # The step as written: every kernel launched from Python, cuDNN's deterministic kernels picked by its heuristics.
    "eager": {"step_runner": "eager"},
    # cuDNN times its deterministic algorithms on the first steps and keeps the fastest.
    "eager-cudnn-benchmark": {"step_runner": "eager", "cudnn_benchmark": True},
    # cuDNN's fastest kernels, deterministic or not.
    "eager-nondeterministic": {"step_runner": "eager", "deterministic": False},
    # Forward, cross-entropy and backward replayed from one CUDA graph; AdamW and the schedule eager (the default).
    "cuda-graph": {"step_runner": "cuda-graph"},
    "cuda-graph-cudnn-benchmark": {"step_runner": "cuda-graph", "cudnn_benchmark": True},
    # The graph with cuDNN's fastest kernels, deterministic or not, timed on the first steps.
    "cuda-graph-nondeterministic": {"step_runner": "cuda-graph", "deterministic": False, "cudnn_benchmark": True},
    # torch.compile of the network (Inductor); its first steps compile.
    "compiled": {"step_runner": "compiled"},
}
"""Named ways of running the prior's step: settings of the prior's recipe."""

TOP_KERNELS = 12
"""Kernels listed by ``--gpu-busy``, busiest first."""


@dataclass
class PriorSpeedConfig:
    """Time the prior's training step per step variant and each pseudo-label stage once, on IRT scenes."""

    scenes: tyro.conf.Positional[Tuple[Path, ...]]
    """IRT scene folders (read only; nothing is written into them but the seed-point cache ns-train also writes)."""
    out: Path = field(default_factory=lambda: Path(os.environ.get("OUT", "benchmarks/results")) / "prior_speed.json")
    """JSON list of rows to write (replaced whole); default $OUT/prior_speed.json, else benchmarks/results/."""
    variants: Tuple[str, ...] = tuple(VARIANTS)
    """Step variants to time, names of :data:`VARIANTS`."""
    steps_on: str = "first"
    """Time the step variants on the first scene only (the step's shapes do not depend on the scene) or on all."""
    warmup_steps: int = 30
    """Untimed steps before the timed blocks (cuDNN benchmarking, graph capture and compilation happen here)."""
    block_steps: int = 50
    """Steps per timed block."""
    blocks: int = 5
    """Timed blocks; ms per step is the median over blocks."""
    check_steps: int = 12
    """Steps of the two short runs per variant that test determinism and distance to the eager step (0: none)."""
    gpu_busy: bool = False
    """Also run one block of each variant under torch's profiler: the GPU's busy ms per step beside its wall ms."""
    stages: bool = True
    """Also time the pseudo-label stages once per scene."""
    prior: PriorSettings = field(default_factory=PriorSettings)
    """The prior's recipe (its defaults: ns-train's); each variant changes only how the step runs."""
    work: Optional[Path] = None
    """Where the timed writing puts its files (a temporary folder inside, removed after); default: the system's."""


class PriorSpeedError(ValueError):
    """Settings of the benchmark that cannot work; the message names the flag or the file."""


def check_config(config: PriorSpeedConfig) -> None:
    """Raises :class:`PriorSpeedError` naming the flag (or the folder) of a setting that cannot work, before any long
    step."""
    unknown = [name for name in config.variants if name not in VARIANTS]
    if unknown:
        raise PriorSpeedError(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if config.steps_on not in ("first", "all"):
        raise PriorSpeedError(f"--steps-on must be first or all, got {config.steps_on!r}")
    for flag, value in (("--block-steps", config.block_steps), ("--blocks", config.blocks)):
        if value < 1:
            raise PriorSpeedError(f"{flag} must be at least 1, got {value}")
    if config.warmup_steps < 0 or config.check_steps < 0:
        raise PriorSpeedError("--warmup-steps and --check-steps must be at least 0")
    if config.prior.unet.steps < config.warmup_steps + (config.blocks + config.gpu_busy) * config.block_steps:
        raise PriorSpeedError(
            "--prior.steps (the schedule's length) must cover --warmup-steps + --blocks x --block-steps"
            + " (+ one block with --gpu-busy)"
        )
    for scene in config.scenes:
        if not Path(scene).is_dir():
            raise PriorSpeedError(f"{scene}: scene folder does not exist")


def versions() -> Dict[str, Any]:
    """Where the figures come from: device, torch, cuDNN, commit, date."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "device": device_name(),
        "torch": torch.__version__,
        "cudnn": cudnn,
        "commit": git_commit(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(shlex.quote(arg) for arg in sys.argv),
    }


@dataclass
class SceneData:
    """What the prior trains on and predicts, and the stage times that made it."""

    scene: TrainSplit
    photos: Dict[int, np.ndarray]
    labels_of: Dict[int, np.ndarray]
    carried_of: Dict[int, np.ndarray]
    stage_s: Dict[str, Any]


def run_stages(scene_dir: Path, settings: ReprojectSettings) -> SceneData:
    """Seed points, depth, photos and reprojection of one scene, each timed once, as the pipeline runs them.

    Args:
        scene_dir: The IRT scene.
        settings: The reprojection's tolerances.

    Returns:
        The photos, labels and reprojected labels, and the stage times in seconds.
    """
    stage_s: Dict[str, Any] = {}
    scene = read_scene(scene_dir)
    cache = scene.points_cache
    stage_s["points_cached"] = bool(cache is not None and cache.is_file())
    started = time.perf_counter()
    scene_points(scene)
    stage_s["points"] = time.perf_counter() - started
    views = sorted(set(scene.targets) | set(scene.labelled))
    started = time.perf_counter()
    depths = compute_depths(scene, views, "points")
    stage_s["depth"] = time.perf_counter() - started
    started = time.perf_counter()
    photos = read_photos(scene, views)
    labels_of = {i: read_labels(scene, i) for i in scene.labelled}
    stage_s["read_photos"] = time.perf_counter() - started

    def reproject_on(device: torch.device) -> Dict[int, np.ndarray]:
        references = labelled_references(scene, depths, labels_of, photos, device)
        return reproject_views(
            scene, sorted(scene.targets), depths, references, photos, scene.num_classes, settings, device
        )[1]

    started = time.perf_counter()
    carried_of = reproject_on(torch.device("cpu"))
    stage_s["reprojection"] = time.perf_counter() - started
    if torch.cuda.is_available():
        # ns-train reprojects on the GPU: its time, and how many carried labels differ from the CPU's (float
        # rounding at a tolerance's edge)
        reproject_on(torch.device("cuda"))  # warm-up: CUDA context and kernels
        started = time.perf_counter()
        carried_cuda = reproject_on(torch.device("cuda"))
        stage_s["reprojection_cuda"] = time.perf_counter() - started
        stage_s["reprojection_cuda_differing_pixels"] = int(
            sum(int((carried_cuda[i] != carried_of[i]).sum()) for i in carried_of)
        )
        stage_s["reprojection_pixels"] = int(sum(carried.size for carried in carried_of.values()))
    return SceneData(scene, photos, labels_of, carried_of, stage_s)


def scene_pools(data: SceneData, settings: PriorSettings, device: torch.device) -> List[Tuple[CropSampler, int]]:
    """The prior's crop pools on one scene, as :func:`~semsplat_ns.pseudo.prior.train_prior` builds them."""
    labelled = [(data.photos[i], data.labels_of[i]) for i in data.scene.labelled]
    propagated = [(data.photos[i], data.carried_of[i]) for i in data.scene.targets if i in data.carried_of]
    propagated = [(photo, carried) for photo, carried in propagated if (carried != IGNORE_ID).any()]
    crop = fitting_crop(settings, [photo.shape[:2] for photo, _ in labelled + propagated])
    return prior_pools(labelled, propagated, settings, crop, device)


def time_steps(
    training: UnetTraining, warmup: int, block_steps: int, blocks: int, gpu_busy: bool = False
) -> Dict[str, Any]:
    """ms per step of a training run: ``warmup`` untimed steps, then ``blocks`` blocks of ``block_steps`` steps, the
    device synced before and after each block; with ``gpu_busy``, one more block under torch's profiler.

    Returns:
        ``ms_per_step`` (median over blocks), ``ms_per_step_blocks``, ``warmup_s`` and ``final_loss``; with
        ``gpu_busy`` also ``profiled_ms_per_step`` (the profiled block's wall, profiler overhead included) and
        ``gpu_busy_ms_per_step`` (the device's kernels and copies, their own time; None off CUDA) and
        ``gpu_top_kernels`` (the :data:`TOP_KERNELS` busiest kernels with their ms per step; empty off CUDA).
    """
    device = training.device
    loss = torch.zeros(())

    def run(steps: int) -> float:
        """Wall seconds of ``steps`` steps, the device synced before and after."""
        nonlocal loss
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            loss = training.step()
        synchronize(device)
        return time.perf_counter() - started

    profiled: Dict[str, Any] = {}
    with training.kernel_settings():
        warmup_s = run(warmup)
        per_block = [1000.0 * run(block_steps) / block_steps for _ in range(blocks)]
        if gpu_busy:
            on_cuda = device.type == "cuda"
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
            with torch.profiler.profile(activities=activities) as profiler:
                wall_s = run(block_steps)
            # the kernels and copies themselves, busiest first
            kernels = busiest_events(profiler, DeviceType.CUDA, "self_device_time_total")
            busy_us = sum(e.self_device_time_total for e in kernels)
            profiled["profiled_ms_per_step"] = 1000.0 * wall_s / block_steps
            profiled["gpu_busy_ms_per_step"] = busy_us / 1000.0 / block_steps if on_cuda else None
            # what a GPU-bound step would have to shorten: its busiest kernels, ms per step each
            profiled["gpu_top_kernels"] = [
                {"kernel": e.key[:160], "ms_per_step": e.self_device_time_total / 1000.0 / block_steps}
                for e in kernels[:TOP_KERNELS]
            ]
    return {
        "ms_per_step": statistics.median(per_block),
        "ms_per_step_blocks": per_block,
        "warmup_s": warmup_s,
        "final_loss": float(loss.detach()),
        **profiled,
    }


def train_briefly(
    pools: Sequence[Tuple[CropSampler, int]],
    num_classes: int,
    settings: PriorSettings,
    device: torch.device,
    steps: int,
) -> Dict[str, torch.Tensor]:
    """The weights (on the CPU) after ``steps`` steps of a fresh training run (the recipe's seed)."""
    training = UnetTraining(pools, num_classes, settings.unet, device)
    with training.kernel_settings():
        for _ in range(steps):
            training.step()
    synchronize(device)
    return {name: value.detach().cpu().clone() for name, value in training.model.state_dict().items()}


def weights_difference(first: Dict[str, torch.Tensor], second: Dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over every float weight and buffer of two state dicts."""
    return max(
        float((first[name].double() - second[name].double()).abs().max())
        for name in first
        if first[name].is_floating_point()
    )


def variant_rows(
    scene_name: str,
    data: SceneData,
    config: PriorSpeedConfig,
    device: torch.device,
    about: Dict[str, Any],
) -> Tuple[List[Dict[str, Any]], Optional[UnetTraining]]:
    """One row per step variant of :attr:`PriorSpeedConfig.variants` on one scene; also the eager run's training
    (for the prediction stage), if eager ran."""
    rows: List[Dict[str, Any]] = []
    eager_training: Optional[UnetTraining] = None
    num_classes = data.scene.num_classes
    eager_weights: Optional[Dict[str, torch.Tensor]] = None
    for name in config.variants:
        settings = replace(config.prior, unet=replace(config.prior.unet, **VARIANTS[name]))
        recipe = settings.unet
        pools = scene_pools(data, settings, device)
        settings = replace(settings, unet=replace(recipe, crop=pools[0][0].crop))
        row: Dict[str, Any] = {"scene": scene_name, "variant": name, "settings": VARIANTS[name], **about}
        if effective_step_runner(recipe, device) != recipe.step_runner:
            row["skipped"] = f"the {recipe.step_runner} step runner needs CUDA; this device is {device}"
            CONSOLE.print(f"[yellow]{name}: skipped ({row['skipped']})")
            rows.append(row)
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        CONSOLE.print(f"{name}: timing {config.blocks} x {config.block_steps} steps after {config.warmup_steps}")
        training = UnetTraining(pools, num_classes, settings.unet, device)
        row.update(time_steps(training, config.warmup_steps, config.block_steps, config.blocks, config.gpu_busy))
        row["steps"] = config.blocks * config.block_steps
        row["batch"] = sum(count for _, count in pools)
        row["crop"] = settings.unet.crop
        if device.type == "cuda":
            row["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        if name == "eager":
            eager_training = training
        if config.check_steps > 0:
            first = train_briefly(pools, num_classes, settings, device, config.check_steps)
            second = train_briefly(pools, num_classes, settings, device, config.check_steps)
            row["check_steps"] = config.check_steps
            row["same_network_repeat"] = all(torch.equal(first[k], second[k]) for k in first)
            if eager_weights is None:
                eager_recipe = replace(config.prior.unet, crop=settings.unet.crop, **VARIANTS["eager"])
                eager_weights = (
                    first
                    if name == "eager"
                    else train_briefly(
                        pools, num_classes, replace(settings, unet=eager_recipe), device, config.check_steps
                    )
                )
            row["max_abs_diff_vs_eager"] = weights_difference(first, eager_weights)
        CONSOLE.print(
            f"{name}: {row['ms_per_step']:.2f} ms/step (blocks "
            + ", ".join(f"{ms:.2f}" for ms in row["ms_per_step_blocks"])
            + f"), warm-up {row['warmup_s']:.1f} s, deterministic {row.get('same_network_repeat')}, "
            f"max |w - w_eager| {row.get('max_abs_diff_vs_eager')}"
            + (
                f"; GPU busy {row['gpu_busy_ms_per_step']:.2f} of {row['profiled_ms_per_step']:.2f} ms/step profiled"
                if row.get("gpu_busy_ms_per_step") is not None
                else ""
            )
        )
        for kernel in row.get("gpu_top_kernels", []):
            CONSOLE.print(f"  {kernel['ms_per_step']:.3f} ms/step  {kernel['kernel'][:110]}")
        rows.append(row)
    return rows, eager_training


def prediction_and_write_s(
    data: SceneData, training: UnetTraining, settings: PriorSettings, device: torch.device, work: Optional[Path]
) -> Dict[str, float]:
    """Seconds of predicting every unlabelled view with the prior (fused with reprojection) and of writing their
    pseudo labels, boundary masks and confidence maps (into a temporary store root), as the pipeline does."""
    model = training.model
    model.eval()
    pending = sorted(data.scene.targets)
    times: Dict[str, float] = {}
    with progress_bar() as progress:
        synchronize(device)
        started = time.perf_counter()
        pseudo, confidence, _ = predict_views(model, data.photos, data.carried_of, pending, settings, device, progress)
        times["prediction"] = time.perf_counter() - started
    stems = [data.scene.stems[i] for i in pending]
    boundary = [np.ones(data.scene.sizes[i], dtype=bool) for i in pending]  # B = all, as the prior writes it
    with tempfile.TemporaryDirectory(dir=work, prefix="prior_speed_") as root:
        started = time.perf_counter()
        write_views(Path(root), stems, [pseudo[i] for i in pending], boundary, [confidence[i] for i in pending])
        times["write"] = time.perf_counter() - started
    return times


def main(config: PriorSpeedConfig) -> List[Dict[str, Any]]:
    """Runs the benchmark; returns the rows also written to ``config.out``."""
    check_config(config)
    device = resolve_device(config.prior)
    about = versions()
    CONSOLE.print(
        f"prior speed on {about['device']} (torch {about['torch']}, cuDNN {about['cudnn']}, commit {about['commit']}), "
        f"{usable_cores()} usable cores, torch threads {torch.get_num_threads()}"
    )
    reproject = ReprojectSettings()
    rows: List[Dict[str, Any]] = []
    for number, scene_dir in enumerate(config.scenes):
        scene_dir = Path(scene_dir)
        started = time.perf_counter()
        data = run_stages(scene_dir, reproject)
        stage_wall = time.perf_counter() - started
        training: Optional[UnetTraining] = None
        if number == 0 or config.steps_on == "all":
            variant_rows_of_scene, training = variant_rows(scene_dir.name, data, config, device, about)
            rows += variant_rows_of_scene
        if config.stages:
            if training is None:
                # A few steps are enough: prediction time does not depend on the weights.
                pools = scene_pools(data, config.prior, device)
                settings = replace(config.prior, unet=replace(config.prior.unet, crop=pools[0][0].crop))
                training = UnetTraining(pools, data.scene.num_classes, settings.unet, device)
                with training.kernel_settings():
                    training.step()
            data.stage_s.update(prediction_and_write_s(data, training, config.prior, device, config.work))
            timed = ("points", "depth", "read_photos", "reprojection", "prediction", "write")
            data.stage_s["total_without_training"] = sum(data.stage_s[k] for k in timed)
            data.stage_s["depth_to_reprojection_wall"] = stage_wall
            row = {
                "scene": scene_dir.name,
                "variant": "stages",
                "stage_s": data.stage_s,
                "views": len(data.scene.stems),
                "usable_cores": usable_cores(),
                "torch_threads": torch.get_num_threads(),
                **about,
            }
            rows.append(row)
            CONSOLE.print(
                f"{scene_dir.name} stages (s): "
                + ", ".join(f"{k} {v:.2f}" for k, v in data.stage_s.items() if isinstance(v, float))
            )
    out = Path(config.out)
    write_json_atomic(out, [_finite(row) for row in rows], indent=1)
    CONSOLE.print(f"wrote {len(rows)} rows to {out}")
    return rows


def _finite(value: Any) -> Any:
    """NaN and infinities (not JSON) as None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def entrypoint() -> None:
    """Command-line entry point."""
    config = tyro.cli(PriorSpeedConfig)
    try:
        main(config)
    except PriorSpeedError as err:
        CONSOLE.print(f"[bold red]{err}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    entrypoint()
