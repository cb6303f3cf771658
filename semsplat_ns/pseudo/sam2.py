"""SAM2 pseudo labels (the paper's procedure) with the sam2 1.1.0 API.

1. ``SAM2AutomaticMaskGenerator`` segments a labelled training view; each mask takes the majority
   ground-truth class inside it (masks whose majority share is below a threshold are dropped).
2. The training photos, in stem order, form a "video"; every kept mask is added as an object on its
   frame and ``propagate_in_video`` tracks them forward and then backward over all frames.
3. On each frame, overlapping objects are resolved by the higher mask logit; pixels covered by no
   object get 255.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from semsplat_ns.console import CONSOLE
from semsplat_ns.console import progress_bar as _progress
from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError
from semsplat_ns.errors import UserInputError
from semsplat_ns.pseudo.scene import TrainSplit, read_photos

if TYPE_CHECKING:
    from semsplat_ns.pseudo.pipeline import PseudoLabelArgs

SAM2_RELEASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
"""Where the facebookresearch/sam2 release keeps the SAM 2.1 checkpoints."""

CHECKPOINT_FOR_CONFIG = {
    "configs/sam2.1/sam2.1_hiera_t.yaml": "sam2.1_hiera_tiny.pt",
    "configs/sam2.1/sam2.1_hiera_s.yaml": "sam2.1_hiera_small.pt",
    "configs/sam2.1/sam2.1_hiera_b+.yaml": "sam2.1_hiera_base_plus.pt",
    "configs/sam2.1/sam2.1_hiera_l.yaml": "sam2.1_hiera_large.pt",
}
"""Checkpoint file that matches each SAM 2.1 model config."""

RANDOM_WEIGHTS = "none"
"""``--sam2-checkpoint`` value that builds SAM2 with random weights (tests only)."""


class Sam2CheckpointError(IRTDataError):
    """The SAM2 checkpoint is missing or unreadable; the message says which file to get and how."""


class Sam2SettingsError(UserInputError):
    """A SAM2 option is out of range; the message names the option."""


@dataclass
class Sam2Settings:
    """How SAM2 is built and run."""

    config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    """sam2 model config name (inside the sam2 package)."""
    checkpoint: Optional[Path] = None
    """Checkpoint .pt file; None = random weights (quality is meaningless)."""
    image_size: Optional[int] = None
    """Model input size (``++model.image_size``); None keeps the config's (1024). Multiple of 32."""
    points_per_side: int = 32
    """Point grid of the automatic mask generator (points_per_side^2 prompts)."""
    pred_iou_thresh: float = 0.8
    """Automatic mask generator: keep masks whose predicted IoU is at least this."""
    stability_score_thresh: float = 0.95
    """Automatic mask generator: keep masks whose stability score is at least this."""
    min_class_share: float = 0.6
    """A mask is kept when its majority ground-truth class covers at least this share of it."""
    device: str = "cpu"
    """Torch device SAM2 runs on."""
    offload_to_cpu: bool = False
    """Keep the video frames and the tracking state in CPU memory (for GPUs with little memory; slower)."""


@dataclass
class ClassMask:
    """A SAM2 mask on a labelled view with the class it carries."""

    frame_index: int
    """Index of the labelled view in the video (train views in stem order)."""
    mask: np.ndarray
    """bool [H, W] mask on that view."""
    class_id: int
    """Majority ground-truth class inside the mask."""
    share: float
    """Share of the mask's labelled pixels that have ``class_id``."""


@dataclass
class PropagatedFrame:
    """SAM2's result on one frame, overlaps resolved."""

    labels: np.ndarray
    """uint8 [H, W] class ids, 255 where no object."""
    objects: np.ndarray
    """int32 [H, W] index (into the prompt list) of the object owning each pixel, -1 where none."""


def resolve_checkpoint(value: str, config: str) -> Optional[Path]:
    """Turns ``--sam2-checkpoint`` into a path, or None for random weights.

    Args:
        value: A .pt path, or "none" for random weights.
        config: The model config, to name the matching checkpoint in the error message.

    Returns:
        Path of an existing checkpoint file, or None.
    """
    if value.strip().lower() == RANDOM_WEIGHTS:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        wanted = CHECKPOINT_FOR_CONFIG.get(config, "the checkpoint matching --sam2-config")
        raise Sam2CheckpointError(
            f"{path}: SAM2 checkpoint not found. Download {wanted} from the facebookresearch/sam2 release "
            f"({SAM2_RELEASE_URL}/{wanted} if the name is a SAM 2.1 file) and pass it with "
            f"--sam2-checkpoint PATH (model config: {config}, change it with --sam2-config)."
        )
    # Read it now, so a wrong file stops the run before its long steps.
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise Sam2CheckpointError(
            f"{path}: not a readable SAM2 checkpoint ({type(err).__name__}: {_first_line(err)})"
        ) from None
    if not isinstance(content, dict) or "model" not in content:
        raise Sam2CheckpointError(
            f"{path}: not a SAM2 checkpoint (no 'model' entry); get the .pt files of the "
            f"facebookresearch/sam2 release ({SAM2_RELEASE_URL})"
        )
    return path


