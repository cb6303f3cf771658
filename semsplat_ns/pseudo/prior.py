"""The 2D prior of ``semsplat-pseudo-labels --backend prior``.

Most pixels that test views see were never seen by a labelled view, so labels carried by 3D reprojection
alone leave most of each view without a pseudo label. The prior fills them: a small Unet
(:mod:`semsplat_ns.pseudo.unet`) is trained per scene, from scratch, on the labelled views plus the
reprojected labels of every other training view (each step: ``labelled_batch`` crops of labelled views and
``pseudo_batch`` crops of reprojected ones; pixels without a label are left out of the loss), then predicts
every unlabelled training view. The pseudo label of a pixel is

    the reprojected class where reprojection gives one (confidence 1),
    else the prior's most likely class where its softmax probability p >= ``threshold`` (and, with ``margin``,
        the prior's class is the same all around the pixel) (confidence p),
    else none (255, confidence 0).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import tyro
from rich.progress import Progress

from semsplat_ns.atomic import atomic_open
from semsplat_ns.console import CONSOLE, progress_bar
from semsplat_ns.data.irt_io import IGNORE_ID
from semsplat_ns.errors import UserInputError
from semsplat_ns.geometry.visibility import uniform_labels
from semsplat_ns.pseudo.scene import TrainSplit
from semsplat_ns.pseudo.unet import (
    CropSampler,
    Unet,
    UnetRecipe,
    UnetTraining,
    cudnn_settings,
    predict_batch_probabilities,
    recipe_problems,
    train_unet,
)

PRIOR_VERSION = 1
"""Changes whenever the prior's algorithm changes, so cached pseudo labels of an older one are rebuilt."""

PREDICT_BATCH_VIEWS = 8
"""Views the prior predicts per forward pass (of one size): the device is waited on once per batch, not per view.
Eight 512x512 views hold about 0.2 GB of float32 logits (20 classes)."""


@dataclass
class PriorSettings:
    """How the prior is trained (the Unet recipe, :class:`~semsplat_ns.pseudo.unet.UnetRecipe`) and how its
    predictions become pseudo labels."""

    unet: Annotated[UnetRecipe, tyro.conf.arg(name="")] = field(default_factory=UnetRecipe)
    """The Unet and its training (steps, crop, width, levels, labelled-batch, peak-lr, weight-decay, brightness,
    bf16, deterministic, cudnn-benchmark, step-runner, seed); its flags carry no ``unet.`` prefix: ``--prior.steps``.
    6000 steps took 68-70 s on one H200, about 75 s on an H100, for 100 views of 512x512 with the eager step; the
    default CUDA-graph step measured 7.27 against 13.86 ms per step on an H100. The seed also fixes every crop draw
    (same seed, same device: same pseudo labels)."""
    pseudo_batch: int = 4
    """Crops of reprojected (3D-propagated) labels of the other training views per step, besides the
    labelled-batch crops of labelled views."""
    threshold: float = 0.9
    """Where reprojection gives no class, the prior's class is kept where its softmax probability is at least
    this; below it the pixel gets no pseudo label (255)."""
    labelled_only_share: float = 0.0
    """Share of the prior's steps, from its start, that draw all their crops (labelled-batch + pseudo-batch) from the
    labelled views (:meth:`labelled_only_steps`); the reprojected labels join the batches after them, with the class
    weights of both pools, and the pseudo-label pipeline makes them beside those steps (on a scene's first run with
    its seed points' triangulation). 0: every step has both kinds of crop. (With no reprojected label at all, the
    labelled views fill every batch to the end.)"""
    margin: int = 0
    """Where the prior gives the class, keep it only if the prior's class is the same within this many pixels
    (a (2 margin + 1)^2 window): no pseudo label on the prior's class edges, where thin objects it half sees
    (poles, signs, lights) lie. 0: no such test."""
    device: Optional[str] = None
    """Torch device of the prior (cuda, cuda:1, cpu); default: CUDA when available, else the CPU."""
    save_weights: Optional[Path] = None
    """Also save the trained network here (.pt), e.g. to score it on the test views (benchmarks/prior.py)."""


def labelled_only_steps(settings: PriorSettings) -> int:
    """The prior's first steps on the labelled views alone: ``labelled_only_share`` of its steps, rounded, and at most
    all but the last (the reprojected labels join at the latest for it)."""
    if settings.labelled_only_share <= 0:
        return 0
    return min(round(settings.labelled_only_share * settings.unet.steps), settings.unet.steps - 1)


