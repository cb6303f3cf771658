"""Pictures of segmentation results: colourised label maps, error panels, confusion matrix and IoU charts.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module never changes
the process-wide backend. Every file is written atomically: to a temp file in the target directory, then
``os.replace``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from semsplat_ns.atomic import atomic_open
from semsplat_ns.data.irt_io import IGNORE_ID

__all__ = [
    "PlotInputError",
    "colorize_labels",
    "error_panel",
    "save_png",
    "save_confusion_matrix_png",
    "save_per_class_iou_png",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Error-map colours.
WRONG_COLOR = (255, 0, 0)
IGNORED_COLOR = (0, 0, 0)
#: Correct pixels show the ground-truth colour's grey level, scaled down so that red errors stand out.
CORRECT_DIM = 0.5
#: Above this many classes the confusion matrix cells are not annotated (the numbers would overlap).
MAX_ANNOTATED_CLASSES = 12


class PlotInputError(ValueError):
    """An image, label map or figure input that cannot be drawn."""


def _to_numpy(array: ArrayLike) -> np.ndarray:
    """Returns a CPU numpy view/copy of a numpy array or torch tensor."""
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _write_atomically(path: Union[str, Path], write: Callable) -> Path:
    """Calls ``write(handle)`` on a temp file beside ``path``, then moves it into place."""
    with atomic_open(path, "wb") as handle:
        write(handle)
    return Path(path)


def save_png(path: Union[str, Path], image: ArrayLike) -> Path:
    """Writes an 8-bit image as PNG, atomically.

    Args:
        path: Destination file.
        image: ``[H, W, 3]``, ``[H, W, 4]`` or ``[H, W]`` uint8 image.

    Returns:
        The written path.
    """
    image = _to_numpy(image)  # [H, W, 3] / [H, W, 4] / [H, W]
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise PlotInputError(
            f"cannot save {path}: expected a uint8 [H, W], [H, W, 3] or [H, W, 4] image, "
            f"got {image.dtype} {tuple(image.shape)}"
        )
    return _write_atomically(path, lambda handle: Image.fromarray(image).save(handle, format="PNG"))


def colorize_labels(
    labels: ArrayLike,
    class_colors: ArrayLike,
    ignore_color: Sequence[int] = IGNORED_COLOR,
    ignore_index: int = IGNORE_ID,
) -> np.ndarray:
    """Paints a class-id map with the class palette.

    Args:
        labels: ``[H, W]`` integer class ids.
        class_colors: ``[C, 3]`` uint8 RGB colour of each class id.
        ignore_color: RGB colour of ``ignore_index`` pixels.
        ignore_index: Label value of pixels without a class.

    Returns:
        ``[H, W, 3]`` uint8 image.
    """
    labels = _to_numpy(labels)  # [H, W]
    palette = _to_numpy(class_colors).astype(np.uint8)  # [C, 3]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise PlotInputError(f"labels must be an integer [H, W] map, got {labels.dtype} {tuple(labels.shape)}")
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise PlotInputError(f"class_colors must be [C, 3], got {tuple(palette.shape)}")
    ignored = labels == ignore_index  # [H, W]
    out_of_range = ~ignored & ((labels < 0) | (labels >= len(palette)))  # [H, W]
    if out_of_range.any():
        raise PlotInputError(
            f"labels hold ids {np.unique(labels[out_of_range])[:10].tolist()} outside the palette of "
            f"{len(palette)} classes (and not ignore_index={ignore_index})"
        )
    # Append the ignore colour as an extra palette entry so one fancy-index paints everything.
    palette = np.concatenate([palette, np.asarray(ignore_color, dtype=np.uint8)[None]], axis=0)  # [C + 1, 3]
    return palette[np.where(ignored, len(palette) - 1, labels)]  # [H, W, 3]


def error_panel(
    gt_color: ArrayLike, pred_color: ArrayLike, gt: ArrayLike, pred: ArrayLike, ignore_index: int = IGNORE_ID
) -> np.ndarray:
    """Puts ground truth, prediction and an error map side by side.

    Args:
        gt_color: ``[H, W, 3]`` uint8 colourised ground truth.
        pred_color: ``[H, W, 3]`` uint8 colourised prediction.
        gt: ``[H, W]`` ground-truth class ids; ``ignore_index`` pixels are black in the error map.
        pred: ``[H, W]`` predicted class ids.
        ignore_index: Label value of pixels without a ground-truth class.

    Returns:
        ``[H, 3W, 3]`` uint8 image: GT | prediction | errors (wrong red, right dimmed grey, ignored black).
    """
    gt_color, pred_color = _to_numpy(gt_color), _to_numpy(pred_color)  # [H, W, 3]
    gt, pred = _to_numpy(gt), _to_numpy(pred)  # [H, W]
    height, width = gt.shape[:2]
    for name, array, shape in (
        ("gt_color", gt_color, (height, width, 3)),
        ("pred_color", pred_color, (height, width, 3)),
        ("pred", pred, (height, width)),
    ):
        if array.shape != shape:
            raise PlotInputError(f"error_panel: {name} has shape {tuple(array.shape)}, expected {shape}")
    if gt.ndim != 2:
        raise PlotInputError(f"error_panel: gt must be [H, W], got {tuple(gt.shape)}")
    grey = gt_color.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # [H, W]
    error_map = np.repeat((grey * CORRECT_DIM).astype(np.uint8)[..., None], 3, axis=2)  # [H, W, 3]
    error_map[gt != pred] = WRONG_COLOR
    error_map[gt == ignore_index] = IGNORED_COLOR
    return np.concatenate([gt_color.astype(np.uint8), pred_color.astype(np.uint8), error_map], axis=1)  # [H, 3W, 3]


def _save_figure(figure: Figure, path: Union[str, Path]) -> Path:
    """Renders a figure on the Agg canvas into ``path`` (PNG), atomically."""
    FigureCanvasAgg(figure)
    return _write_atomically(path, lambda handle: figure.savefig(handle, format="png", bbox_inches="tight"))


def save_confusion_matrix_png(
    cm: ArrayLike, class_names: Sequence[str], path: Union[str, Path], normalize: Optional[str] = "true"
) -> Path:
    """Draws the confusion matrix as a heat map, restricted to classes present in GT or predicted.

    Args:
        cm: ``[C, C]`` confusion matrix, rows ground truth, columns prediction.
        class_names: One name per class id.
        path: Destination PNG file.
        normalize: ``"true"`` divides each row by its ground-truth count (recall on the diagonal),
            ``"pred"`` each column by its prediction count, ``"all"`` by the total, None keeps counts.

    Returns:
        The written path.
    """
    counts = _to_numpy(cm).astype(np.float64)  # [C, C]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise PlotInputError(f"cannot plot {path}: cm shape {counts.shape} does not fit {len(class_names)} class names")
    if normalize not in ("true", "pred", "all", None):
        raise PlotInputError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    shown = np.flatnonzero(counts.sum(axis=0) + counts.sum(axis=1) > 0)  # [K]
    if len(shown) == 0:
        raise PlotInputError(f"cannot plot {path}: the confusion matrix is empty (no pixel was counted)")
    counts = counts[np.ix_(shown, shown)]  # [K, K]
    if normalize == "true":
        values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # [K, K]
    elif normalize == "pred":
        values = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)  # [K, K]
    elif normalize == "all":
        values = counts / counts.sum()  # [K, K]
    else:
        values = counts  # [K, K]
    names = [class_names[int(i)] for i in shown]

    side = 2.5 + 0.45 * len(shown)
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(len(shown)), names, rotation=60, ha="right")
    axes.set_yticks(range(len(shown)), names)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title("confusion matrix" + (f" (normalised: {normalize})" if normalize else " (pixels)"))
    if len(shown) <= MAX_ANNOTATED_CLASSES:
        threshold = 0.5 * values.max()
        for row in range(len(shown)):
            for col in range(len(shown)):
                text = f"{values[row, col]:.2f}" if normalize else f"{int(values[row, col])}"
                colour = "white" if values[row, col] > threshold else "black"
                axes.text(col, row, text, ha="center", va="center", fontsize=8, color=colour)
    return _save_figure(figure, path)


def save_per_class_iou_png(
    per_class_iou: Dict[str, Optional[float]],
    path: Union[str, Path],
    class_colors: Optional[ArrayLike] = None,
) -> Path:
    """Draws per-class IoU as horizontal bars with the mIoU as a vertical line.

    Args:
        per_class_iou: Class name -> IoU in ``[0, 1]``, or None for classes neither in GT nor predicted
            (those are left out), in class-id order as ``SegmentationEvaluator.compute`` returns it.
        path: Destination PNG file.
        class_colors: ``[C, 3]`` uint8 RGB colour per entry of ``per_class_iou`` (same order); grey if None.

    Returns:
        The written path.
    """
    entries = [(i, name, value) for i, (name, value) in enumerate(per_class_iou.items()) if value is not None]
    if not entries or any(math.isnan(value) for _, _, value in entries):
        raise PlotInputError(f"cannot plot {path}: per_class_iou has no defined value or holds NaN: {per_class_iou}")
    if class_colors is not None:
        palette = _to_numpy(class_colors).astype(np.float64) / 255.0  # [C, 3]
        if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) != len(per_class_iou):
            raise PlotInputError(
                f"cannot plot {path}: class_colors shape {palette.shape} does not fit {len(per_class_iou)} classes"
            )
        colours = [palette[i] for i, _, _ in entries]
    else:
        colours = ["0.5"] * len(entries)
    values = [value for _, _, value in entries]
    mean_iou = float(np.mean(values))  # the IRT mIoU: mean over classes with a non-empty union

    figure = Figure(figsize=(6.5, 1.0 + 0.32 * len(entries)))
    axes = figure.add_subplot()
    rows = np.arange(len(entries))
    axes.barh(rows, values, color=colours, edgecolor="black", linewidth=0.5)
    axes.set_yticks(rows, [name for _, name, _ in entries])
    axes.invert_yaxis()  # class id 0 at the top
    for row, value in enumerate(values):  # bar ``row`` sits at y = row
        axes.text(min(value, 0.88) + 0.01, row, f"{value:.3f}", va="center", fontsize=8)
    axes.axvline(mean_iou, color="black", linestyle="--", linewidth=1.2, label=f"mIoU {mean_iou:.3f}")
    axes.set_xlim(0, 1)
    axes.set_xlabel("IoU")
    axes.set_title("per-class IoU")
    axes.legend(loc="lower right")
    return _save_figure(figure, path)