def check_image_size(image_size: Optional[int]) -> None:
    """Raises :class:`Sam2SettingsError` unless ``image_size`` is None or a multiple of 32 that is >= 64."""
    if image_size is not None and (image_size % 32 != 0 or image_size < 64):
        raise Sam2SettingsError(f"--sam2-image-size must be a multiple of 32 and >= 64; got {image_size}")


def _hydra_overrides(settings: Sam2Settings) -> List[str]:
    check_image_size(settings.image_size)
    return [] if settings.image_size is None else [f"++model.image_size={settings.image_size}"]


def _autocast(device: str):
    # The video predictor stores memory features in bfloat16 and expects bf16 autocast around it.
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _quiet_sam2():
    """Hides sam2's per-frame warning about its missing compiled hole-filling kernel (the CLI notes it once)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*Skipping the post-processing step.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
        warnings.filterwarnings("ignore", message=r".*cannot import name '_C' from 'sam2'.*")
        yield


def _first_line(err: BaseException, limit: int = 100) -> str:
    # torch's load errors run to many lines; the first words say enough.
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _build(builder, settings: Sam2Settings):
    """Calls a sam2 builder; a checkpoint that does not load becomes one :class:`Sam2CheckpointError`."""
    ckpt = None if settings.checkpoint is None else str(settings.checkpoint)
    try:
        return builder(settings.config, ckpt, device=settings.device, hydra_overrides_extra=_hydra_overrides(settings))
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as err:
        if ckpt is None:
            raise
        raise Sam2CheckpointError(
            f"{ckpt}: cannot load this SAM2 checkpoint into the model of --sam2-config {settings.config} "
            f"({type(err).__name__}: {_first_line(err)}); it must be the matching "
            f"{CHECKPOINT_FOR_CONFIG.get(settings.config, '.pt')}"
        ) from None


def build_mask_generator(settings: Sam2Settings):
    """An automatic mask generator over a SAM2 image model.

    Args:
        settings: Model config, checkpoint, input size, generator thresholds, device.

    Returns:
        ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator``.
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2

    model = _build(build_sam2, settings)
    generator = SAM2AutomaticMaskGenerator(
        model,
        points_per_side=settings.points_per_side,
        pred_iou_thresh=settings.pred_iou_thresh,
        stability_score_thresh=settings.stability_score_thresh,
    )
    size = model.image_size
    # The image predictor hard-codes the feature sizes of a 1024 input (strides 4, 8, 16).
    generator.predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    return generator


def class_masks_for_view(
    generator,
    photo: np.ndarray,
    labels: np.ndarray,
    frame_index: int,
    num_classes: int,
    min_class_share: float,
) -> Tuple[List[ClassMask], int]:
    """Segments a labelled view with SAM2 and gives each mask its majority ground-truth class.

    Args:
        generator: A ``SAM2AutomaticMaskGenerator``.
        photo: uint8 [H, W, 3] photo of the labelled view.
        labels: uint8 [H, W] its ground-truth ids (255 = none).
        frame_index: The view's index in the video.
        num_classes: Number of classes.
        min_class_share: Masks whose majority class covers less than this share are dropped.

    Returns:
        The kept masks, largest first, and the number of masks SAM2 produced.
    """
    device = torch.device(generator.predictor.model.device)
    context = _autocast(str(device)) if device.type == "cuda" else contextlib.nullcontext()
    with context, _quiet_sam2():
        records = generator.generate(photo)
    kept: List[ClassMask] = []
    for record in sorted(records, key=lambda r: -int(r["area"])):
        mask = np.asarray(record["segmentation"], dtype=bool)  # [H, W]
        ids = labels[mask]  # [M]
        ids = ids[ids < num_classes]  # [M'] (255 = no label)
        if ids.size == 0:
            continue
        counts = np.bincount(ids, minlength=num_classes)  # [C]
        class_id = int(counts.argmax())
        share = float(counts[class_id]) / float(ids.size)
        if share >= min_class_share:
            kept.append(ClassMask(frame_index=frame_index, mask=mask, class_id=class_id, share=share))
    return kept, len(records)