class PriorError(UserInputError):
    """Settings of the prior that cannot work; the message names the flag (a user error: one line, exit 2)."""


def check_settings(settings: PriorSettings) -> None:
    """Raises :class:`PriorError` for settings that cannot train (before any long step)."""
    problems = recipe_problems(settings.unet, "--prior.")
    if settings.pseudo_batch < 0:
        problems.append(f"--prior.pseudo-batch must be at least 0, got {settings.pseudo_batch}")
    if not 0.0 <= settings.threshold <= 1.0:
        problems.append(f"--prior.threshold must lie in [0, 1], got {settings.threshold}")
    if settings.margin < 0:
        problems.append(f"--prior.margin must be at least 0, got {settings.margin}")
    if not 0.0 <= settings.labelled_only_share < 1.0:
        problems.append(f"--prior.labelled-only-share must lie in [0, 1), got {settings.labelled_only_share}")
    if problems:
        raise PriorError("; ".join(problems))


NOT_CACHED = ("device", "save_weights", "step_runner", "cudnn_benchmark")
"""Settings that say where and how the prior runs, not what it computes (the device, where its weights go, how each
step is launched, whether cuDNN times its algorithms): left out of the cache key, so changing them does not rebuild
cached pseudo labels. Like the device, the last two may change the rounding on a GPU, not the recipe."""


def flat_settings(settings: PriorSettings) -> Dict[str, Any]:
    """Every setting of the prior, flat and named as its flag (``steps`` for ``--prior.steps``): the Unet recipe's
    fields and the prior's own (as meta.json records them).

    Args:
        settings: The prior's settings.

    Returns:
        Field name -> value.
    """
    recipe = asdict(settings.unet)
    own = {f.name: getattr(settings, f.name) for f in dataclass_fields(settings) if f.name != "unet"}
    assert not set(recipe) & set(own), "a prior setting shadows a Unet recipe field; their flags would clash"
    return {**recipe, **own}


def cache_fields(settings: PriorSettings) -> Dict[str, Any]:
    """The settings that decide the pseudo labels: :func:`flat_settings` but :data:`NOT_CACHED`. Derived from the
    dataclass fields, so a setting added to the recipe or the prior is in the key unless listed there."""
    return {name: value for name, value in flat_settings(settings).items() if name not in NOT_CACHED}


def resolve_device(settings: PriorSettings, fallback: Optional[str] = None) -> torch.device:
    """The prior's device: ``settings.device``, else ``fallback``, else CUDA when available, else the CPU."""
    name = settings.device or fallback or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PriorError(f"--prior.device {name}: CUDA is not available on this machine (use --prior.device cpu)")
    return device


