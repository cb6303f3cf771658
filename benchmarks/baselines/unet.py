"""Unet baseline: a plain 2D segmentation network trained from scratch on the labelled views only.

The training-based reference of the IRT benchmark. Per scene: a 5-level Unet (base width 32, BatchNorm,
no pretrained weights) is trained on random 256x256 crops of the few LABELLED training views (batch 8,
flips, 90-degree rotations, brightness jitter; AdamW with a one-cycle LR schedule peaking at 2e-3), then
every test view is predicted at full resolution and scored with the IRT definition: ONE confusion matrix
over all test pixels, mIoU over classes with a non-empty union, mIoU over classes present in the ground
truth, pixel accuracy. One row per scene (method ``"unet"``) is appended to ``--out``.

Usage::

    python benchmarks/baselines/unet.py --data ../shared/data/townA --data ../shared/data/townB \\
        --out benchmarks/results/unet.json --steps 3000 --device cuda
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from torch import Tensor, nn

# Runs as `python benchmarks/baselines/unet.py` as well as `python -m benchmarks.baselines.unet`.
_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.common import append_rows, result_row  # noqa: E402
from semsplat_ns.eval.metrics import confusion_matrix, miou, miou_present, pixel_accuracy  # noqa: E402

__all__ = [
    "SceneLayoutError",
    "UnetBaselineConfig",
    "SceneViews",
    "Unet",
    "load_scene",
    "CropSampler",
    "train_unet",
    "evaluate_unet",
    "run_scene",
    "main",
    "entrypoint",
]

CONSOLE = Console()
METHOD = "unet"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
# ImageNet statistics: a fixed, data-independent input normalisation.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class SceneLayoutError(ValueError):
    """A scene folder that does not follow the IRT layout (see IRT_LAYOUT.md)."""


@dataclass
class UnetBaselineConfig:
    """Trains and scores the Unet baseline on one or more IRT scenes."""

    data: tyro.conf.UseAppendAction[List[Path]]
    """IRT scene folder; repeat the flag for several scenes (one row each)."""
    out: Path = Path("benchmarks/results/unet.json")
    """JSON results file; rows of the same (scene, method) are replaced."""
    steps: int = 3000
    """Optimisation steps per scene."""
    device: str = "cuda"
    """Torch device to train and test on (``cuda``, ``cuda:1``, ``cpu``)."""
    crop: int = 256
    """Side of the square random training crops, pixels (a multiple of 2**(levels-1))."""
    batch_size: int = 8
    """Crops per optimisation step."""
    width: int = 32
    """Channels of the first Unet level; each deeper level doubles it."""
    levels: int = 5
    """Resolution levels of the Unet (levels-1 poolings)."""
    peak_lr: float = 2e-3
    """Peak learning rate of the one-cycle schedule."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    brightness: float = 0.2
    """Brightness jitter: each crop is scaled by a factor drawn from [1-b, 1+b]."""
    bf16: bool = False
    """Use bf16 autocast on CUDA (ignored on CPU). Off by default: on an H100 this small network is
    launch-bound and float32 (TF32 convolutions) trained a step faster (9.8 vs 11.0 ms) at equal mIoU."""
    warmup_views: int = 3
    """Untimed forward passes before the per-view test timing (cuDNN autotuning, caches)."""
    seed: int = 0
    """Seed of the weights and of the crop sampling."""


# ----------------------------------------------------------------------------------------------------------
# Scene reading
# ----------------------------------------------------------------------------------------------------------


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


def _read_classes(scene: Path) -> Tuple[Optional[List[str]], Optional[np.ndarray]]:
    """Reads the optional classes.json: names and colours ``[C, 3]`` (either may be None)."""
    path = scene / "classes.json"
    if not path.exists():
        return None, None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SceneLayoutError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise SceneLayoutError(f"{path}: expected an object with 'names' and/or 'colors', got {type(meta).__name__}")
    names = meta.get("names")
    colors = meta.get("colors")
    if names is not None and (not isinstance(names, list) or not names):
        raise SceneLayoutError(f"{path}: 'names' must be a non-empty list of class names")
    if colors is not None:
        colors = np.asarray(colors)
        if colors.ndim != 2 or colors.shape[1] != 3 or colors.min() < 0 or colors.max() > 255:
            raise SceneLayoutError(f"{path}: 'colors' must be a list of [r, g, b] with values in 0..255")
        colors = colors.astype(np.uint8)  # [C, 3]
        if names is not None and len(colors) != len(names):
            raise SceneLayoutError(f"{path}: {len(names)} names but {len(colors)} colors")
    return names, colors


