"""Unet baseline: a plain 2D segmentation network trained from scratch on the labelled views only.

The training-based reference of the IRT benchmark. Per scene: the project's Unet
(:mod:`semsplat_ns.pseudo.unet`, the network the prior of ``semsplat-pseudo-labels --backend prior`` uses;
5 levels, base width 32, BatchNorm, no pretrained weights) is trained on random 256x256 crops of the few
LABELLED training views (batch 8, the 8 symmetries of the square, brightness jitter; AdamW with a one-cycle
LR schedule peaking at 2e-3), then every test view is predicted at full resolution, timed by the project's
one per-view protocol (:class:`~semsplat_ns.eval.timing.PerViewTiming`) and scored with the IRT definition:
ONE confusion matrix over all test pixels, mIoU over classes with a non-empty union, mIoU over classes
present in the ground truth, pixel accuracy. Scenes are read by :mod:`semsplat_ns.data.irt_io`, as
semsplat reads them. One row per scene (method ``"unet"``) is appended to ``--out``.

Usage::

    python benchmarks/baselines/unet.py --data ../shared/data/townA --data ../shared/data/townB \\
        --out benchmarks/results/unet.json --steps 3000 --device cuda
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import tyro
from rich.progress import Progress
from rich.table import Table
from torch import Tensor

# Runs as `python benchmarks/baselines/unet.py` as well as `python -m benchmarks.baselines.unet`.
_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.common import append_rows, scored_row  # noqa: E402
from semsplat_ns.console import CONSOLE, progress_bar  # noqa: E402
from semsplat_ns.data import irt_io  # noqa: E402
from semsplat_ns.data.classes import SceneClasses, read_scene_classes  # noqa: E402
from semsplat_ns.data.irt_io import IRTDataError  # noqa: E402
from semsplat_ns.eval.metrics import confusion_matrix, iou_per_class, miou, miou_present, pixel_accuracy  # noqa: E402
from semsplat_ns.eval.timing import PerViewTiming  # noqa: E402
from semsplat_ns.pseudo.unet import (  # noqa: E402
    CropSampler,
    Unet,
    UnetRecipe,
    photo_tensor,
    predict_logits,
    recipe_problems,
)
from semsplat_ns.pseudo.unet import train_unet as train_network  # noqa: E402

__all__ = [
    "UnetBaselineConfig",
    "SceneViews",
    "Unet",
    "CropSampler",
    "load_scene",
    "train_unet",
    "evaluate_unet",
    "run_scene",
    "main",
    "entrypoint",
]

METHOD = "unet"


def _baseline_recipe() -> UnetRecipe:
    """The baseline's recipe: 3000 steps of 8 labelled crops, float32 (on an H100 this small network is
    launch-bound and float32 with TF32 convolutions trained a step faster than bf16, 9.8 vs 11.0 ms, at equal
    mIoU), cuDNN free to pick its kernels (as the published timings were taken), 256-pixel crops (as the prior's,
    which were 192 from 91bfafd to d8f048f)."""
    return UnetRecipe(steps=3000, crop=256, labelled_batch=8, bf16=False, deterministic=False, class_balance="none")


@dataclass
class UnetBaselineConfig:
    """Trains and scores the Unet baseline on one or more IRT scenes. The recipe's flags (--steps, --crop,
    --width, --levels, --labelled-batch, --peak-lr, --weight-decay, --brightness, --bf16, --deterministic,
    --seed) are those of semsplat_ns.pseudo.unet.UnetRecipe, shared with the prior (--prior.*); the baseline's
    defaults: 3000 steps, 8 crops per step, float32, non-deterministic cuDNN."""

    data: tyro.conf.UseAppendAction[List[Path]]
    """IRT scene folder; repeat the flag for several scenes (one row each)."""
    out: Path = Path("benchmarks/results/unet.json")
    """JSON results file; rows of the same (scene, method) are replaced."""
    device: str = "cuda"
    """Torch device to train and test on (``cuda``, ``cuda:1``, ``cpu``)."""
    unet: Annotated[UnetRecipe, tyro.conf.arg(name="")] = field(default_factory=_baseline_recipe)
    """The network and its training recipe (flags without a prefix: --steps, --crop, ...)."""
    warmup_views: int = 3
    """Untimed forward passes before the per-view test timing (cuDNN autotuning, caches)."""


@dataclass
class SceneViews:
    """The views of one scene that the baseline uses.

    Attributes:
        name: Scene name (the folder's name).
        num_classes: Number of classes C.
        class_names: One name per class id.
        train_stems: Stems of the labelled training views.
        train_photos: Photos ``[H, W, 3]`` uint8, one per labelled training view.
        train_labels: Class ids ``[H, W]`` uint8, one per labelled training view.
        test_stems: Stems of all test views.
        test_photos: Photos ``[H, W, 3]`` uint8, one per test view.
        test_labels: Class ids ``[H, W]`` uint8, one per test view.
    """

    name: str
    num_classes: int
    class_names: List[str]
    train_stems: List[str]
    train_photos: List[np.ndarray]
    train_labels: List[np.ndarray]
    test_stems: List[str]
    test_photos: List[np.ndarray]
    test_labels: List[np.ndarray]


def _labelled_views(
    files: irt_io.SplitFiles, classes: SceneClasses
) -> Tuple[List[str], List[np.ndarray], List[np.ndarray]]:
    """(stems, photos [H, W, 3], labels [H, W]) of the labelled views of a split, each label checked against its
    photo's size."""
    colors = classes.colors if classes.label_is_color else None
    stems, photos, labels = [], [], []
    for stem, photo_path, label_path in zip(files.stems, files.photo_paths, files.label_paths):
        if label_path is None:
            continue
        photo = irt_io.read_photo(photo_path)  # [H, W, 3]
        label = irt_io.read_label(label_path, colors, classes.num_classes)  # [H, W]
        if label.shape != photo.shape[:2]:
            raise IRTDataError(
                f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its photo {photo_path.name} is "
                f"{photo.shape[1]}x{photo.shape[0]}"
            )
        stems.append(stem)
        photos.append(photo)
        labels.append(label)
    return stems, photos, labels


def load_scene(scene: Path) -> SceneViews:
    """Reads the labelled training views and all test views of an IRT scene (through
    :mod:`semsplat_ns.data.irt_io`, so the baseline reads a scene exactly as semsplat does).

    Args:
        scene: The scene folder (``train/``, ``test/`` with color/, rgb/, pose/, intrinsics/; optional
            ``classes.json``).

    Returns:
        The views; the classes follow the project's one rule (classes.json, else the largest id over all
        labels + 1).

    Raises:
        IRTDataError: When a folder or file is missing, unreadable or inconsistent, or a test view has no label.
    """
    scene = Path(scene)
    if not scene.is_dir():
        raise IRTDataError(f"{scene}: scene folder not found")
    train = irt_io.find_split_stems(scene / "train")
    test = irt_io.find_split_stems(scene / "test")
    unlabelled = [stem for stem, label in zip(test.stems, test.label_paths) if label is None]
    if unlabelled:
        raise IRTDataError(f"{scene / 'test' / 'rgb'}: every test view needs a label; missing for {unlabelled[:5]}")
    classes = read_scene_classes(scene)
    train_stems, train_photos, train_labels = _labelled_views(train, classes)
    if not train_stems:
        raise IRTDataError(f"{scene / 'train' / 'rgb'}: no labelled training view; the baseline needs some")
    test_stems, test_photos, test_labels = _labelled_views(test, classes)
    return SceneViews(
        name=scene.resolve().name,
        num_classes=classes.num_classes,
        class_names=list(classes.names),
        train_stems=train_stems,
        train_photos=train_photos,
        train_labels=train_labels,
        test_stems=test_stems,
        test_photos=test_photos,
        test_labels=test_labels,
    )


def train_unet(
    scene: SceneViews, config: UnetBaselineConfig, device: torch.device, progress: Optional[Progress] = None
) -> Tuple[Unet, float]:
    """Trains a Unet from scratch on the scene's labelled training views.

    Args:
        scene: The scene's views.
        config: The baseline's settings; ``config.unet`` is the recipe.
        device: Where to train.
        progress: Rich progress display to report on; None trains silently.

    Returns:
        The trained model (in train mode) and the training wall time in seconds.
    """
    recipe = config.unet
    problems = recipe_problems(recipe)
    if problems:
        raise ValueError("; ".join(problems))
    for stem, photo in zip(scene.train_stems, scene.train_photos):
        if min(photo.shape[:2]) < recipe.crop:
            raise IRTDataError(
                f"{scene.name} train view {stem} is {photo.shape[1]}x{photo.shape[0]}, "
                f"smaller than --crop {recipe.crop}"
            )
    sampler = CropSampler(scene.train_photos, scene.train_labels, recipe.crop, recipe.brightness, device)
    return train_network(
        [(sampler, recipe.labelled_batch)],
        scene.num_classes,
        recipe,
        device,
        progress,
        description=f"{scene.name}: train",
    )


def _advancing(progress: Progress, description: str, total: int):
    """A wrapper for PerViewTiming's loop that advances one progress task per view."""

    def wrap(views: Iterable) -> Iterator:
        task = progress.add_task(description, total=total)
        for view in views:
            yield view
            progress.advance(task)

    return wrap


@torch.no_grad()
def evaluate_unet(
    model: Unet,
    scene: SceneViews,
    device: torch.device,
    bf16: bool = False,
    warmup_views: int = 3,
    progress: Optional[Progress] = None,
) -> Dict[str, Any]:
    """Predicts every test view at full resolution and scores it with the IRT definition.

    Args:
        model: The trained Unet (switched to eval mode here).
        scene: The scene's views.
        device: Where the model lives.
        bf16: Use bf16 autocast on CUDA.
        warmup_views: Untimed forward passes before timing.
        progress: Rich progress display to report on; None evaluates silently.

    Returns:
        ``miou``, ``miou_present``, ``acc`` (from ONE confusion matrix over all test pixels) and the timing
        protocol's fields (``test_ms_per_view``: median forward + argmax time, one view at a time;
        ``test_ms_per_view_p95``, ``timing_warmup_views``, ``timed_views``).
    """
    model.eval()
    # Inputs on the device before the clock, as the protocol times them.
    views: List[Tuple[Tensor, Tensor]] = [
        (photo_tensor(photo, device), torch.from_numpy(label).to(device).long())  # [3, H, W], [H, W]
        for photo, label in zip(scene.test_photos, scene.test_labels)
    ]
    cm = torch.zeros(scene.num_classes, scene.num_classes, dtype=torch.long, device=device)  # [C, C]

    def predict(view: Tuple[Tensor, Tensor]) -> Tensor:
        return predict_logits(model, view[0], bf16).argmax(dim=0)  # [H, W]

    def score(view: Tuple[Tensor, Tensor], prediction: Tensor) -> None:
        nonlocal cm
        cm = cm + confusion_matrix(prediction, view[1], scene.num_classes)  # [C, C]

    wrap = _advancing(progress, f"{scene.name}: test", len(views)) if progress is not None else None
    times = PerViewTiming(warmup_views=warmup_views).run(predict, views, device, score=score, progress=wrap)
    cm = cm.cpu()
    ious = iou_per_class(cm).tolist()  # [C], NaN where a class has an empty union
    per_class = {name: (None if iou != iou else iou) for name, iou in zip(scene.class_names, ious)}
    return {
        "miou": miou(cm),
        "miou_present": miou_present(cm),
        "acc": pixel_accuracy(cm),
        "per_class_iou": per_class,
        **times.as_fields(),
    }


def _resolve_device(name: str) -> torch.device:
    """Parses ``--device`` and fails clearly when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def command_line() -> str:
    """The command that is running, with the script path relative to the repository when possible."""
    argv = list(sys.argv)
    if argv and argv[0]:
        script = Path(argv[0]).resolve()
        try:
            argv[0] = str(script.relative_to(_REPO_ROOT))
        except ValueError:
            pass
    return shlex.join(["python", *argv])


def run_scene(
    scene_dir: Path, config: UnetBaselineConfig, device: torch.device, command: str, progress: Optional[Progress] = None
) -> dict:
    """Trains and evaluates the baseline on one scene.

    Args:
        scene_dir: The IRT scene folder.
        config: The recipe.
        device: Where to train and test.
        command: Command line recorded in the row.
        progress: Rich progress display; None runs silently.

    Returns:
        The benchmark row (method ``"unet"``).
    """
    scene = load_scene(scene_dir)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, train_s = train_unet(scene, config, device, progress)
    figures = evaluate_unet(
        model, scene, device, bf16=config.unet.bf16, warmup_views=config.warmup_views, progress=progress
    )
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return scored_row(
        scene.name,
        METHOD,
        figures,
        train_s=train_s,
        steps=config.unet.steps,
        peak_gpu_mem_gb=peak_gb,
        n_gaussians=None,
        command=command,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    )


def _fmt(value: Optional[float], scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def main(config: UnetBaselineConfig) -> List[dict]:
    """Runs the baseline on every ``--data`` scene, appending one row each to ``--out``.

    Args:
        config: The parsed command line.

    Returns:
        The new rows, in the order of ``--data``.
    """
    device = _resolve_device(config.device)
    command = command_line()
    rows = []
    with progress_bar() as progress:
        for scene_dir in config.data:
            row = run_scene(scene_dir, config, device, command, progress)
            # Written after every scene so that a later failure keeps the finished rows.
            append_rows(config.out, [row])
            rows.append(row)
    print_rows(rows, f"Unet baseline ({config.unet.steps} steps) -> {config.out}")
    return rows


def print_rows(rows: Sequence[dict], title: str) -> None:
    """A table of benchmark rows on the console."""
    table = Table(title=title)
    for column in ("scene", "method", "mIoU %", "mIoU present %", "acc %", "test ms/view", "train s", "device"):
        table.add_column(column, justify="left" if column in ("scene", "method", "device") else "right")
    for row in rows:
        table.add_row(
            row["scene"],
            row["method"],
            _fmt(row["miou"], 100),
            _fmt(row["miou_present"], 100),
            _fmt(row["acc"], 100),
            _fmt(row["test_ms_per_view"], digits=2),
            _fmt(row["train_s"]),
            row["device"],
        )
    CONSOLE.print(table)


def entrypoint() -> None:
    """Command-line entry point."""
    main(tyro.cli(UnetBaselineConfig, description=(__doc__ or "").split("\n\n")[0]))


if __name__ == "__main__":
    entrypoint()