def fitting_crop(settings: PriorSettings, sizes: Sequence[Tuple[int, int]]) -> int:
    """The crop side used: ``settings.unet.crop``, shrunk to the largest multiple of the Unet's divisor that fits
    the smallest view (small scenes still train instead of failing)."""
    recipe = settings.unet
    divisor = 2 ** (recipe.levels - 1)
    smallest = min(min(size) for size in sizes)
    fits = (smallest // divisor) * divisor
    if fits < divisor:
        raise PriorError(
            f"the smallest training view is {smallest} pixels; a {recipe.levels}-level prior needs at least "
            f"{divisor} (pass a smaller --prior.levels)"
        )
    return min(recipe.crop, fits)


def prior_pools(
    labelled: Sequence[Tuple[np.ndarray, np.ndarray]],
    propagated: Sequence[Tuple[np.ndarray, np.ndarray]],
    settings: PriorSettings,
    crop: int,
    device: torch.device,
) -> List[Tuple[CropSampler, int]]:
    """The prior's crop pools: ``labelled_batch`` crops of the labelled views and ``pseudo_batch`` crops of the views
    with reprojected labels per step (none of those without any).

    Args:
        labelled: (photo uint8 [H, W, 3], label uint8 [H, W]) of every labelled view.
        propagated: (photo, reprojected label uint8 [H, W], 255 = none) of views that have some.
        settings: Batch sizes and brightness jitter.
        crop: Crop side.
        device: Where the crops are made.

    Returns:
        (sampler, crops per step) pairs for :func:`~semsplat_ns.pseudo.unet.train_unet`.
    """
    brightness = settings.unet.brightness
    sampler = CropSampler([p for p, _ in labelled], [lab for _, lab in labelled], crop, brightness, device)
    return [(sampler, settings.unet.labelled_batch)] + reprojected_pool(propagated, settings, crop, device)


def reprojected_pool(
    propagated: Sequence[Tuple[np.ndarray, np.ndarray]], settings: PriorSettings, crop: int, device: torch.device
) -> List[Tuple[CropSampler, int]]:
    """The pool of the views with reprojected labels (:func:`prior_pools`): ``pseudo_batch`` crops per step; none
    without such views or with a pseudo-batch of 0."""
    if not propagated or settings.pseudo_batch <= 0:
        return []
    photos, labels = [p for p, _ in propagated], [c for _, c in propagated]
    return [(CropSampler(photos, labels, crop, settings.unet.brightness, device), settings.pseudo_batch)]


@dataclass
class LateLabels:
    """Reprojected labels still being made when the prior starts (on a scene's first run, beside its seed points'
    triangulation); they join the batches after :func:`labelled_only_steps` steps, which the prior must have."""

    start: Callable[[], None]
    """Starts making them; called once the prior's step runner captures nothing more on the device (their CUDA work
    may then run beside the prior's)."""
    result: Callable[[], Dict[int, np.ndarray]]
    """Waits for them: reprojected class ids uint8 [H, W] (255 = none) per view, as ``carried_of`` elsewhere."""
    sizes: Sequence[Tuple[int, int]]
    """(height, width) of every view that may get some: the crop must fit them before they exist."""


def train_prior(
    num_classes: int,
    labelled: Sequence[Tuple[np.ndarray, np.ndarray]],
    propagated: Union[Sequence[Tuple[np.ndarray, np.ndarray]], Callable[[], Sequence[Tuple[np.ndarray, np.ndarray]]]],
    settings: PriorSettings,
    device: torch.device,
    progress: Optional[Progress] = None,
    late: Optional[LateLabels] = None,
) -> Tuple[Unet, float, int]:
    """Trains the prior from scratch.

    Args:
        num_classes: Number of classes C.
        labelled: (photo uint8 [H, W, 3], label uint8 [H, W]) of every labelled view.
        propagated: (photo, reprojected label uint8 [H, W], 255 = none) of other training views; views
            without any reprojected label are skipped. With ``late``: a function that gives them once
            ``late.result`` has (called when they join the batches).
        settings: The recipe.
        device: Where to train.
        progress: Rich progress display; None trains silently.
        late: Reprojected labels still being made (:class:`LateLabels`); needs :func:`labelled_only_steps`.

    Returns:
        The trained network (eval mode), the training wall time in seconds, and the crop side used.
    """
    if not labelled:
        raise PriorError("the prior needs at least one labelled view")
    labelled_only = labelled_only_steps(settings)
    if late is None:
        assert not callable(propagated)
        known = [(photo, carried) for photo, carried in propagated if (carried != IGNORE_ID).any()]
        sizes = [photo.shape[:2] for photo, _ in list(labelled) + known]
    else:
        assert callable(propagated) and labelled_only > 0, "late labels join after labelled-only steps"
        known = []
        sizes = [photo.shape[:2] for photo, _ in labelled] + list(late.sizes)
    crop = fitting_crop(settings, sizes)
    recipe = settings.unet
    if crop != recipe.crop:
        CONSOLE.print(f"[yellow]prior: views are small; training on {crop}-pixel crops instead of {recipe.crop}")
    CONSOLE.print(
        f"prior: {recipe.steps} steps on {device}, {len(labelled)} labelled views and "
        + (f"{len(known)} views with reprojected labels" if late is None else "the reprojected labels being made")
        + (f" (from step {labelled_only})" if labelled_only else "")
    )
    pools = prior_pools(labelled, known, settings, crop, device)
    before_step: Optional[Callable[[int, UnetTraining], None]] = None
    if labelled_only > 0:
        labelled_pool = pools[0]
        both = pools
        pools = [(labelled_pool[0], settings.unet.labelled_batch + settings.pseudo_batch)]  # labelled crops only

        def join_reprojected(step: int, training: UnetTraining) -> None:
            nonlocal both
            if late is not None and step == min(training.capturing_steps, labelled_only):
                late.start()
            if step != labelled_only:
                return
            if late is not None:
                assert callable(propagated)
                arrived = [(photo, carried) for photo, carried in propagated() if (carried != IGNORE_ID).any()]
                both = [labelled_pool] + reprojected_pool(arrived, settings, crop, device)
            if len(both) > 1:
                training.use_pools(both)

        before_step = join_reprojected

    model, seconds = train_unet(
        pools,
        num_classes,
        replace(recipe, crop=crop),
        device,
        progress,
        description="Training the prior",
        before_step=before_step,
    )
    model.eval()
    return model, seconds, crop


def fuse(
    carried: np.ndarray, prior_ids: np.ndarray, prior_probability: np.ndarray, threshold: float, margin: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """Pseudo labels from reprojection and the prior (see the module docstring).

    Args:
        carried: uint8 [H, W] reprojected class ids, 255 = none.
        prior_ids: uint8 [H, W] the prior's most likely class.
        prior_probability: float [H, W] its softmax probability.
        threshold: Smallest probability at which the prior's class is kept.
        margin: The prior's class is kept only where it is uniform within this many pixels (0: everywhere).

    Returns:
        uint8 [H, W] pseudo ids (255 = none) and float32 [H, W] confidence in [0, 1]: 1 where reprojected,
        the prior's probability where its class is kept, 0 where there is no pseudo label.
    """
    reprojected = carried != IGNORE_ID  # [H, W]
    trusted = ~reprojected & (prior_probability >= threshold)  # [H, W]
    if margin > 0:
        uniform = uniform_labels(torch.from_numpy(np.ascontiguousarray(prior_ids)), margin).numpy()  # [H, W]
        trusted &= uniform != IGNORE_ID
    labels = np.where(reprojected, carried, np.where(trusted, prior_ids, IGNORE_ID)).astype(np.uint8)  # [H, W]
    confidence = np.where(reprojected, 1.0, np.where(trusted, prior_probability, 0.0)).astype(np.float32)
    return labels, confidence


def save_prior(model: Unet, path: Path, settings: PriorSettings) -> None:
    """Saves the network with what is needed to rebuild it (:func:`load_prior`)."""
    payload = {
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "num_classes": model.num_classes,
        "width": settings.unet.width,
        "levels": model.levels,
        "bf16": settings.unet.bf16,
        "version": PRIOR_VERSION,
    }
    with atomic_open(Path(path), "wb") as handle:
        torch.save(payload, handle)


def load_prior(path: Path, device: torch.device) -> Tuple[Unet, Dict]:
    """Loads a network saved by :func:`save_prior`, in eval mode on ``device``; also returns the payload."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = Unet(int(payload["num_classes"]), width=int(payload["width"]), levels=int(payload["levels"]))
    model.load_state_dict(payload["state_dict"])
    model = model.to(device).to(memory_format=torch.channels_last)
    model.eval()
    return model, payload


def predict_views(
    model: Unet,
    photos: Dict[int, np.ndarray],
    carried_of: Dict[int, np.ndarray],
    pending: Sequence[int],
    settings: PriorSettings,
    device: torch.device,
    progress: Optional[Progress] = None,
) -> Tuple[Dict[int, np.ndarray], Dict[int, np.ndarray], float]:
    """The prior's predictions fused with the reprojected labels (:func:`fuse`), per pending view.

    Args:
        model: The trained prior (eval mode) on ``device``.
        photos: uint8 [H, W, 3] photo per view.
        carried_of: uint8 [H, W] reprojected class ids (255 = none) per view; a view without one has none.
        pending: Views to predict.
        settings: Threshold, margin, bf16.
        device: The model's device.
        progress: Rich progress display; None predicts silently.

    Returns:
        Pseudo ids and confidence per pending view, and the mean share of pixels whose pseudo label comes from the
        prior (not from reprojection).
    """
    pseudo: Dict[int, np.ndarray] = {}
    confidence: Dict[int, np.ndarray] = {}
    kept = 0.0
    task = progress.add_task("Predicting the unlabelled views with the prior", total=len(pending)) if progress else None
    # Under the training's cuDNN settings: ns-train turns benchmarking on, which times every algorithm of each new
    # shape first. Batched but timed, the prediction took 2.9-4.0 s on H200s (023e95c); untimed, 0.7-1.0 s (a676606,
    # six runs). Deterministic kernels also give the same labels on every run.
    with cudnn_settings(settings.unet, device):
        for batch in same_size_batches(pending, photos, PREDICT_BATCH_VIEWS):
            predicted = predict_batch_probabilities(model, [photos[i] for i in batch], device, settings.unet.bf16)
            for i, (ids, probability) in zip(batch, predicted):  # [H, W], [H, W]
                carried = carried_of.get(i, np.full(ids.shape, IGNORE_ID, np.uint8))  # [H, W]
                pseudo[i], confidence[i] = fuse(carried, ids, probability, settings.threshold, settings.margin)
                kept += float(((carried == IGNORE_ID) & (pseudo[i] != IGNORE_ID)).mean())
            if progress is not None and task is not None:
                progress.advance(task, len(batch))
    return pseudo, confidence, kept / max(len(pending), 1)


def same_size_batches(views: Sequence[int], photos: Dict[int, np.ndarray], most: int) -> List[List[int]]:
    """``views`` in order, cut into runs of at most ``most`` consecutive views whose photos have one size (a batch
    of the prior's forward pass must)."""
    assert most >= 1, f"a batch holds at least one view, got {most}"
    batches: List[List[int]] = []
    for i in views:
        last = batches[-1] if batches else None
        if last is not None and len(last) < most and photos[last[0]].shape == photos[i].shape:
            last.append(i)
        else:
            batches.append([i])
    return batches


def prior_pseudo_labels(
    settings: PriorSettings,
    scene: TrainSplit,
    labels_of: Dict[int, np.ndarray],
    photos: Dict[int, np.ndarray],
    carried_of: Union[Dict[int, np.ndarray], LateLabels],
    pending: Sequence[int],
    device: torch.device,
    times: Dict[str, float],
) -> Tuple[Dict[int, np.ndarray], Dict[int, np.ndarray], Dict[str, Any]]:
    """Trains the prior and fuses its predictions with the reprojected labels of the pending views.

    Args:
        settings: The prior's recipe and threshold.
        scene: The training split.
        labels_of: Labels of the labelled views.
        photos: Photos of the labelled and unlabelled views.
        carried_of: Reprojected class ids (255 = none) of the unlabelled views (empty without depth), or the
            :class:`LateLabels` that will give them (a prior with labelled-only steps then starts before they exist).
        pending: Views to predict.
        device: Where the prior runs.
        times: Step times, filled in ("prior_train", "prior_predict"; with late labels also "prior_wait": how long
            the prior waited for them).

    Returns:
        Pseudo ids and confidence per pending view, and what is recorded about the prior.
    """
    labelled = [(photos[i], labels_of[i]) for i in scene.labelled]
    late = carried_of if isinstance(carried_of, LateLabels) else None
    waited = 0.0

    def propagated_of(carried: Dict[int, np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
        return [(photos[i], carried[i]) for i in scene.targets if i in carried]

    def arrived() -> List[Tuple[np.ndarray, np.ndarray]]:
        nonlocal waited
        assert late is not None
        started = time.perf_counter()
        carried = late.result()
        waited = time.perf_counter() - started
        return propagated_of(carried)

    with progress_bar() as progress:
        if late is None:
            assert isinstance(carried_of, dict)
            propagated = propagated_of(carried_of)
            model, train_s, crop = train_prior(scene.num_classes, labelled, propagated, settings, device, progress)
        else:
            model, train_s, crop = train_prior(scene.num_classes, labelled, arrived, settings, device, progress, late)
            carried_of = late.result()  # made (and waited for) while training; the prior is done with them
            times["prior_wait"] = waited
            propagated = propagated_of(carried_of)
        times["prior_train"] = train_s
        if settings.save_weights is not None:
            save_prior(model, settings.save_weights, settings)
        started = time.perf_counter()
        pseudo, confidence, kept = predict_views(model, photos, carried_of, pending, settings, device, progress)
        times["prior_predict"] = time.perf_counter() - started
    del model
    if device.type == "cuda":
        # Training (e.g. the splats, right after the automatic pseudo labels) gets the memory back.
        torch.cuda.empty_cache()
    record = {
        "version": PRIOR_VERSION,
        "device": str(device),
        "crop": crop,
        "labelled_views": len(labelled),
        "reprojected_views": sum(1 for _, carried in propagated if (carried != IGNORE_ID).any()),
        "train_s": train_s,
        # Share of pixels whose pseudo label comes from the prior (not from reprojection).
        "coverage_from_prior": kept,
    }
    return pseudo, confidence, record