def _read_photo(path: Path) -> np.ndarray:
    """Reads an 8-bit photo as ``[H, W, 3]`` uint8 (alpha dropped, grey expanded)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA", "L", "P"):
                raise SceneLayoutError(f"{path}: photo must be 8-bit RGB/RGBA/grey, got PIL mode {image.mode}")
            return np.array(image.convert("RGB"))  # [H, W, 3]
    except (OSError, Image.DecompressionBombError) as error:
        raise SceneLayoutError(f"{path}: cannot read the photo ({error})") from error


def _read_label(path: Path, colors: Optional[np.ndarray]) -> np.ndarray:
    """Reads a label PNG as class ids ``[H, W]`` uint8.

    Channel 0 holds the class id when the channels are equal (the IRT convention); a label whose
    channels differ is a colour-coded image and is decoded through the classes.json colours.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "RGB", "RGBA"):
                raise SceneLayoutError(f"{path}: label must be an 8-bit PNG (L/P/RGB/RGBA), got PIL mode {image.mode}")
            pixels = np.asarray(image)  # [H, W] or [H, W, 3|4]
    except OSError as error:
        raise SceneLayoutError(f"{path}: cannot read the label ({error})") from error
    if pixels.ndim == 2:
        return pixels.copy()  # [H, W]
    rgb = pixels[..., :3]  # [H, W, 3]
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return rgb[..., 0].copy()  # [H, W]
    if colors is None:
        raise SceneLayoutError(
            f"{path}: label channels differ (a colour-coded label?) and the scene has no classes.json 'colors' "
            "to decode it; IRT labels store the class id in all three channels"
        )
    # Match every pixel colour against the palette: packed 24-bit keys make it one lookup.
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]  # [H, W]
    palette = (colors[:, 0].astype(np.int64) << 16) | (colors[:, 1].astype(np.int64) << 8) | colors[:, 2]  # [C]
    order = np.argsort(palette)  # [C]
    where = np.clip(np.searchsorted(palette[order], keys), 0, len(palette) - 1)  # [H, W]
    ids = order[where]  # [H, W]
    unknown = palette[ids] != keys  # [H, W]
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise SceneLayoutError(
            f"{path}: colour-coded label has colour {tuple(int(c) for c in rgb[y, x])} at (x={x}, y={y}) "
            "that is not in classes.json 'colors'"
        )
    return ids.astype(np.uint8)  # [H, W]


def _photos_by_stem(folder: Path) -> Dict[str, Path]:
    """Maps stem -> photo path for the photos in ``folder``."""
    photos: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith("."):
            if path.stem in photos:
                raise SceneLayoutError(
                    f"{folder}: two photos share the stem {path.stem!r} ({photos[path.stem].name}, {path.name})"
                )
            photos[path.stem] = path
    return photos