def write_video_frames(photos: Sequence[np.ndarray], folder: Path) -> None:
    """Writes photos as ``00000.jpg``, ``00001.jpg``, ... (the frame folder SAM2's video loader reads).

    Args:
        photos: uint8 [H, W, 3] photos in video order.
        folder: Existing (temporary) folder.
    """
    for index, photo in enumerate(photos):
        Image.fromarray(photo).save(Path(folder) / f"{index:05d}.jpg", quality=95)


def propagate_class_masks(
    settings: Sam2Settings,
    photos: Sequence[np.ndarray],
    prompts: Sequence[ClassMask],
    wanted_frames: Sequence[int],
    on_frame: Optional[Callable[[int], None]] = None,
) -> Tuple[Dict[int, PropagatedFrame], int]:
    """Tracks the class masks through the training views with the SAM2 video predictor.

    Args:
        settings: Model config, checkpoint, input size, device.
        photos: uint8 [H, W, 3] photos of all training views in stem order (the video).
        prompts: Masks to track, each added as its own object on its frame.
        wanted_frames: Frame indices whose result is returned (others are tracked but not kept).
        on_frame: Called with each frame index as it is tracked (for progress bars).

    Returns:
        frame index -> resolved result, for every wanted frame; and how many distinct frames the
        propagation visited.
    """
    from sam2.build_sam import build_sam2_video_predictor

    if not prompts:
        raise ValueError("propagate_class_masks: no masks to propagate")
    height, width = photos[0].shape[:2]
    predictor = _build(build_sam2_video_predictor, settings)
    class_of_object = np.array([p.class_id for p in prompts] + [IGNORE_ID], dtype=np.uint8)  # [O + 1]
    wanted = set(int(i) for i in wanted_frames)
    results: Dict[int, PropagatedFrame] = {}
    visited = set()
    with tempfile.TemporaryDirectory(prefix="semsplat-sam2-frames-") as frames_dir:
        write_video_frames(photos, Path(frames_dir))
        with torch.inference_mode(), _autocast(settings.device), _quiet_sam2():
            state = predictor.init_state(
                video_path=frames_dir,
                offload_video_to_cpu=settings.offload_to_cpu,
                offload_state_to_cpu=settings.offload_to_cpu,
            )
            for object_id, prompt in enumerate(prompts):
                predictor.add_new_mask(state, prompt.frame_index, object_id, prompt.mask)
            for reverse in (False, True):
                for frame_index, object_ids, mask_logits in predictor.propagate_in_video(state, reverse=reverse):
                    visited.add(int(frame_index))
                    if frame_index in wanted:
                        results[int(frame_index)] = _resolve_overlaps(
                            mask_logits, object_ids, class_of_object, height, width
                        )
                    if on_frame is not None:
                        on_frame(int(frame_index))
    del predictor
    return results, len(visited)


def _resolve_overlaps(
    mask_logits: torch.Tensor, object_ids: Sequence[int], class_of_object: np.ndarray, height: int, width: int
) -> PropagatedFrame:
    """Per pixel, the object with the highest positive logit; its class, or 255 where none is positive."""
    logits = mask_logits[:, 0].float().cpu()  # [O, H, W]
    if logits.shape[-2:] != (height, width):
        raise RuntimeError(f"SAM2 returned masks of {tuple(logits.shape[-2:])}; expected ({height}, {width})")
    best_logit, best = logits.max(dim=0)  # [H, W], [H, W]
    ids = torch.as_tensor(list(object_ids), dtype=torch.long)[best]  # [H, W]
    owner = torch.where(best_logit > 0, ids, torch.full_like(ids, -1)).numpy().astype(np.int32)  # [H, W]
    labels = class_of_object[owner]  # [H, W] (-1 picks the trailing 255)
    return PropagatedFrame(labels=labels, objects=owner)


