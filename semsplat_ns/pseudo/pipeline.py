"""``semsplat-pseudo-labels``: pseudo labels and boundary masks B for the unlabelled training views.

For every TRAIN view without a label (no ``train/rgb/<stem>.png``) it writes

    train/pseudo/<stem>.png     8-bit class ids, 255 = no pseudo label
    train/boundary/<stem>.png   B: 255 where no labelled view observes the pixel, else 0
    train/pseudo/meta.json      backend, parameters, per-step times, counts (and --report figures)

Backends: ``sam2`` (the paper: SAM2 masks on a labelled view, class by majority ground truth, tracked
through the training views by the SAM2 video predictor) and ``reproject`` (the labelled views' classes
carried into the other views by depth-tested reprojection). B always comes from depth-tested
reprojection against the labelled views; depth from triangulated points (default), a trained
nerfstudio model (``--depth-config``) or ``.npy`` files (``--depth-dir``).

Files are written atomically (temp file + rename) and the run is resumable: views whose pseudo label
and boundary mask both exist are skipped unless ``--overwrite``. ``rgb/`` (ground truth) is never
written, and ground truth outside the scene is read only for ``--report``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Sequence

import numpy as np
import torch

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.console import CONSOLE
from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_io import IGNORE_ID
from semsplat_ns.geometry.depth import (
    DepthError,
    PointsDepthSettings,
    depth_from_points,
    load_depth_dir,
    render_depths_from_config,
)
from semsplat_ns.geometry.visibility import ReferenceView, ReprojectSettings, reproject_from_references
from semsplat_ns.pseudo.scene import TrainSplit, read_labels, read_photos, read_scene
from semsplat_ns.pseudo.store import (
    META_NAME,
    coverage_stats,
    measure_against_truth,
    output_paths,
    read_previous_meta,
)


@dataclass
class PseudoLabelArgs:
    """Write pseudo labels (train/pseudo/) and boundary masks B (train/boundary/) for the unlabelled training
    views of an IRT scene. With --backend reproject, pseudo labels exist only where labelled views see the
    pixel, i.e. outside B, so the default there is --boundary all (pseudo labels used wherever they exist)."""

    data: Path
    """The IRT scene folder (holds train/color, train/rgb, train/pose, train/intrinsics)."""
    backend: Literal["sam2", "reproject"] = "sam2"
    """sam2: SAM2 masks of a labelled view, tracked through the training views (paper).
    reproject: the labelled views' classes carried into the other views by depth-tested reprojection."""
    boundary: Optional[Literal["unseen", "all"]] = None
    """B written per view. unseen: pixels no labelled view observes (paper; with sam2, grown to whole masks).
    all: B everywhere, so the model's pseudo loss uses every pseudo label (ablation).
    Default: unseen for sam2, all for reproject (its pseudo labels lie only outside the unseen B)."""
    depth: Literal["points", "config", "dir"] = "points"
    """Depth for the reprojection: points (triangulated from the known poses, cached in sparse/points3D.ply),
    config (a trained model renders it, --depth-config), dir (.npy maps, --depth-dir).
    Giving --depth-config or --depth-dir selects those."""
    depth_config: Optional[Path] = None
    """A trained nerfstudio run's config.yml (e.g. splatfacto or semsplat on this scene) to render depth."""
    depth_dir: Optional[Path] = None
    """Folder of <stem>.npy float z-depth maps [H, W] (OpenCV camera z, scene units; <= 0 or NaN = unknown)."""
    depth_tolerance: float = ReprojectSettings.depth_tolerance
    """Relative depth difference up to which a reprojected pixel counts as seen by a labelled view."""
    color_tolerance: float = ReprojectSettings.color_tolerance
    """Largest mean |RGB difference| (0-255, 3x3 means) between a pixel and where it lands in a labelled view.
    Above it the pixel is not seen there (a different colour means a different surface); 0 = off."""
    label_uncertainty: float = ReprojectSettings.label_uncertainty
    """reproject: a class is carried only if unchanged when the depth is off by this relative amount."""
    label_margin: int = ReprojectSettings.label_margin
    """reproject: a class is carried only where the labelled view's label is uniform within this many pixels."""
    points_max_edge: float = PointsDepthSettings.max_edge
    """--depth points: mesh triangles with an edge longer than this (pixels) leave their pixels without depth."""
    points_max_spread: float = PointsDepthSettings.max_spread
    """--depth points: mesh triangles whose corner depths differ by more than this ratio leave no depth."""
    sam2_checkpoint: str = "checkpoints/sam2.1_hiera_tiny.pt"
    """SAM2 checkpoint .pt (get sam2.1_hiera_tiny.pt from the facebookresearch/sam2 release).
    'none' = random weights: for tests only, the pseudo labels are then meaningless."""
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    """SAM2 model config (inside the sam2 package); must match the checkpoint."""
    sam2_image_size: Optional[int] = None
    """SAM2 input size (multiple of 32); default: the config's 1024. Small values only for quick tests."""
    sam2_offload: bool = False
    """Keep SAM2's video frames and tracking state in CPU memory (GPUs with little memory; slower)."""
    sam2_all_labelled: bool = False
    """Prompt SAM2 with masks of every labelled view (merged) instead of one random labelled view."""
    sam2_points_per_side: int = 32
    """Automatic mask generator: point grid side (points_per_side^2 prompts)."""
    sam2_pred_iou_thresh: float = 0.8
    """Automatic mask generator: smallest predicted mask IoU kept."""
    sam2_stability_thresh: float = 0.95
    """Automatic mask generator: smallest mask stability score kept."""
    sam2_min_class_share: float = 0.6
    """A SAM2 mask is used when its majority ground-truth class covers at least this share of it."""
    seed: int = 0
    """Seed of the choice of the labelled view that prompts SAM2 (and of torch while SAM2 runs)."""
    overwrite: bool = False
    """Rewrite views whose pseudo label and boundary mask already exist (default: skip them)."""
    report: Optional[Path] = None
    """Folder of full labels <stem>.png to measure pseudo-label accuracy and coverage against.
    Read only for this report; the figures go into meta.json."""


