"""Prior benchmark: ``semsplat-pseudo-labels --backend prior`` on one scene, and the prior alone on its test views.

On a copy of the scene (the scene itself is never written), the prior backend runs as a user runs it:
depth, depth-tested reprojection of the labelled views' classes, the per-scene Unet trained on the labelled
views plus the reprojected labels, prediction and fusion of every unlabelled training view. The trained
network is then scored ALONE on the test views (the 2D prior, no splats): timed by the project's one per-view
protocol (:class:`~semsplat_ns.eval.timing.PerViewTiming`), scored by :mod:`semsplat_ns.eval.metrics` (ONE
confusion matrix over all test pixels). One row (method ``"prior"``) goes to ``--out`` in the project's
benchmark format (``benchmarks/common.py``), with the wall time of each stage (``stage_s``) and, given
``--report`` (full labels of every training frame), the accuracy and coverage of the fused pseudo labels.

GPU box::

    python -m benchmarks.prior --scene .scenes/townA --out benchmarks/results/prior.json \\
        --report ../shared/data_gt/townA
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import tyro

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.baselines.unet import command_line, evaluate_unet, load_scene, print_rows  # noqa: E402
from benchmarks.common import append_rows, scored_row  # noqa: E402
from semsplat_ns.console import CONSOLE, progress_bar  # noqa: E402
from semsplat_ns.pseudo.pipeline import PseudoLabelArgs, run  # noqa: E402
from semsplat_ns.pseudo.prior import PriorSettings, cache_fields, load_prior, resolve_device  # noqa: E402
from semsplat_ns.pseudo.store import CONFIDENCE_DIR  # noqa: E402

METHOD = "prior"

# What the prior writes into a scene: left out of the copy, so the run starts from nothing.
_WRITTEN = ("pseudo", "boundary", CONFIDENCE_DIR)


@dataclass
class PriorBenchmarkConfig:
    """Runs the prior backend on a scene and scores the prior alone on the test views."""

    scene: Path
    """IRT scene folder (train/ with a few labels, test/ labelled); only read."""
    out: Path = Path("benchmarks/results/prior.json")
    """JSON results file; the row of the same (scene, method) is replaced."""
    prior: PriorSettings = field(default_factory=PriorSettings)
    """The prior's recipe (--prior.steps, --prior.crop, --prior.width, --prior.threshold, --prior.seed, ...)."""
    report: Optional[Path] = None
    """Folder of full labels <stem>.png of every training frame (e.g. ../shared/data_gt/townA): the row then
    holds the fused pseudo labels' accuracy and coverage. Read only for that."""
    depth_dir: Optional[Path] = None
    """Folder of <stem>.npy z-depth maps instead of depth from triangulated points."""
    work: Optional[Path] = None
    """Folder to copy the scene into (kept afterwards, pseudo labels included); default: a temporary folder,
    removed at the end. A cached sparse/points3D.ply is copied with the scene (then triangulation is skipped)."""
    warmup_views: int = 3
    """Untimed test predictions before the per-view timing."""
    weights: Optional[Path] = None
    """A prior saved by an earlier run (``--prior.save-weights``, or ns-train's automatic prior with
    ``--pipeline.datamanager.pseudo-prior.save-weights``): nothing is trained, the saved network is scored alone
    on the test views (the row has no stage times; ``--prior.*`` should say how it was trained, for the row)."""
    method: str = METHOD
    """The row's method name (e.g. ``prior-7k`` for the prior of a run that changed its recipe)."""


def _copy_scene(scene: Path, work: Path) -> Path:
    """The scene copied into ``work``, without earlier pseudo labels."""
    target = work / scene.resolve().name
    if target.exists():
        shutil.rmtree(target)

    def ignore(folder: str, names: List[str]) -> List[str]:
        return list(_WRITTEN) if Path(folder).name == "train" else []

    shutil.copytree(scene, target, ignore=ignore)
    # Copied files keep the scene's (maybe read-only) mode; the pseudo labels are written beside them.
    for path in [target, *target.rglob("*")]:
        if path.is_dir():
            path.chmod(path.stat().st_mode | 0o700)
    return target