def grow_boundary_to_masks(boundary: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """Grows B to the whole of every SAM2 mask that touches it (paper).

    Args:
        boundary: bool [H, W] B from reprojection.
        objects: int32 [H, W] object index per pixel, -1 where none.

    Returns:
        bool [H, W] grown B.
    """
    touching = np.unique(objects[boundary & (objects >= 0)])  # [K]
    return boundary | np.isin(objects, touching)


def has_compiled_extension() -> bool:
    """Whether sam2's compiled ``_C`` extension is there (without it SAM2 skips filling small mask holes)."""
    import importlib.util

    # find_spec rather than an import: the extension has no type stubs, and importing it is not needed.
    try:
        return importlib.util.find_spec("sam2._C") is not None
    except ImportError:  # sam2 itself missing
        return False


def sam2_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = [
    "SAM2_RELEASE_URL",
    "RANDOM_WEIGHTS",
    "Sam2CheckpointError",
    "Sam2SettingsError",
    "Sam2Settings",
    "ClassMask",
    "PropagatedFrame",
    "resolve_checkpoint",
    "check_image_size",
    "build_mask_generator",
    "class_masks_for_view",
    "write_video_frames",
    "propagate_class_masks",
    "grow_boundary_to_masks",
    "has_compiled_extension",
    "sam2_device",
]


def sam2_pseudo_labels(
    args: PseudoLabelArgs,
    scene: TrainSplit,
    pending: List[int],
    labels_of: Dict[int, np.ndarray],
    photos: Dict[int, np.ndarray],
    counts: dict,
    times: dict,
):
    """Runs the SAM2 backend; returns view index -> PropagatedFrame for the pending views."""
    checkpoint = resolve_checkpoint(args.sam2_checkpoint, args.sam2_config)
    if checkpoint is None:
        CONSOLE.print(
            "[bold red]WARNING: --sam2-checkpoint none builds SAM2 with RANDOM weights; the pseudo labels "
            "are meaningless (use this only to test the pipeline).[/bold red]"
        )
    settings = Sam2Settings(
        config=args.sam2_config,
        checkpoint=checkpoint,
        image_size=args.sam2_image_size,
        points_per_side=args.sam2_points_per_side,
        pred_iou_thresh=args.sam2_pred_iou_thresh,
        stability_score_thresh=args.sam2_stability_thresh,
        min_class_share=args.sam2_min_class_share,
        device=sam2_device(),
        offload_to_cpu=args.sam2_offload,
    )
    if not has_compiled_extension():
        CONSOLE.print(
            "[dim]sam2 was installed without its compiled extension: SAM2 skips filling small holes in "
            "tracked masks (results are otherwise the same).[/dim]"
        )
    if args.sam2_all_labelled:
        prompt_views = list(scene.labelled)
    else:
        prompt_views = [random.Random(args.seed).choice(scene.labelled)]
    sizes = sorted(set(scene.sizes))
    if len(sizes) > 1:
        odd = next(p for p, size in zip(scene.photo_paths, scene.sizes) if size != scene.sizes[0])
        raise IRTDataError(
            f"{odd}: the SAM2 backend tracks the training photos as one video, so all must have one "
            f"size; this one differs from {scene.photo_paths[0].name} (sizes: {sizes})"
        )
    started = time.perf_counter()
    read_photos(scene, range(len(scene.stems)), photos)
    video = [photos[i] for i in range(len(scene.stems))]  # the training photos in stem order
    times["sam2_read_photos"] = time.perf_counter() - started

    started = time.perf_counter()
    # Seeded so that a run is repeatable (and random weights, with --sam2-checkpoint none, are the same each time).
    torch.manual_seed(args.seed)
    generator = build_mask_generator(settings)
    prompts: List = []
    generated = 0
    with _progress() as progress:
        task = progress.add_task("SAM2 masks on labelled views", total=len(prompt_views))
        for i in prompt_views:
            kept, produced = class_masks_for_view(
                generator, video[i], labels_of[i], i, scene.num_classes, settings.min_class_share
            )
            prompts.extend(kept)
            generated += produced
            progress.advance(task)
    del generator
    times["sam2_masks"] = time.perf_counter() - started
    counts["sam2_prompt_views"] = [scene.stems[i] for i in prompt_views]
    counts["sam2_masks_generated"] = generated
    counts["sam2_masks_kept"] = len(prompts)
    counts["sam2_frames_propagated"] = 0
    if not prompts:
        CONSOLE.print(
            "[bold yellow]SAM2 kept no mask (none reached --sam2-min-class-share); every pseudo label "
            "is 255.[/bold yellow]"
        )
        return {}

    started = time.perf_counter()
    with _progress() as progress:
        # Forward from the first prompted frame to the end, then backward to frame 0 (none if it is frame 0).
        first = min(p.frame_index for p in prompts)
        steps = len(video) - first + (first + 1 if first > 0 else 0)
        task = progress.add_task(f"SAM2 tracking {len(prompts)} masks", total=steps)
        frames, visited = propagate_class_masks(
            settings, video, prompts, pending, on_frame=lambda _i: progress.advance(task)
        )
    times["sam2_propagation"] = time.perf_counter() - started
    counts["sam2_frames_propagated"] = visited
    return frames
