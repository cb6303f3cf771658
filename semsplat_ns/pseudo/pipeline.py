"""``semsplat-pseudo-labels``: pseudo labels and boundary masks B for the unlabelled training views.

For every TRAIN view without a label (IRT: no ``train/rgb/<stem>.png``; a capture: no ``labels/<stem>.png``) it
writes, into the scene's store root (``train/`` of an IRT scene, ``semsplat_pseudo/`` of a nerfstudio capture
or COLMAP model; :mod:`semsplat_ns.pseudo.store`)

    pseudo/<stem>.png       8-bit class ids, 255 = no pseudo label
    boundary/<stem>.png     B: 255 where no labelled view observes the pixel, else 0
    confidence/<stem>.png   (--backend prior) confidence of the pseudo label, round(255 * p)
    pseudo/meta.json        backend, parameters, input digest, per-step times, counts (and --report figures)

A capture is read as ``ns-train`` reads it (:mod:`semsplat_ns.pseudo.capture`): nerfstudio's train split and the
pictures it trains on; ``--depth points`` uses the capture's own sparse points.

Backends (one table, :data:`BACKENDS`): ``sam2`` (the paper: SAM2 masks on a labelled view, class by majority
ground truth, tracked through the training views by the SAM2 video predictor), ``reproject`` (the labelled
views' classes carried into the other views by depth-tested reprojection) and ``prior`` (reprojection, and
where it gives no class, a small 2D network trained per scene on the labelled views plus the reprojected
labels of every other training view; see :mod:`semsplat_ns.pseudo.prior`). B always comes from depth-tested
reprojection against the labelled views; depth from triangulated points (default), a trained nerfstudio
model (``--depth-config``) or ``.npy`` files (``--depth-dir``). With ``--prior.labelled-only-share`` the prior's
first steps train on the labelled views alone while depth and reprojection (on a scene's first run, the
triangulation of its points too) run in a thread beside them.

Files are written atomically (temp file + rename) and the run is resumable: views whose files all exist are
skipped unless ``--overwrite``. Labels (``rgb/``, a capture's ``labels/``) and photos are never written, and
ground truth outside the scene is read only for ``--report``. :func:`semsplat_ns.pseudo.auto.ensure_pseudo_labels`
is the datamanager's automatic path: prior pseudo labels made once, cached with their parameters and input digest
in meta.json, reused or rebuilt.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.console import CONSOLE
from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_io import IGNORE_ID
from semsplat_ns.geometry.depth import DepthError, PointsDepthSettings
from semsplat_ns.geometry.visibility import ReferenceView, ReprojectSettings, reproject_from_references
from semsplat_ns.pseudo import prior as prior_lib
from semsplat_ns.pseudo.depths import DepthSource, compute_depths, scene_points, select_depth_source
from semsplat_ns.pseudo.prior import PRIOR_VERSION, PriorSettings, cache_fields, flat_settings
from semsplat_ns.pseudo.scene import TrainSplit, read_labels, read_photos, read_scene
from semsplat_ns.pseudo.store import (
    confidence_file,
    coverage_stats,
    encode_confidence,
    input_digest,
    measure_against_truth,
    meta_path,
    output_paths,
    read_previous_meta,
)

WRITE_THREADS = 8
"""Views written at once (PNG encoding and disk flushes overlap; a few threads saturate a disk)."""

Backend = Literal["sam2", "reproject", "prior"]
"""Name of a pseudo-label backend."""


@dataclass(frozen=True)
class BackendSpec:
    """What a backend needs from the shared steps and what it writes."""

    default_boundary: Literal["unseen", "all"]
    """B when --boundary is not given."""
    carries_labels: bool
    """Reprojection carries the labelled views' classes (not only visibility)."""
    reprojects_every_view: bool
    """Every unlabelled view is reprojected, also those already written (the prior trains on all of them)."""
    writes_confidence: bool
    """Writes train/confidence/<stem>.png."""


BACKENDS: Dict[str, BackendSpec] = {
    # SAM2's masks reach into unseen parts; the paper uses them only there (B = unseen).
    "sam2": BackendSpec("unseen", carries_labels=False, reprojects_every_view=False, writes_confidence=False),
    # Carried labels lie only where labelled views see the pixel, i.e. outside the unseen B: B = all.
    "reproject": BackendSpec("all", carries_labels=True, reprojects_every_view=False, writes_confidence=False),
    # Reprojected labels plus the prior's confident classes cover seen and unseen pixels alike: B = all.
    "prior": BackendSpec("all", carries_labels=True, reprojects_every_view=True, writes_confidence=True),
}
"""The backends, by name."""


