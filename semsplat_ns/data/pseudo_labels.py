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

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError
from semsplat_ns.data.pseudo_reproject import (
    DepthError,
    PointsDepthSettings,
    ReferenceView,
    ReprojectSettings,
    accuracy_against,
    coverage_stats,
    depth_from_points,
    load_depth_dir,
    render_depths_from_config,
    reproject_from_references,
)

CONSOLE = Console()

META_NAME = "meta.json"
"""Name of the record written beside the pseudo labels."""


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


@dataclass
class _Scene:
    """The training split of a scene, read and checked."""

    files: irt_io.SplitFiles
    Ks: np.ndarray  # [N, 3, 3]
    c2ws: np.ndarray  # [N, 4, 4]
    sizes: List[Tuple[int, int]]  # (height, width) per view
    num_classes: int
    class_colors: Optional[np.ndarray]  # [C, 3]
    labelled: List[int]  # indices of labelled views
    targets: List[int]  # indices of unlabelled views


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=CONSOLE,
    )


def _write_json_atomic(path: Path, payload: dict) -> None:
    write_json_atomic(path, payload, indent=1)


def read_scene(scene_dir: Path) -> _Scene:
    """Reads cameras, sizes and classes of the training split.

    Args:
        scene_dir: The IRT scene folder.

    Returns:
        The checked training split.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise IRTDataError(f"{scene_dir}: scene folder does not exist")
    files = irt_io.find_split_stems(scene_dir / "train")
    Ks = np.stack([irt_io.read_intrinsics(p) for p in files.intrinsics_paths])  # [N, 3, 3]
    c2ws = np.stack([irt_io.read_pose(p) for p in files.pose_paths])  # [N, 4, 4]
    sizes = []
    for path in files.photo_paths:
        width, height = irt_io.read_photo_size(path)
        sizes.append((height, width))
    labelled = [i for i, p in enumerate(files.label_paths) if p is not None]
    targets = [i for i, p in enumerate(files.label_paths) if p is None]
    if not labelled:
        raise IRTDataError(f"{scene_dir / 'train' / 'rgb'}: no labelled training view; pseudo labels need at least one")
    class_colors = None
    classes_json = scene_dir / "classes.json"
    if classes_json.is_file():
        names, class_colors = irt_io.read_classes_json(classes_json)
        num_classes = len(names)
    else:
        # Without classes.json the classes are those the labels use (as the dataparser does).
        top = 0
        for i in labelled:
            ids = irt_io.read_label(files.label_paths[i], None, None)  # [H, W]
            ids = ids[ids != IGNORE_ID]
            top = max(top, int(ids.max()) + 1 if ids.size else 0)
        num_classes = max(top, 1)
    return _Scene(files, Ks, c2ws, sizes, num_classes, class_colors, labelled, targets)


def _read_labels(scene: _Scene, index: int) -> np.ndarray:
    path = scene.files.label_paths[index]
    labels = irt_io.read_label(path, scene.class_colors, scene.num_classes)  # [H, W]
    if labels.shape != scene.sizes[index]:
        raise IRTDataError(f"{path}: label is {labels.shape[1]}x{labels.shape[0]} but its photo is "
                           f"{scene.sizes[index][1]}x{scene.sizes[index][0]}")
    return labels


def _output_paths(scene_dir: Path, stem: str) -> Tuple[Path, Path]:
    return scene_dir / "train" / "pseudo" / f"{stem}.png", scene_dir / "train" / "boundary" / f"{stem}.png"


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


def compute_depths(args: PseudoLabelArgs, scene: _Scene, indices: Sequence[int], source: str) -> Dict[int, torch.Tensor]:
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
        raise DepthError(f"{cache}: too few points were triangulated for --depth points; pass depth with "
                         "--depth-dir DIR (<stem>.npy) or --depth-config a trained run's config.yml")
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


def _read_photos(scene: _Scene, indices: Sequence[int], photos: Optional[Dict[int, np.ndarray]] = None
                 ) -> Dict[int, np.ndarray]:
    """Photos uint8 [H, W, 3] of the given views, added to ``photos`` (read only where missing)."""
    photos = {} if photos is None else photos
    missing = [i for i in indices if i not in photos]
    if not missing:
        return photos
    with _progress() as progress:
        task = progress.add_task("Reading training photos", total=len(missing))
        for i in missing:
            photo = irt_io.read_photo(scene.files.photo_paths[i])  # [H, W, 3]
            if photo.shape[:2] != scene.sizes[i]:
                raise IRTDataError(f"{scene.files.photo_paths[i]}: size changed while reading")
            photos[i] = photo
            progress.advance(task)
    return photos


def _sam2_pseudo_labels(
    args: PseudoLabelArgs, scene: _Scene, pending: List[int], labels_of: Dict[int, np.ndarray],
    photos: Dict[int, np.ndarray], counts: dict, times: dict,
):
    """Runs the SAM2 backend; returns view index -> PropagatedFrame for the pending views."""
    from semsplat_ns.data import pseudo_sam2

    checkpoint = pseudo_sam2.resolve_checkpoint(args.sam2_checkpoint, args.sam2_config)
    if checkpoint is None:
        CONSOLE.print("[bold red]WARNING: --sam2-checkpoint none builds SAM2 with RANDOM weights; the pseudo labels "
                      "are meaningless (use this only to test the pipeline).[/bold red]")
    settings = pseudo_sam2.Sam2Settings(
        config=args.sam2_config, checkpoint=checkpoint, image_size=args.sam2_image_size,
        points_per_side=args.sam2_points_per_side, pred_iou_thresh=args.sam2_pred_iou_thresh,
        stability_score_thresh=args.sam2_stability_thresh, min_class_share=args.sam2_min_class_share,
        device=pseudo_sam2.sam2_device(), offload_to_cpu=args.sam2_offload,
    )
    if not pseudo_sam2.has_compiled_extension():
        CONSOLE.print("[dim]sam2 was installed without its compiled extension: SAM2 skips filling small holes in "
                      "tracked masks (results are otherwise the same).[/dim]")
    if args.sam2_all_labelled:
        prompt_views = list(scene.labelled)
    else:
        prompt_views = [random.Random(args.seed).choice(scene.labelled)]
    sizes = sorted(set(scene.sizes))
    if len(sizes) > 1:
        odd = next(p for p, size in zip(scene.files.photo_paths, scene.sizes) if size != scene.sizes[0])
        raise IRTDataError(f"{odd}: the SAM2 backend tracks the training photos as one video, so all must have one "
                           f"size; this one differs from {scene.files.photo_paths[0].name} (sizes: {sizes})")
    started = time.perf_counter()
    _read_photos(scene, range(len(scene.files.stems)), photos)
    video = [photos[i] for i in range(len(scene.files.stems))]  # the training photos in stem order
    times["sam2_read_photos"] = time.perf_counter() - started

    started = time.perf_counter()
    # Seeded so that a run is repeatable (and random weights, with --sam2-checkpoint none, are the same each time).
    torch.manual_seed(args.seed)
    generator = pseudo_sam2.build_mask_generator(settings)
    prompts: List = []
    generated = 0
    with _progress() as progress:
        task = progress.add_task("SAM2 masks on labelled views", total=len(prompt_views))
        for i in prompt_views:
            kept, produced = pseudo_sam2.class_masks_for_view(
                generator, video[i], labels_of[i], i, scene.num_classes, settings.min_class_share
            )
            prompts.extend(kept)
            generated += produced
            progress.advance(task)
    del generator
    times["sam2_masks"] = time.perf_counter() - started
    counts["sam2_prompt_views"] = [scene.files.stems[i] for i in prompt_views]
    counts["sam2_masks_generated"] = generated
    counts["sam2_masks_kept"] = len(prompts)
    counts["sam2_frames_propagated"] = 0
    if not prompts:
        CONSOLE.print("[bold yellow]SAM2 kept no mask (none reached --sam2-min-class-share); every pseudo label "
                      "is 255.[/bold yellow]")
        return {}

    started = time.perf_counter()
    with _progress() as progress:
        # Forward from the first prompted frame to the end, then backward to frame 0 (none if it is frame 0).
        first = min(p.frame_index for p in prompts)
        steps = len(video) - first + (first + 1 if first > 0 else 0)
        task = progress.add_task(f"SAM2 tracking {len(prompts)} masks", total=steps)
        frames, visited = pseudo_sam2.propagate_class_masks(
            settings, video, prompts, pending, on_frame=lambda _i: progress.advance(task)
        )
    times["sam2_propagation"] = time.perf_counter() - started
    counts["sam2_frames_propagated"] = visited
    return frames


def measure_against_truth(scene_dir: Path, scene: _Scene, gt_dir: Path) -> dict:
    """Pseudo-label pixel accuracy (where set) and coverage against full labels ``<gt_dir>/<stem>.png``.

    Args:
        scene_dir: The scene whose ``train/pseudo`` and ``train/boundary`` are measured.
        scene: Its training split.
        gt_dir: Folder of full labels, one per unlabelled training view.

    Returns:
        Overall and inside-B accuracy and coverage, and per-view figures.
    """
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise IRTDataError(f"{gt_dir}: --report folder of full labels does not exist")
    totals = np.zeros(6, dtype=np.int64)  # correct, set, judged; the same inside B
    per_view = {}
    with _progress() as progress:
        task = progress.add_task("Measuring against full labels", total=len(scene.targets))
        for i in scene.targets:
            stem = scene.files.stems[i]
            pseudo_path, boundary_path = _output_paths(scene_dir, stem)
            if not (pseudo_path.is_file() and boundary_path.is_file()):
                progress.advance(task)
                continue
            truth = irt_io.read_label(gt_dir / f"{stem}.png", scene.class_colors, scene.num_classes)  # [H, W]
            pseudo = irt_io.read_pseudo_label(pseudo_path)  # [H, W]
            boundary = irt_io.read_boundary_mask(boundary_path)  # [H, W]
            if truth.shape != pseudo.shape:
                raise IRTDataError(f"{gt_dir / (stem + '.png')}: is {truth.shape}, the pseudo label {pseudo.shape}")
            everywhere = accuracy_against(pseudo, truth)
            inside = accuracy_against(np.where(boundary, pseudo, IGNORE_ID).astype(np.uint8),
                                      np.where(boundary, truth, IGNORE_ID).astype(np.uint8))
            totals += np.array(everywhere + inside, dtype=np.int64)
            per_view[stem] = {"accuracy": everywhere[0] / everywhere[1] if everywhere[1] else None,
                              "coverage": everywhere[1] / max(everywhere[2], 1)}
            progress.advance(task)
    return {
        "gt_dir": str(gt_dir),
        "views": len(per_view),
        # None where no pixel has a pseudo label (accuracy undefined).
        "accuracy": float(totals[0] / totals[1]) if totals[1] else None,
        "coverage": float(totals[1] / max(totals[2], 1)),
        "accuracy_in_boundary": float(totals[3] / totals[4]) if totals[4] else None,
        "coverage_in_boundary": float(totals[4] / max(totals[5], 1)),
        "per_view": per_view,
    }


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
        from semsplat_ns.data.pseudo_sam2 import check_image_size, resolve_checkpoint

        resolve_checkpoint(args.sam2_checkpoint, args.sam2_config)
        check_image_size(args.sam2_image_size)

    started = time.perf_counter()
    scene = read_scene(scene_dir)
    stems = scene.files.stems
    pending = [i for i in scene.targets if args.overwrite or not all(p.is_file() for p in _output_paths(scene_dir, stems[i]))]
    skipped = [i for i in scene.targets if i not in set(pending)]
    labels_of = {i: _read_labels(scene, i) for i in scene.labelled}
    times["read_scene"] = time.perf_counter() - started
    counts = {
        "train_views": len(stems), "labelled_views": len(scene.labelled), "target_views": len(scene.targets),
        "written": 0, "skipped": len(skipped),
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
        photos = _read_photos(scene, sorted(set(pending) | set(scene.labelled)) if use_color else [])
        references = [
            ReferenceView(depths[i], torch.from_numpy(scene.Ks[i]), torch.from_numpy(scene.c2ws[i]),
                          torch.from_numpy(labels_of[i]), torch.from_numpy(photos[i]) if use_color else None)
            for i in scene.labelled
        ] if needs_depth else []
        times["read_photos"] = time.perf_counter() - started
        reproject_settings = ReprojectSettings(
            depth_tolerance=args.depth_tolerance, color_tolerance=args.color_tolerance,
            label_uncertainty=args.label_uncertainty, label_margin=args.label_margin,
        )

        sam2_frames = {}
        if args.backend == "sam2":
            sam2_frames = _sam2_pseudo_labels(args, scene, pending, labels_of, photos, counts, times)

        started = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("Reprojecting and writing pseudo labels", total=len(pending))
            for i in pending:
                height, width = scene.sizes[i]
                if needs_depth:
                    seen, carried = reproject_from_references(
                        depths[i], torch.from_numpy(scene.Ks[i]), torch.from_numpy(scene.c2ws[i]), references,
                        scene.num_classes if args.backend == "reproject" else None, reproject_settings,
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
                        from semsplat_ns.data.pseudo_sam2 import grow_boundary_to_masks

                        unseen = grow_boundary_to_masks(unseen, frame.objects)
                boundary = np.ones((height, width), dtype=bool) if boundary_mode == "all" else unseen  # [H, W]
                pseudo_path, boundary_path = _output_paths(scene_dir, stems[i])
                irt_io.atomic_write_png(boundary_path, boundary)
                irt_io.atomic_write_png(pseudo_path, np.ascontiguousarray(pseudo, dtype=np.uint8))
                stats[stems[i]] = coverage_stats(pseudo, boundary)
                counts["written"] += 1
                progress.advance(task)
        times["reproject_and_write"] = time.perf_counter() - started

    for i in skipped:
        pseudo_path, boundary_path = _output_paths(scene_dir, stems[i])
        stats[stems[i]] = coverage_stats(irt_io.read_pseudo_label(pseudo_path), irt_io.read_boundary_mask(boundary_path))

    meta_path = scene_dir / "train" / "pseudo" / META_NAME
    previous = _read_previous_meta(meta_path)
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
            CONSOLE.print(f"[bold yellow]{meta_path}: skipped views were made with backend={previous.get('backend')} "
                          f"boundary={previous.get('boundary')}; this run uses {args.backend}/{boundary_mode}. "
                          "Pass --overwrite to remake them all.[/bold yellow]")
    if args.report is not None:
        started = time.perf_counter()
        record["report"] = measure_against_truth(scene_dir, scene, args.report)
        times["report"] = time.perf_counter() - started
    times["total"] = time.perf_counter() - run_started
    _write_json_atomic(meta_path, record)
    _print_summary(record, meta_path)
    return record


def _read_previous_meta(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        CONSOLE.print(f"[yellow]{path}: unreadable earlier record; it will be replaced.[/yellow]")
        return None


def _print_summary(record: dict, meta_path: Path) -> None:
    counts = record["counts"]
    table = Table(title=f"Pseudo labels ({record['backend']}, boundary {record['boundary']})")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("training views (labelled)", f"{counts['train_views']} ({counts['labelled_views']})")
    table.add_row("views written / skipped", f"{counts['written']} / {counts['skipped']}")
    table.add_row("pseudo-label coverage", f"{100 * record['coverage']:.1f} %")
    table.add_row("boundary share (B)", f"{100 * record['boundary_share']:.1f} %")
    if "sam2_masks_kept" in counts:
        table.add_row("SAM2 masks kept / generated", f"{counts['sam2_masks_kept']} / {counts['sam2_masks_generated']}")
        table.add_row("SAM2 frames tracked", str(counts["sam2_frames_propagated"]))
    if "report" in record:
        report = record["report"]

        def percent(value: Optional[float]) -> str:
            return "n/a" if value is None else f"{100 * value:.2f} %"

        table.add_row("accuracy where set (vs --report)", percent(report["accuracy"]))
        table.add_row("coverage (vs --report)", percent(report["coverage"]))
        table.add_row("accuracy / coverage inside B",
                      f"{percent(report['accuracy_in_boundary'])} / {percent(report['coverage_in_boundary'])}")
    for step, seconds in record["times_s"].items():
        table.add_row(f"time: {step}", f"{seconds:.1f} s")
    CONSOLE.print(table)
    CONSOLE.print(f"record: {meta_path}")


def main() -> None:
    """Console entry point ``semsplat-pseudo-labels``."""
    import tyro

    # sam2 draws tqdm bars of its own; the rich bars above already show its progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = tyro.cli(PseudoLabelArgs, prog="semsplat-pseudo-labels")
    try:
        run(args)
    except ValueError as err:
        # Bad input raises a ValueError subclass of ours (or of points.py) naming the file; others are bugs.
        if not type(err).__module__.startswith("semsplat_ns."):
            raise
        CONSOLE.print(f"[bold red]error:[/bold red] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