def _depth_source(args: PseudoLabelArgs) -> str:
    if args.depth_config is not None and args.depth_dir is not None:
        raise DepthError(f"{args.depth_config}, {args.depth_dir}: give --depth-config or --depth-dir, not both")
    if args.depth_config is not None:
        return "config"
    if args.depth_dir is not None:
        return "dir"
    if args.depth == "config":
        raise DepthError("--depth config needs --depth-config PATH (a trained run's config.yml)")
    if args.depth == "dir":
        raise DepthError("--depth dir needs --depth-dir DIR (a folder of <stem>.npy depth maps)")
    return "points"


def compute_depths(
    args: PseudoLabelArgs, scene: TrainSplit, indices: Sequence[int], source: str
) -> Dict[int, torch.Tensor]:
    """z-depth maps (input-world units, 0 = unknown) of the given training views.

    Args:
        args: The command's arguments (depth source and its parameters).
        scene: The training split.
        indices: Views whose depth is wanted.
        source: "points", "config" or "dir".

    Returns:
        view index -> float32 [H, W] depth.
    """
    stems = [scene.files.stems[i] for i in indices]
    sizes = [scene.sizes[i] for i in indices]
    if source == "dir":
        by_stem = load_depth_dir(args.depth_dir, stems, sizes)
        return {i: by_stem[s] for i, s in zip(indices, stems)}
    if source == "config":
        with _progress() as progress:
            task = progress.add_task("Rendering depth with the trained model", total=len(indices))
            by_stem = render_depths_from_config(
                args.depth_config, stems, sizes, progress=lambda _stem: progress.advance(task)
            )
        return {i: by_stem[s] for i, s in zip(indices, stems)}
    from semsplat_ns.data.points import load_or_triangulate_points

    cache = Path(args.data) / "sparse" / "points3D.ply"
    # Same inputs as the dataparser's seed points, so both share one cache. A handful of points still
    # gives depth somewhere; the mesh needs 3.
    result = load_or_triangulate_points(list(scene.files.photo_paths), scene.Ks, scene.c2ws, cache, min_points=3)
    if result is None:
        raise DepthError(
            f"{cache}: too few points were triangulated for --depth points; pass depth with "
            "--depth-dir DIR (<stem>.npy) or --depth-config a trained run's config.yml"
        )
    points = torch.from_numpy(np.asarray(result[0], dtype=np.float64))  # [P, 3]
    settings = PointsDepthSettings(max_edge=args.points_max_edge, max_spread=args.points_max_spread)
    depths: Dict[int, torch.Tensor] = {}
    with _progress() as progress:
        task = progress.add_task(f"Depth from {len(points)} points", total=len(indices))
        for i in indices:
            height, width = scene.sizes[i]
            depths[i] = depth_from_points(
                points, torch.from_numpy(scene.Ks[i]), torch.from_numpy(scene.c2ws[i]), height, width, settings
            )  # [H, W]
            progress.advance(task)
    return depths