def _read_split(scene: Path, split: str, colors: Optional[np.ndarray], every_view_labelled: bool):
    """Reads (stems, photos, labels) of the labelled views of one split, pairing files by stem."""
    color_dir, label_dir = scene / split / "color", scene / split / "rgb"
    if not color_dir.is_dir():
        if label_dir.is_dir():
            raise SceneLayoutError(
                f"{color_dir} is missing but {label_dir} exists: this looks like the older photo-only IRT "
                "arrangement where rgb/ held photos; segmentation needs photos in color/ and labels in rgb/"
            )
        raise SceneLayoutError(
            f"{color_dir} is missing: an IRT scene needs {split}/color (photos) and {split}/rgb (labels)"
        )
    if not label_dir.is_dir():
        raise SceneLayoutError(f"{label_dir} is missing: the baseline needs labelled {split} views")
    photos = _photos_by_stem(color_dir)
    label_paths = {path.stem: path for path in sorted(label_dir.glob("*.png")) if not path.name.startswith(".")}
    if every_view_labelled:
        unlabelled = sorted(set(photos) - set(label_paths))
        if unlabelled:
            raise SceneLayoutError(f"{label_dir}: every {split} view needs a label; missing for stems {unlabelled[:5]}")
    orphans = sorted(set(label_paths) - set(photos))
    if orphans:
        raise SceneLayoutError(f"{label_dir}: labels without a photo in {color_dir}: stems {orphans[:5]}")
    stems = sorted(label_paths)
    if not stems:
        raise SceneLayoutError(f"{label_dir}: no label PNG found; the baseline needs labelled {split} views")
    photo_list, label_list = [], []
    for stem in stems:
        photo = _read_photo(photos[stem])  # [H, W, 3]
        label = _read_label(label_paths[stem], colors)  # [H, W]
        if label.shape != photo.shape[:2]:
            raise SceneLayoutError(
                f"{label_paths[stem]}: label is {label.shape[1]}x{label.shape[0]} but its photo "
                f"{photos[stem].name} is {photo.shape[1]}x{photo.shape[0]}"
            )
        photo_list.append(photo)
        label_list.append(label)
    return stems, photo_list, label_list


def load_scene(scene: Path) -> SceneViews:
    """Reads the labelled training views and all test views of an IRT scene.

    Args:
        scene: The scene folder (``train/color``, ``train/rgb``, ``test/color``, ``test/rgb``,
            optional ``classes.json``).

    Returns:
        The views; ``num_classes`` is the length of classes.json 'names' when present, else the largest
        class id over all labels + 1.

    Raises:
        SceneLayoutError: When a folder or file is missing, unreadable or inconsistent.
    """
    scene = Path(scene)
    if not scene.is_dir():
        raise SceneLayoutError(f"{scene}: scene folder not found")
    names, colors = _read_classes(scene)
    train_stems, train_photos, train_labels = _read_split(scene, "train", colors, every_view_labelled=False)
    test_stems, test_photos, test_labels = _read_split(scene, "test", colors, every_view_labelled=True)
    largest = max(int(label.max()) for label in train_labels + test_labels)
    if names is not None:
        num_classes = len(names)
        if largest >= num_classes:
            split, stem = next(
                (split, stem)
                for split, stems, labels in (("train", train_stems, train_labels), ("test", test_stems, test_labels))
                for stem, label in zip(stems, labels)
                if int(label.max()) >= num_classes
            )
            raise SceneLayoutError(
                f"{scene / split / 'rgb' / (stem + '.png')}: class id {largest} but classes.json names "
                f"{num_classes} classes"
            )
    else:
        num_classes = largest + 1
        names = [f"class_{index}" for index in range(num_classes)]
    return SceneViews(
        name=scene.resolve().name,
        num_classes=num_classes,
        class_names=[str(name) for name in names],
        train_stems=train_stems,
        train_photos=train_photos,
        train_labels=train_labels,
        test_stems=test_stems,
        test_photos=test_photos,
        test_labels=test_labels,
    )


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Unet(nn.Module):
    """A plain Unet: max-pool encoder, transposed-conv decoder with skip connections, 1x1 class head.

    Args:
        num_classes: Number of output classes C.
        width: Channels of the first level; level i has ``width * 2**i``.
        levels: Resolution levels; inputs must have sides divisible by ``2**(levels-1)``.
        in_channels: Input channels (3 for RGB).
    """

    def __init__(self, num_classes: int, width: int = 32, levels: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a Unet needs at least 2 levels, got {levels}")
        widths = [width * 2**level for level in range(levels)]
        self.levels = levels
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels if level == 0 else widths[level - 1], widths[level]) for level in range(levels)]
        )
        self.upsample = nn.ModuleList(
            [nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in range(levels - 1)]
        )
        self.decoder = nn.ModuleList([ConvBlock(2 * widths[level], widths[level]) for level in range(levels - 1)])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (self.levels - 1)

    def forward(self, image: Tensor) -> Tensor:
        """Class logits of RGB images.

        Args:
            image: RGB in [0, 1], ``[B, 3, H, W]``, H and W multiples of :attr:`divisor`.

        Returns:
            Logits ``[B, C, H, W]``.
        """
        x = (image - self.mean) / self.std  # [B, 3, H, W]
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2)  # [B, w_{l-1}, H/2^l, W/2^l]
            x = block(x)  # [B, w_l, H/2^l, W/2^l]
            skips.append(x)
        for level in reversed(range(self.levels - 1)):
            x = self.upsample[level](x)  # [B, w_l, H/2^l, W/2^l]
            x = self.decoder[level](torch.cat([skips[level], x], dim=1))  # [B, w_l, H/2^l, W/2^l]
        return self.head(x)  # [B, C, H, W]


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------