def run_benchmark(config: PriorBenchmarkConfig, command: str) -> Dict[str, Any]:
    """Runs the prior on a copy of the scene and scores it; see the module docstring.

    Args:
        config: The parsed command line.
        command: Command line recorded in the row.

    Returns:
        The benchmark row (method ``"prior"``), also appended to ``config.out``.
    """
    scene_dir = Path(config.scene)
    device = resolve_device(config.prior)
    if config.weights is not None:
        return _score_saved(config, device, command)
    temporary = config.work is None
    work = Path(tempfile.mkdtemp(prefix="prior-bench-")) if config.work is None else Path(config.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        copy = _copy_scene(scene_dir, work)
        weights = work / "prior.pt"
        had_points = (copy / "sparse" / "points3D.ply").is_file()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        args = PseudoLabelArgs(
            data=copy,
            backend="prior",
            prior=replace(config.prior, save_weights=weights, device=str(device)),
            depth_dir=config.depth_dir,
            report=config.report,
            overwrite=True,
        )
        record = run(args)
        views = load_scene(scene_dir)
        model, payload = load_prior(weights, device)
        with progress_bar() as progress:
            figures = evaluate_unet(
                model, views, device, bf16=bool(payload["bf16"]), warmup_views=config.warmup_views, progress=progress
            )
        peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    times = record["times_s"]
    row = scored_row(
        views.name,
        config.method,
        figures,
        train_s=times.get("prior_train"),
        steps=config.prior.unet.steps,
        peak_gpu_mem_gb=peak_gb,
        n_gaussians=None,
        command=command,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    )
    # Wall time of each stage of the pseudo labels: depth (+ triangulation unless cached), reprojection,
    # prior training, prediction + fusion of the unlabelled views, writing; and the whole run.
    row["stage_s"] = {
        "depth": times.get("depth"),
        "points_cached": had_points,
        "reprojection": times.get("reproject"),
        "prior_training": times.get("prior_train"),
        "prediction": times.get("prior_predict"),
        "write": times.get("write"),
        "total": times.get("total"),
    }
    # The fused pseudo labels: share of the unlabelled views' pixels with one, by reprojection alone, and
    # (with --report) their accuracy where set and coverage of the judged pixels.
    pseudo: Dict[str, Any] = {
        "coverage": record["coverage"],
        "coverage_reprojected": record.get("coverage_reprojected"),
        "threshold": config.prior.threshold,
        "views": record["counts"]["written"],
    }
    if "report" in record:
        report = record["report"]
        pseudo.update(accuracy=report["accuracy"], coverage_vs_report=report["coverage"], gt_dir=report["gt_dir"])
    row["pseudo_labels"] = pseudo
    row["prior"] = {
        **cache_fields(config.prior),
        "crop_used": record["prior"]["crop"],
        "reprojected_views": record["prior"]["reprojected_views"],
    }
    append_rows(config.out, [row])
    return row


def _score_saved(config: PriorBenchmarkConfig, device: torch.device, command: str) -> Dict[str, Any]:
    """The row of a saved prior (``--weights``) scored alone on the test views; nothing is trained."""
    weights = Path(config.weights)  # type: ignore[arg-type]
    if not weights.is_file():
        raise SystemExit(f"--weights {weights}: no such file (a prior saved with --prior.save-weights)")
    views = load_scene(Path(config.scene))
    model, payload = load_prior(weights, device)
    if model.num_classes != len(views.class_names):
        raise SystemExit(
            f"--weights {weights}: the prior predicts {model.num_classes} classes, {config.scene} has "
            f"{len(views.class_names)}"
        )
    with progress_bar() as progress:
        figures = evaluate_unet(
            model, views, device, bf16=bool(payload["bf16"]), warmup_views=config.warmup_views, progress=progress
        )
    row = scored_row(
        views.name,
        config.method,
        figures,
        train_s=None,
        steps=config.prior.unet.steps,
        peak_gpu_mem_gb=None,
        n_gaussians=None,
        command=command,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    )
    row["prior"] = {**cache_fields(config.prior), "weights": weights.name}
    append_rows(config.out, [row])
    return row


def main(config: PriorBenchmarkConfig) -> Dict[str, Any]:
    """Runs the benchmark and prints its row.

    Args:
        config: The parsed command line.

    Returns:
        The row.
    """
    row = run_benchmark(config, command_line())
    print_rows([row], f"Prior ({config.prior.unet.steps} steps) -> {config.out}")
    if "stage_s" not in row:
        return row  # a saved prior, scored only
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in row["stage_s"].items() if isinstance(v, float))
    CONSOLE.print(f"stages: {stages}")
    pseudo = row["pseudo_labels"]
    accuracy = pseudo.get("accuracy")
    CONSOLE.print(
        f"pseudo labels: coverage {100 * pseudo['coverage']:.1f} % (reprojection alone "
        f"{100 * (pseudo['coverage_reprojected'] or 0):.1f} %)"
        + (f", accuracy {100 * accuracy:.2f} % (vs --report)" if accuracy is not None else "")
    )
    return row


def entrypoint() -> None:
    """Command-line entry point."""
    main(tyro.cli(PriorBenchmarkConfig, description=(__doc__ or "").split("\n\n")[0]))


if __name__ == "__main__":
    entrypoint()