def run(args: PseudoLabelArgs) -> dict:
    """Writes pseudo labels and boundary masks of the unlabelled training views; see the module docstring.

    Args:
        args: The command's arguments.

    Returns:
        The record also written to ``train/pseudo/meta.json``.
    """
    run_started = time.perf_counter()
    times: Dict[str, float] = {}
    scene_dir = Path(args.data)
    boundary_mode = args.boundary or ("all" if args.backend == "reproject" else "unseen")
    depth_source = _depth_source(args)
    if args.backend == "sam2":
        # Fail on a missing checkpoint or a bad size before any long step.
        from semsplat_ns.pseudo.sam2 import check_image_size, resolve_checkpoint

        resolve_checkpoint(args.sam2_checkpoint, args.sam2_config)
        check_image_size(args.sam2_image_size)

    started = time.perf_counter()
    scene = read_scene(scene_dir)
    stems = scene.files.stems
    pending = [
        i for i in scene.targets if args.overwrite or not all(p.is_file() for p in output_paths(scene_dir, stems[i]))
    ]
    skipped = [i for i in scene.targets if i not in set(pending)]
    labels_of = {i: read_labels(scene, i) for i in scene.labelled}
    times["read_scene"] = time.perf_counter() - started
    counts = {
        "train_views": len(stems),
        "labelled_views": len(scene.labelled),
        "target_views": len(scene.targets),
        "written": 0,
        "skipped": len(skipped),
    }

    stats: Dict[str, Dict[str, float]] = {}
    if pending:
        needs_depth = args.backend == "reproject" or boundary_mode == "unseen"
        depths: Dict[int, torch.Tensor] = {}
        if needs_depth:
            started = time.perf_counter()
            depths = compute_depths(args, scene, sorted(set(pending) | set(scene.labelled)), depth_source)
            times["depth"] = time.perf_counter() - started
        started = time.perf_counter()
        use_color = needs_depth and args.color_tolerance > 0
        photos = read_photos(scene, sorted(set(pending) | set(scene.labelled)) if use_color else [])
        references = (
            [
                ReferenceView(
                    depths[i],
                    torch.from_numpy(scene.Ks[i]),
                    torch.from_numpy(scene.c2ws[i]),
                    torch.from_numpy(labels_of[i]),
                    torch.from_numpy(photos[i]) if use_color else None,
                )
                for i in scene.labelled
            ]
            if needs_depth
            else []
        )
        times["read_photos"] = time.perf_counter() - started
        reproject_settings = ReprojectSettings(
            depth_tolerance=args.depth_tolerance,
            color_tolerance=args.color_tolerance,
            label_uncertainty=args.label_uncertainty,
            label_margin=args.label_margin,
        )

        sam2_frames = {}
        if args.backend == "sam2":
            from semsplat_ns.pseudo.sam2 import sam2_pseudo_labels

            sam2_frames = sam2_pseudo_labels(args, scene, pending, labels_of, photos, counts, times)

        started = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("Reprojecting and writing pseudo labels", total=len(pending))
            for i in pending:
                height, width = scene.sizes[i]
                if needs_depth:
                    seen, carried = reproject_from_references(
                        depths[i],
                        torch.from_numpy(scene.Ks[i]),
                        torch.from_numpy(scene.c2ws[i]),
                        references,
                        scene.num_classes if args.backend == "reproject" else None,
                        reproject_settings,
                        torch.from_numpy(photos[i]) if use_color else None,
                    )  # [H, W], [H, W] | None
                    unseen = (~seen).numpy()  # [H, W]
                else:
                    unseen, carried = np.ones((height, width), dtype=bool), None
                if args.backend == "reproject":
                    pseudo = carried.numpy()  # [H, W]
                else:
                    frame = sam2_frames.get(i)
                    pseudo = frame.labels if frame is not None else np.full((height, width), IGNORE_ID, np.uint8)
                    if frame is not None and boundary_mode == "unseen":
                        from semsplat_ns.pseudo.sam2 import grow_boundary_to_masks

                        unseen = grow_boundary_to_masks(unseen, frame.objects)
                boundary = np.ones((height, width), dtype=bool) if boundary_mode == "all" else unseen  # [H, W]
                pseudo_path, boundary_path = output_paths(scene_dir, stems[i])
                irt_io.atomic_write_png(boundary_path, boundary)
                irt_io.atomic_write_png(pseudo_path, np.ascontiguousarray(pseudo, dtype=np.uint8))
                stats[stems[i]] = coverage_stats(pseudo, boundary)
                counts["written"] += 1
                progress.advance(task)
        times["reproject_and_write"] = time.perf_counter() - started

    for i in skipped:
        pseudo_path, boundary_path = output_paths(scene_dir, stems[i])
        stats[stems[i]] = coverage_stats(
            irt_io.read_pseudo_label(pseudo_path), irt_io.read_boundary_mask(boundary_path)
        )

    meta_path = scene_dir / "train" / "pseudo" / META_NAME
    previous = read_previous_meta(meta_path)
    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    parameters.update({"boundary": boundary_mode, "depth": depth_source})
    record = {
        "backend": args.backend,
        "boundary": boundary_mode,
        "depth": depth_source,
        "parameters": parameters,
        "times_s": times,
        "counts": counts,
        "coverage": float(np.mean([s["coverage"] for s in stats.values()])) if stats else 0.0,
        "boundary_share": float(np.mean([s["boundary_share"] for s in stats.values()])) if stats else 0.0,
        "views": {stem: stats[stem] for stem in stems if stem in stats},
    }
    if skipped and previous is not None:
        # Skipped views were made by an earlier run; keep what it recorded.
        record["earlier_runs"] = previous.get("earlier_runs", []) + [
            {k: previous.get(k) for k in ("backend", "boundary", "depth", "parameters", "counts")}
        ]
        if previous.get("backend") != args.backend or previous.get("boundary") != boundary_mode:
            CONSOLE.print(
                f"[bold yellow]{meta_path}: skipped views were made with backend={previous.get('backend')} "
                f"boundary={previous.get('boundary')}; this run uses {args.backend}/{boundary_mode}. "
                "Pass --overwrite to remake them all.[/bold yellow]"
            )
    if args.report is not None:
        started = time.perf_counter()
        record["report"] = measure_against_truth(scene_dir, scene, args.report)
        times["report"] = time.perf_counter() - started
    times["total"] = time.perf_counter() - run_started
    write_json_atomic(meta_path, record, indent=1)
    return record