def _to_device_views(photos: Sequence[np.ndarray], labels: Sequence[np.ndarray], device: torch.device):
    """Moves views to ``device``: photos as float ``[3, H, W]`` in [0, 1], labels as int64 ``[H, W]``."""
    images = [torch.from_numpy(photo).to(device).permute(2, 0, 1).float().div_(255.0) for photo in photos]  # [3, H, W]
    targets = [torch.from_numpy(label).to(device).long() for label in labels]  # [H, W]
    return images, targets


class CropSampler:
    """Draws augmented random training crops with a handful of batched kernels per step.

    Each crop comes from a random view at a random position, then undergoes one of the 8 symmetries of
    the square (flips and 90-degree rotations: every combination of a horizontal flip, a vertical flip
    and a rotation is one of them, drawn uniformly) and a brightness jitter. The symmetries are
    precomputed as index grids, so a whole batch is one gather instead of a Python loop of small ops.

    Args:
        photos: Photos ``[H, W, 3]`` uint8, one per view (sizes may differ).
        labels: Class ids ``[H, W]``, one per view, same sizes as the photos.
        crop: Crop side S, at most every view's smaller side.
        brightness: Each crop's colours are scaled by a factor in ``[1 - brightness, 1 + brightness]``.
        device: Where the views live and the crops are made.
    """

    def __init__(
        self,
        photos: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        crop: int,
        brightness: float,
        device: torch.device,
    ) -> None:
        sizes = [photo.shape[:2] for photo in photos]
        if min(min(size) for size in sizes) < crop:
            raise ValueError(f"crop {crop} is larger than the smallest view {min(sizes, key=min)}")
        max_h, max_w = max(size[0] for size in sizes), max(size[1] for size in sizes)
        # Views of different sizes share one zero-padded stack; crops never reach into the padding.
        self.images = torch.zeros(len(photos), max_h, max_w, 3, dtype=torch.uint8, device=device)  # [V, Hm, Wm, 3]
        self.targets = torch.zeros(len(photos), max_h, max_w, dtype=torch.long, device=device)  # [V, Hm, Wm]
        for view, (photo, label) in enumerate(zip(photos, labels)):
            height, width = photo.shape[:2]
            self.images[view, :height, :width] = torch.from_numpy(photo).to(device)
            self.targets[view, :height, :width] = torch.from_numpy(label).to(device).long()
        self.max_top = torch.tensor([size[0] - crop for size in sizes], dtype=torch.float64)  # [V]
        self.max_left = torch.tensor([size[1] - crop for size in sizes], dtype=torch.float64)  # [V]
        self.crop = crop
        self.brightness = brightness
        self.device = device
        rows, cols = torch.meshgrid(torch.arange(crop), torch.arange(crop), indexing="ij")  # [S, S] each
        grid = torch.stack([rows, cols])  # [2, S, S]
        symmetries = [
            torch.rot90(grid.flip(-1) if mirror else grid, turns, dims=(-2, -1))
            for mirror in (0, 1)
            for turns in range(4)
        ]
        self.symmetry_grids = torch.stack(symmetries).to(device)  # [8, 2, S, S], source (row, col) per output pixel

    def sample(self, batch_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Draws one batch of crops.

        Args:
            batch_size: Number of crops B.
            generator: CPU generator that draws every random choice (reproducible per seed).

        Returns:
            Images ``[B, 3, S, S]`` float in [0, 1] and class ids ``[B, S, S]`` int64.
        """
        view = torch.randint(len(self.max_top), (batch_size,), generator=generator)  # [B]
        top = (
            torch.rand(batch_size, generator=generator, dtype=torch.float64) * (self.max_top[view] + 1)
        ).long()  # [B]
        left = (
            torch.rand(batch_size, generator=generator, dtype=torch.float64) * (self.max_left[view] + 1)
        ).long()  # [B]
        symmetry = torch.randint(8, (batch_size,), generator=generator)  # [B]
        factor = 1.0 + self.brightness * (2.0 * torch.rand(batch_size, generator=generator) - 1.0)  # [B]
        # One small host-to-device copy carries every random choice of the batch.
        params = torch.stack([view, top, left, symmetry]).to(self.device, non_blocking=True)  # [4, B]
        view, top, left, symmetry = params.unbind(0)  # [B] each
        grid = self.symmetry_grids[symmetry]  # [B, 2, S, S]
        rows = grid[:, 0] + top[:, None, None]  # [B, S, S]
        cols = grid[:, 1] + left[:, None, None]  # [B, S, S]
        views = view[:, None, None].expand_as(rows)  # [B, S, S]
        images = self.images[views, rows, cols]  # [B, S, S, 3] uint8
        targets = self.targets[views, rows, cols]  # [B, S, S]
        factor = factor.to(self.device, non_blocking=True)[:, None, None, None]  # [B, 1, 1, 1]
        images = (images.permute(0, 3, 1, 2).float() * (factor / 255.0)).clamp_(0.0, 1.0)  # [B, 3, S, S]
        return images, targets


def _sync(device: torch.device) -> None:
    """Waits for queued CUDA work so that wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked for, otherwise a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def train_unet(
    scene: SceneViews, config: UnetBaselineConfig, device: torch.device, progress: Optional[Progress] = None
) -> Tuple[Unet, float]:
    """Trains a Unet from scratch on the scene's labelled training views.

    Args:
        scene: The scene's views.
        config: Recipe (steps, crop, batch size, width, learning rate, augmentation).
        device: Where to train.
        progress: Rich progress display to report on; None trains silently.

    Returns:
        The trained model (in train mode) and the training wall time in seconds.
    """
    if config.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {config.steps}")
    model = Unet(scene.num_classes, width=config.width, levels=config.levels)
    if config.crop <= 0 or config.crop % model.divisor:
        raise ValueError(
            f"--crop must be a positive multiple of {model.divisor} for a {config.levels}-level Unet, got {config.crop}"
        )
    for stem, photo in zip(scene.train_stems, scene.train_photos):
        if min(photo.shape[:2]) < config.crop:
            raise SceneLayoutError(
                f"{scene.name} train view {stem} is {photo.shape[1]}x{photo.shape[0]}, "
                f"smaller than --crop {config.crop}"
            )
    model = model.to(device).to(memory_format=torch.channels_last)
    model.train()
    sampler = CropSampler(scene.train_photos, scene.train_labels, config.crop, config.brightness, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.peak_lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.peak_lr, total_steps=config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    task = (
        progress.add_task(f"{scene.name}: train", total=config.steps, loss=math.nan) if progress is not None else None
    )

    _sync(device)
    start = time.perf_counter()
    for step in range(config.steps):
        batch, batch_targets = sampler.sample(config.batch_size, generator)  # [B, 3, S, S], [B, S, S]
        batch = batch.contiguous(memory_format=torch.channels_last)  # [B, 3, S, S]
        with _autocast(device, config.bf16):
            logits = model(batch)  # [B, C, S, S]
        loss = F.cross_entropy(logits.float(), batch_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            # Reading the loss syncs the device: only now and then.
            if step % 50 == 0 or step == config.steps - 1:
                progress.update(task, advance=1, loss=float(loss.detach()))
            else:
                progress.advance(task)
    _sync(device)
    return model, time.perf_counter() - start


@torch.no_grad()
def evaluate_unet(
    model: Unet,
    scene: SceneViews,
    device: torch.device,
    bf16: bool = False,
    warmup_views: int = 3,
    progress: Optional[Progress] = None,
) -> Dict[str, float]:
    """Predicts every test view at full resolution and scores it with the IRT definition.

    Args:
        model: The trained Unet (switched to eval mode here).
        scene: The scene's views.
        device: Where the model lives.
        bf16: Use bf16 autocast on CUDA.
        warmup_views: Untimed forward passes before timing.
        progress: Rich progress display to report on; None evaluates silently.

    Returns:
        ``miou``, ``miou_present``, ``acc`` (from ONE confusion matrix over all test pixels) and
        ``test_ms_per_view`` (median of CUDA-synchronised forward + argmax times, one view at a time).
    """
    model.eval()
    images, targets = _to_device_views(scene.test_photos, scene.test_labels, device)
    divisor = model.divisor

    def predict(image: Tensor) -> Tensor:
        """Class ids ``[H, W]`` of one photo ``[3, H, W]``."""
        _, height, width = image.shape
        pad_bottom, pad_right = -height % divisor, -width % divisor
        batch = image[None]  # [1, 3, H, W]
        if pad_bottom or pad_right:
            batch = F.pad(batch, (0, pad_right, 0, pad_bottom), mode="replicate")  # [1, 3, H', W']
        batch = batch.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            logits = model(batch)  # [1, C, H', W']
        return logits[0, :, :height, :width].argmax(dim=0)  # [H, W]

    for index in range(warmup_views):
        predict(images[index % len(images)])
    cm = torch.zeros(scene.num_classes, scene.num_classes, dtype=torch.long, device=device)  # [C, C]
    times_ms = []
    task = progress.add_task(f"{scene.name}: test", total=len(images), loss=math.nan) if progress is not None else None
    for image, target in zip(images, targets):
        _sync(device)
        start = time.perf_counter()
        pred = predict(image)  # [H, W]
        _sync(device)
        times_ms.append(1000.0 * (time.perf_counter() - start))
        cm += confusion_matrix(pred, target, scene.num_classes)  # [C, C]
        if progress is not None:
            progress.advance(task)
    cm = cm.cpu()
    return {
        "miou": miou(cm),
        "miou_present": miou_present(cm),
        "acc": pixel_accuracy(cm),
        "test_ms_per_view": statistics.median(times_ms),
    }


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=CONSOLE,
    )


def _resolve_device(name: str) -> torch.device:
    """Parses ``--device`` and fails clearly when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def _command_line() -> str:
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
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, train_s = train_unet(scene, config, device, progress)
    figures = evaluate_unet(model, scene, device, bf16=config.bf16, warmup_views=config.warmup_views, progress=progress)
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return result_row(
        scene.name,
        METHOD,
        miou=figures["miou"],
        miou_present=figures["miou_present"],
        acc=figures["acc"],
        test_ms_per_view=figures["test_ms_per_view"],
        train_s=train_s,
        steps=config.steps,
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
    command = _command_line()
    rows = []
    with _progress() as progress:
        for scene_dir in config.data:
            row = run_scene(scene_dir, config, device, command, progress)
            # Written after every scene so that a later failure keeps the finished rows.
            append_rows(config.out, [row])
            rows.append(row)
    table = Table(title=f"Unet baseline ({config.steps} steps) -> {config.out}")
    for column in ("scene", "mIoU %", "mIoU present %", "acc %", "test ms/view", "train s", "peak GiB", "device"):
        table.add_column(column, justify="left" if column in ("scene", "device") else "right")
    for row in rows:
        table.add_row(
            row["scene"],
            _fmt(row["miou"], 100),
            _fmt(row["miou_present"], 100),
            _fmt(row["acc"], 100),
            _fmt(row["test_ms_per_view"], digits=2),
            _fmt(row["train_s"]),
            _fmt(row["peak_gpu_mem_gb"], digits=2),
            row["device"],
        )
    CONSOLE.print(table)
    return rows


def entrypoint() -> None:
    """Command-line entry point."""
    main(tyro.cli(UnetBaselineConfig, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    entrypoint()
