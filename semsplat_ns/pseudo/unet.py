"""A small 2D segmentation network trained per scene from scratch, and its training recipe.

Two users share it: the prior of ``semsplat-pseudo-labels --backend prior`` (trained on the labelled views
plus the labels that depth-tested reprojection carries into the other training views) and the benchmark's
Unet baseline (``benchmarks/baselines/unet.py``, labelled views only). No pretrained weights, no download.

Recipe: a 5-level Unet (base width 32, BatchNorm), random square crops (256 px) under the 8 symmetries of
the square and a +-20 % brightness jitter, AdamW with a one-cycle learning rate peaking at 2e-3, bf16
autocast on CUDA. Label id 255 means "no label" and is left out of the loss, so partly labelled views
(reprojected labels) train where they have labels only.

How each optimisation step runs on the device is the recipe's ``step_runner`` (:data:`STEP_RUNNERS`): the plain
eager step, the whole step captured once as a CUDA graph and replayed, or the network compiled by torch.compile.
They compute the same step; ``benchmarks/prior_speed.py`` times them.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor, nn

from semsplat_ns.data.irt_io import IGNORE_ID
from semsplat_ns.model.losses import inverse_sqrt_frequency_weights

# ImageNet statistics: a fixed, data-independent input normalisation.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

StepRunner = Literal["eager", "cuda-graph", "compiled"]
"""How an optimisation step runs on the device (:data:`STEP_RUNNERS`)."""


@dataclass(frozen=True)
class StepRunnerSpec:
    """What a step runner is and what it keeps."""

    cuda_only: bool
    """Runs on CUDA only; on any other device the eager step runs instead (same results as ``eager`` there)."""


STEP_RUNNERS: Dict[str, StepRunnerSpec] = {
    # The step as written: every kernel launched from Python, one step after the other. Same network per seed.
    "eager": StepRunnerSpec(cuda_only=False),
    # The crops are drawn as in eager and copied into fixed input buffers; forward, cross-entropy and backward are
    # one CUDA graph replayed per step, so the CPU no longer launches their hundreds of kernels one by one. AdamW and
    # the one-cycle schedule run eagerly after it (CudaGraphStep says why). Replays run the eager step's kernels in
    # the same order: the same network per seed, the eager one's as long as cuDNN picks the same kernels.
    "cuda-graph": StepRunnerSpec(cuda_only=True),
    # torch.compile of the network (forward and backward fused by Inductor); the first steps compile (tens of
    # seconds). Inductor may pick kernel configurations by timing them, so another run may round differently.
    "compiled": StepRunnerSpec(cuda_only=False),
}
"""The step runners, by name (``UnetRecipe.step_runner``)."""


@dataclass
class UnetRecipe:
    """How the network is built and trained: the one declaration of the recipe's settings, nested (with their
    flags unprefixed) in the prior's settings (``--prior.steps``, ``--pipeline.datamanager.pseudo-prior.steps``)
    and in the Unet baseline's (``--steps``). The defaults are the prior's; the baseline sets its own."""

    steps: int = 6000
    """Optimisation steps."""
    crop: int = 256
    """Side of the square random training crops, pixels (a multiple of 2**(levels-1)). The prior's step is bound by
    the GPU, so smaller crops train faster (192: 4.53 against 6.6 ms per step on an H200; ``semsplat-fast`` uses
    them), at equal mIoU but not equal classes: over nine semsplat runs each on townB, 192-pixel priors scored Wall
    8.9 and Bridge 5.8 IoU points lower (Other 16.7, Water 2.7 higher); on one H100 at d8f048f, townB's preset
    scored 60.38 and 60.69 mIoU at 256 (Wall 64.5 / 64.0) against 60.02 at 192 (Wall 54.1), for 14.6 s more of
    prior training (BENCHMARKS.md, session 16)."""
    width: int = 32
    """Channels of the first Unet level; each deeper level doubles it."""
    levels: int = 5
    """Resolution levels of the Unet (levels-1 poolings)."""
    labelled_batch: int = 4
    """Crops of labelled views per optimisation step."""
    peak_lr: float = 2e-3
    """Peak learning rate of the one-cycle schedule (AdamW)."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    brightness: float = 0.2
    """Brightness jitter: each crop is scaled by a factor drawn from [1-b, 1+b]."""
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on the CPU)."""
    deterministic: bool = True
    """Ask cuDNN for deterministic kernels while training, so a seed gives the same network on the same GPU
    (False lets cuDNN pick its fastest, possibly non-deterministic, kernels)."""
    cudnn_benchmark: bool = False
    """Let cuDNN time its convolution algorithms on the first steps (the crop's shapes never change) and keep the
    fastest; with ``deterministic`` only deterministic ones compete. The choice depends on timings, so another
    run may pick another algorithm and round differently: the same seed no longer surely gives the same network."""
    step_runner: StepRunner = "cuda-graph"
    """How each step runs on the device (:data:`STEP_RUNNERS`): eager (every kernel launched from Python),
    cuda-graph (forward, loss and backward captured once as a CUDA graph and replayed, AdamW eager; CUDA only,
    eager on the CPU; same network per seed) or compiled (torch.compile of the network; the
    first steps compile; not surely the same network per seed). The CPU gives the same network with every runner
    but compiled. cuda-graph is the default: on an H100 (2f8478d, benchmarks/results/prior_speed.json) 7.27 ms per
    step against 13.86 for eager, and after 12 steps the same weights bit for bit."""
    seed: int = 0
    """Seed of the initial weights and of every crop draw."""
    class_balance: Literal["none", "inverse-sqrt-frequency"] = "inverse-sqrt-frequency"
    """Class weights of the cross-entropy: none, or 1/sqrt of each class's labelled pixels in the training views
    (every pool: labelled views and reprojected labels), mean 1 over the classes seen. Thin, rare classes (pole,
    sign, light) then weigh more, so the network paints the big class around them over them less surely: semsplat
    on its pseudo labels, 7000 steps, townA / townB 71.56 / 58.05 mIoU against 70.42 / 57.06 with none."""


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

    mean: Tensor  # [1, 3, 1, 1] buffer
    std: Tensor  # [1, 3, 1, 1] buffer

    def __init__(self, num_classes: int, width: int = 32, levels: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a Unet needs at least 2 levels, got {levels}")
        if width < 1 or num_classes < 1:
            raise ValueError(f"a Unet needs width >= 1 and num_classes >= 1, got {width} and {num_classes}")
        widths = [width * 2**level for level in range(levels)]
        self.levels = levels
        self.num_classes = num_classes
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


def recipe_problems(recipe: UnetRecipe, flag_prefix: str = "--") -> List[str]:
    """What makes a recipe unable to train, one phrase per problem naming its flag (``flag_prefix`` + name).

    Args:
        recipe: The recipe.
        flag_prefix: How the recipe's flags start on the command line (``--`` for the baseline, ``--prior.``).

    Returns:
        The problems; empty when the recipe can train.
    """
    names = ("steps", "levels", "width", "crop", "labelled_batch")
    flag = {name: flag_prefix + name.replace("_", "-") for name in names}
    problems = []
    if recipe.steps < 1:
        problems.append(f"{flag['steps']} must be at least 1, got {recipe.steps}")
    if recipe.levels < 2:
        problems.append(f"{flag['levels']} must be at least 2, got {recipe.levels}")
    if recipe.width < 1:
        problems.append(f"{flag['width']} must be at least 1, got {recipe.width}")
    divisor = 2 ** (recipe.levels - 1) if recipe.levels >= 2 else 1
    if recipe.crop < divisor or recipe.crop % divisor:
        problems.append(f"{flag['crop']} must be a positive multiple of {divisor} (2**(levels-1)), got {recipe.crop}")
    if recipe.labelled_batch < 1:
        problems.append(f"{flag['labelled_batch']} must be at least 1, got {recipe.labelled_batch}")
    return problems


def check_crop(crop: int, levels: int) -> None:
    """Raises ValueError unless ``crop`` is a positive multiple of the Unet's divisor ``2**(levels-1)``."""
    divisor = 2 ** (levels - 1)
    if crop <= 0 or crop % divisor:
        raise ValueError(f"--crop must be a positive multiple of {divisor} for a {levels}-level Unet, got {crop}")


class CropSampler:
    """Draws augmented random training crops with a handful of batched kernels per step.

    Each crop comes from a random view at a random position, then undergoes one of the 8 symmetries of
    the square (flips and 90-degree rotations: every combination of a horizontal flip, a vertical flip
    and a rotation is one of them, drawn uniformly) and a brightness jitter. The symmetries are
    precomputed as index grids, so a whole batch is one gather instead of a Python loop of small ops.

    Args:
        photos: Photos ``[H, W, 3]`` uint8, one per view (sizes may differ).
        labels: Class ids ``[H, W]`` uint8 (255 = no label), one per view, same sizes as the photos.
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
        if not photos or len(photos) != len(labels):
            raise ValueError(f"CropSampler needs one label per photo and at least one view; got {len(photos)} photos")
        sizes = [photo.shape[:2] for photo in photos]
        if min(min(size) for size in sizes) < crop:
            raise ValueError(f"crop {crop} is larger than the smallest view {min(sizes, key=min)}")
        max_h, max_w = max(size[0] for size in sizes), max(size[1] for size in sizes)
        # Views of different sizes share one padded stack; crops never reach into the padding. Labels stay
        # uint8 on the device (an eighth of int64's memory) and become int64 per batch.
        self.images = torch.zeros(len(photos), max_h, max_w, 3, dtype=torch.uint8, device=device)  # [V, Hm, Wm, 3]
        self.targets = torch.full((len(photos), max_h, max_w), IGNORE_ID, dtype=torch.uint8, device=device)
        for view, (photo, label) in enumerate(zip(photos, labels)):
            height, width = photo.shape[:2]
            if label.shape != (height, width):
                raise ValueError(f"CropSampler: view {view} has a {label.shape} label for a {photo.shape} photo")
            self.images[view, :height, :width] = torch.from_numpy(np.ascontiguousarray(photo)).to(device)
            self.targets[view, :height, :width] = torch.from_numpy(np.ascontiguousarray(label, np.uint8)).to(device)
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

    def __len__(self) -> int:
        return len(self.max_top)

    def sample(self, batch_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Draws one batch of crops.

        Args:
            batch_size: Number of crops B.
            generator: CPU generator that draws every random choice (reproducible per seed).

        Returns:
            Images ``[B, 3, S, S]`` float in [0, 1] and class ids ``[B, S, S]`` int64 (255 = no label).
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
        targets = self.targets[views, rows, cols].long()  # [B, S, S]
        factor = factor.to(self.device, non_blocking=True)[:, None, None, None]  # [B, 1, 1, 1]
        images = (images.permute(0, 3, 1, 2).float() * (factor / 255.0)).clamp_(0.0, 1.0)  # [B, 3, S, S]
        return images, targets


def masked_cross_entropy(logits: Tensor, targets: Tensor, class_weights: Optional[Tensor] = None) -> Tensor:
    """Mean cross-entropy over the pixels that have a label (255 = none); 0 when none has. With class weights,
    the weighted mean (each pixel counts its class's weight, as ``F.cross_entropy(weight=...)``).

    Written with a class comparison instead of ``F.cross_entropy``: its CUDA backward scatters with atomic
    adds, which would make training depend on thread timing, and a batch without any label would give NaN.

    Args:
        logits: ``[B, C, H, W]`` class logits.
        targets: ``[B, H, W]`` int64 class ids, 255 = no label.
        class_weights: ``[C]`` weight per class; None weighs every pixel 1.

    Returns:
        Scalar float32 loss.
    """
    log_probs = logits.float().log_softmax(dim=1)  # [B, C, H, W]
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)  # [1, C, 1, 1]
    # 255 matches no class, so unlabelled pixels pick nothing and add 0.
    chosen = targets[:, None] == classes  # [B, C, H, W]
    if class_weights is None:
        picked = torch.where(chosen, log_probs, torch.zeros_like(log_probs)).sum(dim=1)  # [B, H, W]
        labelled = (targets != IGNORE_ID).sum().clamp(min=1)
        return -picked.sum() / labelled
    weights = class_weights.to(log_probs).view(1, -1, 1, 1)  # [1, C, 1, 1]
    picked = torch.where(chosen, log_probs * weights, torch.zeros_like(log_probs)).sum(dim=1)  # [B, H, W]
    weight_sum = torch.where(chosen, weights, torch.zeros_like(log_probs)).sum()
    return -picked.sum() / weight_sum.clamp(min=1e-12)


def class_pixel_counts(pools: Sequence[Tuple[CropSampler, int]], num_classes: int) -> Tensor:
    """Labelled pixels per class over every view of the pools (255 and out-of-range ids not counted), int64 [C]."""
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for sampler, _ in pools:
        ids = sampler.targets.reshape(-1).long()  # [V*Hm*Wm], padding is 255
        counts += torch.bincount(ids[ids < num_classes], minlength=num_classes).cpu()
    return counts


def synchronize(device: torch.device) -> None:
    """Waits for queued CUDA work so that wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked for, otherwise a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


@contextlib.contextmanager
def cudnn_settings(recipe: UnetRecipe, device: torch.device) -> Iterator[None]:
    """cuDNN's deterministic and benchmark modes of the recipe inside the block (CUDA only), the caller's settings
    restored after it."""
    if device.type != "cuda":
        yield
        return
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if recipe.deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, recipe.cudnn_benchmark
    elif recipe.cudnn_benchmark:
        # Without deterministic kernels the caller's deterministic flag stays as it was (as before this setting).
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def effective_step_runner(recipe: UnetRecipe, device: torch.device) -> StepRunner:
    """The step runner that runs on ``device``: the recipe's, or eager where it needs CUDA and the device is not."""
    if recipe.step_runner not in STEP_RUNNERS:
        raise ValueError(f"unknown step runner {recipe.step_runner!r}; one of {', '.join(STEP_RUNNERS)}")
    if STEP_RUNNERS[recipe.step_runner].cuda_only and device.type != "cuda":
        return "eager"
    return recipe.step_runner


class EagerStep:
    """One optimisation step as written: forward under autocast, masked cross-entropy, backward, AdamW and the
    one-cycle schedule, every kernel launched from Python. Also the ``compiled`` runner, with a compiled network.

    Args:
        model: The network (train mode, on the device).
        recipe: Learning rate, weight decay, steps, bf16.
        class_weights: ``[C]`` weights of the cross-entropy, or None.
        device: Where the model lives.
        compiled: Run the network through ``torch.compile``.
    """

    def __init__(
        self,
        model: Unet,
        recipe: UnetRecipe,
        class_weights: Optional[Tensor],
        device: torch.device,
        compiled: bool = False,
    ) -> None:
        self.network: Callable[[Tensor], Tensor] = torch.compile(model) if compiled else model
        self.recipe = recipe
        self.class_weights = class_weights
        self.device = device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.peak_lr, weight_decay=recipe.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=recipe.peak_lr, total_steps=recipe.steps
        )

    def __call__(self, images: Tensor, targets: Tensor) -> Tensor:
        """Runs one step on a batch; returns the loss (a device scalar, not read back)."""
        with autocast(self.device, self.recipe.bf16):
            logits = self.network(images)  # [B, C, S, S]
        loss = masked_cross_entropy(logits, targets, self.class_weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss


class CudaGraphStep(EagerStep):
    """One optimisation step whose forward, cross-entropy and backward replay from a CUDA graph (see
    :data:`STEP_RUNNERS`); AdamW and the one-cycle schedule then run eagerly, as in :class:`EagerStep`.

    Why the optimiser stays outside the graph: torch's ``OneCycleLR`` also cycles AdamW's beta1 by replacing a
    Python float, which a captured step would keep at its capture-time value; AdamW's capturable mode with device
    tensors for beta1 turns them into host scalars in ``_foreach_pow`` (a device sync, illegal under capture) and
    rounds its bias corrections differently. Outside the graph the optimiser is the eager one, value for value, at
    the cost of its ~20 fused multi-tensor launches; the graph removes the hundreds of launches of the network.

    The first :attr:`WARMUP_STEPS` steps run eagerly on a side stream (cuDNN, cuBLAS and the allocator warm up, as
    capture needs); the next step is captured (capture runs nothing) and replayed, and every later step only copies
    its crops into the fixed buffers and replays. Every step, warm-up included, is a real step of the schedule, and
    the kernels are the eager step's, so the network is the eager one's as long as cuDNN picks the same kernels.

    Args:
        model: The network (train mode, on a CUDA device).
        recipe: Learning rate, weight decay, steps, bf16.
        class_weights: ``[C]`` weights of the cross-entropy on the device, or None.
        device: The CUDA device.
        batch_shape: (B, S): crops per step and crop side; every batch must have them.
    """

    WARMUP_STEPS = 3
    """Eager steps before capture (PyTorch's recipe for whole-network capture uses a few)."""

    def __init__(
        self,
        model: Unet,
        recipe: UnetRecipe,
        class_weights: Optional[Tensor],
        device: torch.device,
        batch_shape: Tuple[int, int],
    ) -> None:
        if device.type != "cuda":
            raise ValueError(f"the cuda-graph step runner needs a CUDA device, got {device}")
        super().__init__(model, recipe, class_weights, device)
        self.model = model
        batch, crop = batch_shape
        self.images = torch.zeros(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
        self.targets = torch.full((batch, crop, crop), IGNORE_ID, dtype=torch.int64, device=device)  # [B, S, S]
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.loss = torch.zeros((), device=device)  # the captured loss, rewritten by every replay
        self.steps_done = 0

    def _forward_backward(self) -> Tensor:
        """Loss and gradients of the batch in the fixed buffers."""
        # Autocast's cast cache must be off under graph capture (PyTorch's CUDA-graph notes); it changes no value.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.recipe.bf16, cache_enabled=False):
            logits = self.model(self.images)  # [B, C, S, S]
        loss = masked_cross_entropy(logits, self.targets, self.class_weights)
        loss.backward()
        return loss

    def __call__(self, images: Tensor, targets: Tensor) -> Tensor:
        """Runs one step on a batch; returns the loss (a device scalar, not read back; overwritten next step)."""
        if images.shape != self.images.shape or targets.shape != self.targets.shape:
            raise ValueError(
                f"a CUDA-graph step needs fixed shapes {tuple(self.images.shape)}, got {tuple(images.shape)}"
            )
        # On the current stream, so the warm-up's side stream (after its wait) and the replay read this batch.
        self.images.copy_(images)
        self.targets.copy_(targets)
        self.steps_done += 1
        if self.steps_done <= self.WARMUP_STEPS:
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._forward_backward()
                self.optimizer.step()
                self.schedule.step()
            current.wait_stream(side)
            return loss
        if self.graph is None:
            # Gradients are None at capture, so the captured backward allocates them in the graph's pool and every
            # replay writes them afresh, as backward does after zero_grad(set_to_none=True); they must never be set
            # to None again, or AdamW would skip the parameters.
            self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._forward_backward()
        self.graph.replay()
        self.optimizer.step()
        self.schedule.step()
        return self.loss


class UnetTraining:
    """One training run from scratch: the network, its step runner and the crop draws of every step.
    :func:`train_unet` runs it to the end; ``benchmarks/prior_speed.py`` times its steps.

    Args:
        pools: (sampler, crops per step) pairs; each step's batch holds that many crops of every pool
            (e.g. 4 crops of the labelled views and 4 of the reprojected labels).
        num_classes: Number of classes C.
        recipe: Steps, crop, width, learning rate, augmentation, bf16, seed, step runner.
        device: Where to train.
    """

    def __init__(
        self, pools: Sequence[Tuple[CropSampler, int]], num_classes: int, recipe: UnetRecipe, device: torch.device
    ) -> None:
        if recipe.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {recipe.steps}")
        check_crop(recipe.crop, recipe.levels)
        pools = [(sampler, count) for sampler, count in pools if count > 0]
        if not pools:
            raise ValueError("train_unet: no crops per step (every pool has a batch size of 0)")
        for sampler, _ in pools:
            if sampler.crop != recipe.crop:
                raise ValueError(
                    f"train_unet: a sampler makes {sampler.crop}-pixel crops, the recipe wants {recipe.crop}"
                )
        self.pools = pools
        self.recipe = recipe
        self.device = device
        # The weights come from the seed without disturbing the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = Unet(num_classes, width=recipe.width, levels=recipe.levels)
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.model.train()
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.num_classes = num_classes
        class_weights = None
        if recipe.class_balance == "inverse-sqrt-frequency":
            class_weights = inverse_sqrt_frequency_weights(class_pixel_counts(pools, num_classes)).to(device)  # [C]
        # The step runners hold this tensor (a CUDA graph reads it where it was captured): use_pools rewrites it.
        self.class_weights = class_weights
        # A CUDA-only runner (the default) runs the eager step elsewhere, with the same results: nothing to warn of.
        self.step_runner = effective_step_runner(recipe, device)
        self.run_step: Callable[[Tensor, Tensor], Tensor]
        if self.step_runner == "cuda-graph":
            batch = sum(count for _, count in pools)
            self.run_step = CudaGraphStep(self.model, recipe, class_weights, device, (batch, recipe.crop))
        else:
            compiled = self.step_runner == "compiled"
            self.run_step = EagerStep(self.model, recipe, class_weights, device, compiled=compiled)

    @property
    def capturing_steps(self) -> int:
        """Steps after which the step runner captures nothing more on the device: other threads may then use it
        (CUDA work of another thread during a graph capture breaks the capture)."""
        return CudaGraphStep.WARMUP_STEPS + 1 if isinstance(self.run_step, CudaGraphStep) else 0

    def use_pools(self, pools: Sequence[Tuple[CropSampler, int]]) -> None:
        """Draws the next steps' crops from ``pools`` instead, with the class weights of these pools.

        Args:
            pools: (sampler, crops per step) pairs of the recipe's crop side and the same crops per step in all
                (a CUDA-graph step keeps its batch's shape).

        Raises:
            ValueError: Another crop side or another number of crops per step.
        """
        pools = [(sampler, count) for sampler, count in pools if count > 0]
        if sum(count for _, count in pools) != sum(count for _, count in self.pools):
            raise ValueError("use_pools: the new pools must give as many crops per step as the old ones")
        if any(sampler.crop != self.recipe.crop for sampler, _ in pools):
            raise ValueError(f"use_pools: every sampler must make {self.recipe.crop}-pixel crops")
        self.pools = pools
        if self.class_weights is not None:
            weights = inverse_sqrt_frequency_weights(class_pixel_counts(pools, self.num_classes))  # [C]
            self.class_weights.copy_(weights.to(self.device))

    def kernel_settings(self) -> contextlib.AbstractContextManager:
        """The cuDNN settings the steps must run under (:func:`cudnn_settings`)."""
        return cudnn_settings(self.recipe, self.device)

    def step(self) -> Tensor:
        """Draws the next batch and runs one step on it; returns the loss (a device scalar, not read back)."""
        drawn = [sampler.sample(count, self.generator) for sampler, count in self.pools]
        batch = torch.cat([images for images, _ in drawn]).contiguous(memory_format=torch.channels_last)
        targets = torch.cat([labels for _, labels in drawn])  # [B, S, S]
        return self.run_step(batch, targets)


def train_unet(
    pools: Sequence[Tuple[CropSampler, int]],
    num_classes: int,
    recipe: UnetRecipe,
    device: torch.device,
    progress: Optional[Progress] = None,
    description: str = "Training the Unet",
    before_step: Optional[Callable[[int, UnetTraining], None]] = None,
) -> Tuple[Unet, float]:
    """Trains a Unet from scratch on crops drawn from one or more pools of views.

    Args:
        pools: (sampler, crops per step) pairs; each step's batch holds that many crops of every pool
            (e.g. 4 crops of the labelled views and 4 of the reprojected labels).
        num_classes: Number of classes C.
        recipe: Steps, crop, width, learning rate, augmentation, bf16, seed, step runner.
        device: Where to train.
        progress: Rich progress display to report on; None trains silently.
        description: The progress task's title.
        before_step: Called with the step's index and the training before each step (e.g. to change its pools with
            :meth:`UnetTraining.use_pools`).

    Returns:
        The trained model (in train mode) and the training wall time in seconds.
    """
    training = UnetTraining(pools, num_classes, recipe, device)
    task = progress.add_task(description, total=recipe.steps) if progress is not None else None
    with training.kernel_settings():
        synchronize(device)
        start = time.perf_counter()
        loss_value = math.nan
        for step in range(recipe.steps):
            if before_step is not None:
                before_step(step, training)
            loss = training.step()
            if task is not None and progress is not None:
                # Reading the loss syncs the device: only now and then.
                if step % 50 == 0 or step == recipe.steps - 1:
                    loss_value = float(loss.detach())
                    progress.update(task, advance=1, description=f"{description} (loss {loss_value:.3f})")
                else:
                    progress.advance(task)
        synchronize(device)
    return training.model, time.perf_counter() - start


def photo_tensor(photo: np.ndarray, device: torch.device) -> Tensor:
    """A uint8 photo ``[H, W, 3]`` as float RGB in [0, 1], ``[3, H, W]`` on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(photo)).to(device).permute(2, 0, 1).float().div_(255.0)


@torch.no_grad()
def predict_logits(model: Unet, image: Tensor, bf16: bool = False) -> Tensor:
    """Class logits of one whole view (padded to the Unet's divisor and cropped back).

    Args:
        model: The network, in eval mode.
        image: RGB in [0, 1], ``[3, H, W]``, on the model's device.
        bf16: bf16 autocast on CUDA.

    Returns:
        float32 logits ``[C, H, W]``.
    """
    return predict_batch_logits(model, image[None], bf16)[0]  # [C, H, W]


@torch.no_grad()
def predict_batch_logits(model: Unet, images: Tensor, bf16: bool = False) -> Tensor:
    """Class logits of whole views of one size in one forward pass (padded to the Unet's divisor, cropped back).

    Args:
        model: The network, in eval mode.
        images: RGB in [0, 1], ``[B, 3, H, W]``, on the model's device.
        bf16: bf16 autocast on CUDA.

    Returns:
        float32 logits ``[B, C, H, W]``.
    """
    assert images.dim() == 4 and images.shape[1] == 3, f"images must be [B, 3, H, W], got {tuple(images.shape)}"
    _, _, height, width = images.shape
    divisor = model.divisor
    pad_bottom, pad_right = -height % divisor, -width % divisor
    batch = images  # [B, 3, H, W]
    if pad_bottom or pad_right:
        batch = F.pad(batch, (0, pad_right, 0, pad_bottom), mode="replicate")  # [B, 3, H', W']
    batch = batch.contiguous(memory_format=torch.channels_last)
    with autocast(images.device, bf16):
        logits = model(batch)  # [B, C, H', W']
    return logits[:, :, :height, :width].float()  # [B, C, H, W]


@torch.no_grad()
def predict_probabilities(model: Unet, photo: np.ndarray, device: torch.device, bf16: bool = False):
    """Most likely class and its softmax probability, per pixel of one photo.

    Args:
        model: The network, in eval mode, on ``device``.
        photo: uint8 ``[H, W, 3]``.
        device: Where to compute.
        bf16: bf16 autocast on CUDA.

    Returns:
        (uint8 ``[H, W]`` class ids, float32 ``[H, W]`` probability in [0, 1]) as numpy arrays.
    """
    return predict_batch_probabilities(model, [photo], device, bf16)[0]


@torch.no_grad()
def predict_batch_probabilities(
    model: Unet, photos: Sequence[np.ndarray], device: torch.device, bf16: bool = False
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Most likely class and its softmax probability per pixel of photos of one size, in one forward pass and one
    copy back to the host (a view at a time waits on the device once per view).

    Args:
        model: The network, in eval mode, on ``device``.
        photos: uint8 ``[H, W, 3]`` each, all of one size.
        device: Where to compute.
        bf16: bf16 autocast on CUDA.

    Returns:
        Per photo, in order: (uint8 ``[H, W]`` class ids, float32 ``[H, W]`` probability in [0, 1]) as numpy arrays.
    """
    sizes = {photo.shape for photo in photos}
    if len(sizes) != 1:
        raise ValueError(f"predict_batch_probabilities needs photos of one size, got {sorted(sizes)}")
    images = torch.stack([photo_tensor(photo, device) for photo in photos])  # [B, 3, H, W]
    logits = predict_batch_logits(model, images, bf16)  # [B, C, H, W]
    probability, ids = logits.softmax(dim=1).max(dim=1)  # [B, H, W], [B, H, W]
    ids_host = ids.to(torch.uint8).cpu().numpy()  # [B, H, W]
    probability_host = probability.cpu().numpy().astype(np.float32)  # [B, H, W]
    return [(ids_host[k], probability_host[k]) for k in range(len(photos))]