@dataclass
class PseudoLabelArgs:
    """Write pseudo labels (pseudo/) and boundary masks B (boundary/) for the unlabelled training views of an IRT
    scene (into its train/) or of a nerfstudio capture or COLMAP model with labels/ (into its semsplat_pseudo/).
    With --backend reproject, pseudo labels exist only where labelled views see the pixel, i.e. outside B, so the
    default there is --boundary all (pseudo labels used wherever they exist). --backend prior also writes a
    per-pixel confidence (confidence/)."""

    data: Path
    """The scene: an IRT scene folder (train/color, train/rgb, train/pose, train/intrinsics), or a capture (a
    folder with transforms.json or a COLMAP model, photos in images/, labels in labels/; or its .json file), read
    with semsplat-data's defaults (nerfstudio's split)."""
    backend: Backend = "sam2"
    """sam2: SAM2 masks of a labelled view, tracked through the training views (paper).
    reproject: the labelled views' classes carried into the other views by depth-tested reprojection.
    prior: reprojection, and elsewhere the confident classes of a small 2D network trained on this scene's
    labelled views plus the reprojected labels of the other training views (--prior.* flags)."""
    boundary: Optional[Literal["unseen", "all"]] = None
    """B written per view. unseen: pixels no labelled view observes (paper; with sam2, grown to whole masks).
    all: B everywhere, so the model's pseudo loss uses every pseudo label (ablation).
    Default: unseen for sam2, all for reproject and prior (their pseudo labels cover seen pixels too)."""
    depth: Literal["points", "config", "dir"] = "points"
    """Depth for the reprojection: points (IRT: triangulated from the known poses, cached in sparse/points3D.ply;
    a capture: its own sparse model),
    config (a trained model renders it, --depth-config), dir (.npy maps, --depth-dir).
    Giving --depth-config or --depth-dir selects those."""
    depth_config: Optional[Path] = None
    """A trained nerfstudio run's config.yml (e.g. splatfacto or semsplat on this scene) to render depth."""
    depth_dir: Optional[Path] = None
    """Folder of <stem>.npy float z-depth maps [H, W] (OpenCV camera z, scene units, the size of the picture
    training uses; <= 0 or NaN = unknown)."""
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
    """sam2: seed of the choice of the labelled view that prompts SAM2 (and of torch while SAM2 runs).
    The prior has its own, --prior.seed."""
    prior: PriorSettings = field(default_factory=PriorSettings)
    """--backend prior: how the 2D prior is trained and thresholded."""
    overwrite: bool = False
    """Rewrite views whose files (pseudo label, boundary mask, and confidence for prior) already exist
    (default: skip them)."""
    report: Optional[Path] = None
    """Folder of full labels <stem>.png to measure pseudo-label accuracy and coverage against.
    Read only for this report; the figures go into meta.json."""


def _depth_source(args: PseudoLabelArgs) -> DepthSource:
    return select_depth_source(args.depth, args.depth_config, args.depth_dir)


def _jsonable(value: Any) -> Any:
    """Parameters as JSON values (paths as strings, nested settings as objects)."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def cache_key(args: PseudoLabelArgs) -> Dict[str, Any]:
    """The parameters that decide what a run writes (not where, not on which device): equal keys and equal
    inputs (:func:`~semsplat_ns.pseudo.store.input_digest`) make equal pseudo labels.

    Args:
        args: The command's arguments.

    Returns:
        A JSON-able dict.
    """
    key: Dict[str, Any] = {
        "backend": args.backend,
        "boundary": args.boundary or BACKENDS[args.backend].default_boundary,
        "depth": _depth_source(args),
        "depth_config": None if args.depth_config is None else str(args.depth_config),
        "depth_dir": None if args.depth_dir is None else str(args.depth_dir),
    }
    for name in ("depth_tolerance", "color_tolerance", "label_uncertainty", "label_margin"):
        key[name] = getattr(args, name)
    if key["depth"] == "points":
        key.update(points_max_edge=args.points_max_edge, points_max_spread=args.points_max_spread)
    if args.backend == "sam2":
        key.update({k: v for k, v in asdict(args).items() if k.startswith("sam2_")}, seed=args.seed)
    if args.backend == "prior":
        key["prior"] = cache_fields(args.prior)
        key["prior_version"] = PRIOR_VERSION
    return _jsonable(key)


def output_files(root: Path, stem: str, spec: BackendSpec) -> List[Path]:
    """The files a backend writes for one view, in the store ``root``."""
    paths = list(output_paths(root, stem))
    return paths + [confidence_file(root, stem)] if spec.writes_confidence else paths


def labelled_references(
    scene: TrainSplit,
    depths: Dict[int, torch.Tensor],
    labels_of: Dict[int, np.ndarray],
    photos: Optional[Dict[int, np.ndarray]],
    device: torch.device,
) -> List[ReferenceView]:
    """The labelled views as reprojection's references, their tensors on ``device``.

    Args:
        scene: The training split (cameras).
        depths: float32 [H, W] z-depth per view (the labelled ones at least).
        labels_of: uint8 [H, W] class ids per labelled view.
        photos: uint8 [H, W, 3] photo per view for the colour test; None: no photos (no colour test).
        device: Where the reprojection runs.
    """
    return [
        ReferenceView(
            depths[i].to(device),
            torch.from_numpy(scene.Ks[i]),
            torch.from_numpy(scene.c2ws[i]),
            torch.from_numpy(labels_of[i]).to(device),
            torch.from_numpy(photos[i]).to(device) if photos is not None else None,
        )
        for i in scene.labelled
    ]


def reproject_views(
    scene: TrainSplit,
    indices: Sequence[int],
    depths: Optional[Dict[int, torch.Tensor]],
    references: Sequence[ReferenceView],
    photos: Optional[Dict[int, np.ndarray]],
    num_classes: Optional[int],
    settings: ReprojectSettings,
    device: Optional[torch.device] = None,
) -> Tuple[Dict[int, np.ndarray], Dict[int, np.ndarray]]:
    """Visibility from the labelled views (B = unseen) and the classes they carry, per view
    (:func:`~semsplat_ns.geometry.visibility.reproject_from_references`).

    Args:
        scene: The training split (cameras, sizes).
        indices: Views to reproject.
        depths: float32 [H, W] z-depth per view; None: no depth, so every pixel is unseen and nothing is carried.
        references: The labelled views. What each tested view needs of them is made once, at the first view.
        photos: uint8 [H, W, 3] photo per view for the colour test; None skips it.
        num_classes: Number of classes to carry labels; None computes visibility only.
        settings: The tests' tolerances.
        device: Where the tests run (the references' tensors must be there); None: the CPU. On a GPU the 90 views
            of a 512² scene take about a second instead of 12-15 s on 16 cores; float rounding may differ from the
            CPU's in a few pixels at a tolerance's edge.

    Returns:
        bool [H, W] unseen mask per view, and uint8 [H, W] carried ids (255 = none) per view (empty when
        ``num_classes`` is None or without depth).
    """
    device = device or torch.device("cpu")
    unseen_of: Dict[int, np.ndarray] = {}
    carried_of: Dict[int, np.ndarray] = {}
    with _progress() as progress:
        task = progress.add_task("Reprojecting the labelled views", total=len(indices))
        for i in indices:
            height, width = scene.sizes[i]
            if depths is None:
                unseen_of[i] = np.ones((height, width), dtype=bool)
            else:
                seen, carried = reproject_from_references(
                    depths[i].to(device),
                    torch.from_numpy(scene.Ks[i]),
                    torch.from_numpy(scene.c2ws[i]),
                    references,
                    num_classes,
                    settings,
                    torch.from_numpy(photos[i]).to(device) if photos is not None else None,
                )  # [H, W], [H, W] | None
                unseen_of[i] = (~seen).cpu().numpy()  # [H, W]
                if carried is not None:
                    carried_of[i] = carried.cpu().numpy()  # [H, W]
            progress.advance(task)
    return unseen_of, carried_of


def _write_view(
    root: Path, stem: str, pseudo: np.ndarray, boundary: np.ndarray, confidence: Optional[np.ndarray]
) -> None:
    """One view's files: boundary mask, confidence (or removal of a stale one), pseudo label last (a view counts as
    done once all exist, so an interrupted view is remade)."""
    pseudo_path, boundary_path = output_paths(root, stem)
    irt_io.atomic_write_png(boundary_path, boundary)
    conf_path = confidence_file(root, stem)
    if confidence is not None:
        irt_io.atomic_write_png(conf_path, encode_confidence(confidence))
    else:
        # A confidence map of an earlier prior run would no longer describe this pseudo label.
        conf_path.unlink(missing_ok=True)
    irt_io.atomic_write_png(pseudo_path, np.ascontiguousarray(pseudo, dtype=np.uint8))


def write_views(
    root: Path,
    stems: Sequence[str],
    pseudo: Sequence[np.ndarray],
    boundary: Sequence[np.ndarray],
    confidence: Optional[Sequence[np.ndarray]],
) -> None:
    """Writes pseudo labels, boundary masks and (given) confidence maps of views into the store ``root``, each file
    atomically, several views at once: PNG encoding (zlib) and the flush to disk of each atomic write release the
    GIL, so threads overlap them.

    Args:
        root: The store root.
        stems: View names.
        pseudo: uint8 [H, W] pseudo ids (255 = none) per view.
        boundary: bool [H, W] B per view.
        confidence: float [H, W] confidence in [0, 1] per view; None writes none and removes stale ones.
    """
    workers = max(1, min(WRITE_THREADS, len(stems)))
    with _progress() as progress, ThreadPoolExecutor(workers) as pool:
        task = progress.add_task("Writing pseudo labels", total=len(stems))
        running = [
            pool.submit(_write_view, root, stem, pseudo[k], boundary[k], None if confidence is None else confidence[k])
            for k, stem in enumerate(stems)
        ]
        for done in as_completed(running):
            done.result()  # re-raises a failed write
            progress.advance(task)


def run(args: PseudoLabelArgs, origin: str = "semsplat-pseudo-labels", dataparser: Optional[Any] = None) -> dict:
    """Writes pseudo labels and boundary masks of the unlabelled training views; see the module docstring.

    Args:
        args: The command's arguments.
        origin: Who asked, recorded in meta.json ("semsplat-pseudo-labels", or "auto" for the datamanager's
            automatic pseudo labels, which it may rebuild when their inputs change).
        dataparser: For a capture, the ``semsplat-data`` options of the run it is for (its split and pictures);
            None: the defaults.

    Returns:
        The record also written to ``<root>/pseudo/meta.json`` (:func:`~semsplat_ns.pseudo.store.meta_path`).
    """
    run_started = time.perf_counter()
    times: Dict[str, float] = {}
    spec = BACKENDS[args.backend]
    boundary_mode = args.boundary or spec.default_boundary
    depth_source = _depth_source(args)
    # Fail on bad settings, a missing checkpoint or an absent GPU before any long step.
    if args.backend == "sam2":
        from semsplat_ns.pseudo.sam2 import check_image_size, resolve_checkpoint

        resolve_checkpoint(args.sam2_checkpoint, args.sam2_config)
        check_image_size(args.sam2_image_size)
    prior_device = None
    if args.backend == "prior":
        prior_lib.check_settings(args.prior)
        prior_device = prior_lib.resolve_device(args.prior)

    started = time.perf_counter()
    scene = read_scene(Path(args.data), dataparser)
    root = scene.root
    stems = scene.stems
    pending = [
        i for i in scene.targets if args.overwrite or not all(p.is_file() for p in output_files(root, stems[i], spec))
    ]
    skipped = [i for i in scene.targets if i not in set(pending)]
    labels_of = {i: read_labels(scene, i) for i in scene.labelled}
    digest = input_digest(scene)
    times["read_scene"] = time.perf_counter() - started
    counts: Dict[str, Any] = {
        "train_views": len(stems),
        "labelled_views": len(scene.labelled),
        "target_views": len(scene.targets),
        "written": 0,
        "skipped": len(skipped),
    }

    stats: Dict[str, Dict[str, float]] = {}
    prior_record: Dict[str, Any] = {}
    if pending:
        # The prior trains on the reprojected labels of every unlabelled view, not only of those to write.
        reprojected = sorted(scene.targets) if spec.reprojects_every_view else pending
        needs_depth = spec.carries_labels or boundary_mode == "unseen"
        use_color = needs_depth and args.color_tolerance > 0
        wanted_photos: List[int] = sorted(set(reprojected) | set(scene.labelled)) if use_color else []
        if args.backend == "prior":
            wanted_photos = sorted(set(scene.targets) | set(scene.labelled))
        started = time.perf_counter()
        photos = read_photos(scene, wanted_photos)
        times["read_photos"] = time.perf_counter() - started
        # Reprojection runs where the prior trains (its device is the user's choice), else on a GPU when there is
        # one: it is plain tensor arithmetic over every pixel, idle GPU time while the CPU cores take 12-15 s.
        reproject_device = prior_device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        reproject_settings = ReprojectSettings(
            depth_tolerance=args.depth_tolerance,
            color_tolerance=args.color_tolerance,
            label_uncertainty=args.label_uncertainty,
            label_margin=args.label_margin,
        )

        def propagate(sam2_frames: Optional[Dict] = None) -> Tuple[Dict[int, np.ndarray], Dict[int, np.ndarray]]:
            """Depth (with the points it needs), the labelled views as references and the reprojection: (unseen_of,
            carried_of); ``counts["depth_error"]`` when the prior goes on without depth."""
            started = time.perf_counter()
            depths: Dict[int, torch.Tensor] = {}
            depth_ok = needs_depth
            if needs_depth:
                try:
                    depth_scene = scene
                    if depth_source == "points" and scene.points is None:
                        # the points triangulated from the known poses (or read from their cache), timed as a stage
                        # of their own: the seed points' work, which the first of the two to need them pays
                        depth_scene = dataclasses.replace(scene, points=scene_points(scene))
                        times["points"] = time.perf_counter() - started
                        started = time.perf_counter()
                    points_settings = PointsDepthSettings(
                        max_edge=args.points_max_edge, max_spread=args.points_max_spread
                    )
                    depths = compute_depths(
                        depth_scene,
                        sorted(set(reprojected) | set(scene.labelled)),
                        depth_source,
                        args.depth_dir,
                        args.depth_config,
                        points_settings,
                    )
                except DepthError as err:
                    if args.backend != "prior" or boundary_mode != "all":
                        raise
                    # Without depth the prior still learns from the labelled views; worse, but better than none.
                    CONSOLE.print(f"[bold yellow]prior: no depth ({err}); the prior trains on the labelled views alone")
                    depth_ok = False
                    counts["depth_error"] = str(err)
                times["depth"] = time.perf_counter() - started
            if sam2_frames is not None and args.backend == "sam2":
                from semsplat_ns.pseudo.sam2 import sam2_pseudo_labels

                sam2_frames.update(sam2_pseudo_labels(args, scene, pending, labels_of, photos, counts, times))
            started = time.perf_counter()
            color = photos if depth_ok and use_color else None
            references = labelled_references(scene, depths, labels_of, color, reproject_device) if depth_ok else []
            # Visibility (B) and carried classes of every view that needs them.
            unseen, carried = reproject_views(
                scene,
                reprojected,
                depths if depth_ok else None,
                references,
                color,
                scene.num_classes if spec.carries_labels else None,
                reproject_settings,
                reproject_device,
            )
            times["reproject"] = time.perf_counter() - started
            return unseen, carried

        sam2_frames: Dict = {}
        confidence_of: Dict[int, np.ndarray] = {}
        prior_labels_of: Dict[int, np.ndarray] = {}
        if args.backend == "prior" and prior_lib.labelled_only_steps(args.prior) > 0 and needs_depth:
            # The labelled-only steps of the prior run while its reprojected labels are made beside them: a scene's
            # first run triangulates its points there (CPU cores) while the prior trains (GPU).
            assert prior_device is not None
            with ThreadPoolExecutor(1, thread_name_prefix="semsplat-reproject") as beside:
                made: List[Future] = []
                late = prior_lib.LateLabels(
                    start=lambda: made.append(beside.submit(propagate)),
                    result=lambda: made[0].result()[1],
                    sizes=[scene.sizes[i] for i in scene.targets],
                )
                prior_labels_of, confidence_of, prior_record = prior_lib.prior_pseudo_labels(
                    args.prior, scene, labels_of, photos, late, pending, prior_device, times
                )
                unseen_of, carried_of = made[0].result()
            counts["reprojected_beside_prior"] = True
        else:
            unseen_of, carried_of = propagate(sam2_frames)
            if args.backend == "prior":
                assert prior_device is not None
                prior_labels_of, confidence_of, prior_record = prior_lib.prior_pseudo_labels(
                    args.prior, scene, labels_of, photos, carried_of, pending, prior_device, times
                )
        if args.backend == "prior":
            counts["prior_reprojected_views"] = prior_record["reprojected_views"]

        started = time.perf_counter()
        pseudo_of: Dict[int, np.ndarray] = {}
        boundary_of: Dict[int, np.ndarray] = {}
        for i in pending:
            height, width = scene.sizes[i]
            unseen = unseen_of[i]  # [H, W]
            if args.backend == "reproject":
                pseudo_of[i] = carried_of.get(i, np.full((height, width), IGNORE_ID, np.uint8))  # [H, W]
            elif args.backend == "prior":
                pseudo_of[i] = prior_labels_of[i]  # [H, W]
            else:
                frame = sam2_frames.get(i)
                pseudo_of[i] = frame.labels if frame is not None else np.full((height, width), IGNORE_ID, np.uint8)
                if frame is not None and boundary_mode == "unseen":
                    from semsplat_ns.pseudo.sam2 import grow_boundary_to_masks

                    unseen = grow_boundary_to_masks(unseen, frame.objects)
            boundary_of[i] = np.ones((height, width), dtype=bool) if boundary_mode == "all" else unseen  # [H, W]
        write_views(
            root,
            [stems[i] for i in pending],
            [pseudo_of[i] for i in pending],
            [boundary_of[i] for i in pending],
            [confidence_of[i] for i in pending] if spec.writes_confidence else None,
        )
        for i in pending:
            stats[stems[i]] = coverage_stats(pseudo_of[i], boundary_of[i])
            if i in carried_of:
                stats[stems[i]]["reprojected"] = float((carried_of[i] != IGNORE_ID).mean())
            counts["written"] += 1
        times["write"] = time.perf_counter() - started

    for i in skipped:
        pseudo_path, boundary_path = output_paths(root, stems[i])
        stats[stems[i]] = coverage_stats(
            irt_io.read_pseudo_label(pseudo_path), irt_io.read_boundary_mask(boundary_path)
        )

    meta_file = meta_path(root)
    previous = read_previous_meta(meta_file)
    parameters = asdict(args)
    parameters.update({"boundary": boundary_mode, "depth": depth_source, "prior": flat_settings(args.prior)})
    parameters = _jsonable(parameters)
    record: Dict[str, Any] = {
        "backend": args.backend,
        "boundary": boundary_mode,
        "depth": depth_source,
        "origin": origin,
        "parameters": parameters,
        "cache_key": cache_key(args),
        "inputs_sha256": digest,
        "times_s": times,
        "counts": counts,
        "coverage": float(np.mean([s["coverage"] for s in stats.values()])) if stats else 0.0,
        "boundary_share": float(np.mean([s["boundary_share"] for s in stats.values()])) if stats else 0.0,
        "views": {stem: stats[stem] for stem in stems if stem in stats},
    }
    reprojected_shares = [s["reprojected"] for s in stats.values() if "reprojected" in s]
    if reprojected_shares:
        record["coverage_reprojected"] = float(np.mean(reprojected_shares))
    if prior_record:
        record["prior"] = prior_record
    if skipped and previous is not None:
        # Skipped views were made by an earlier run; keep what it recorded.
        record["earlier_runs"] = previous.get("earlier_runs", []) + [
            {k: previous.get(k) for k in ("backend", "boundary", "depth", "parameters", "counts")}
        ]
        if previous.get("backend") != args.backend or previous.get("boundary") != boundary_mode:
            CONSOLE.print(
                f"[bold yellow]{meta_file}: skipped views were made with backend={previous.get('backend')} "
                f"boundary={previous.get('boundary')}; this run uses {args.backend}/{boundary_mode}. "
                "Pass --overwrite to remake them all.[/bold yellow]"
            )
        if previous.get("cache_key") != record["cache_key"] or previous.get("inputs_sha256") != digest:
            # Only views made now match this record; a cache check must not trust the mixture.
            record["cache_key"] = None
    if args.report is not None:
        started = time.perf_counter()
        record["report"] = measure_against_truth(scene, args.report)
        times["report"] = time.perf_counter() - started
    times["total"] = time.perf_counter() - run_started
    write_json_atomic(meta_file, record, indent=1)
    return record
