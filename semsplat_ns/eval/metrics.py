"""Semantic segmentation metrics computed from one confusion matrix.

The IRT evaluation accumulates ONE confusion matrix over all test pixels of a scene and derives every
figure from it, so the pure functions below all take that matrix. Rows are ground truth, columns are
predictions. Everything stays in torch (CPU or CUDA) until :meth:`SegmentationEvaluator.compute`.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, TypedDict

import torch
from torch import Tensor

from semsplat_ns.data.irt_io import IGNORE_ID

__all__ = [
    "MetricInputError",
    "confusion_matrix",
    "iou_per_class",
    "miou",
    "miou_present",
    "pixel_accuracy",
    "SegmentationEvaluator",
    "SegmentationScores",
]


class MetricInputError(ValueError):
    """Predictions, labels or a confusion matrix that the metrics cannot use."""


def _as_label_tensor(labels: Tensor, what: str) -> Tensor:
    """Checks that ``labels`` is an integer tensor and returns it as int64."""
    if not isinstance(labels, Tensor):
        raise MetricInputError(f"{what} must be a torch.Tensor of class ids, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise MetricInputError(
            f"{what} must hold integer class ids, got dtype {labels.dtype} (argmax the logits first)"
        )
    return labels.long()


def _check_cm(cm: Tensor) -> None:
    """Checks that ``cm`` is a square 2-D confusion matrix."""
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise MetricInputError(f"confusion matrix must be square [C, C], got shape {tuple(cm.shape)}")


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_ID) -> Tensor:
    """Counts (ground truth, prediction) pairs over all non-ignored pixels.

    Args:
        pred: Predicted class ids, any shape ``[...]``, integer dtype, values in ``[0, num_classes)``.
            Pixels whose target is ``ignore_index`` may hold anything.
        target: Ground-truth class ids, same shape as ``pred``; ``ignore_index`` marks pixels to skip.
        num_classes: Number of classes C.
        ignore_index: Target value of pixels that are not counted.

    Returns:
        Confusion matrix ``[C, C]`` (int64, on ``target``'s device); entry ``[i, j]`` is the number of pixels
        of ground-truth class i predicted as class j.

    Raises:
        MetricInputError: On mismatched shapes, float inputs, or class ids outside ``[0, num_classes)``.
    """
    pred = _as_label_tensor(pred, "pred")  # [...]
    target = _as_label_tensor(target, "target")  # [...]
    if pred.shape != target.shape:
        raise MetricInputError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if num_classes <= 0:
        raise MetricInputError(f"num_classes must be positive, got {num_classes}")
    valid = target != ignore_index  # [...]
    target = target[valid]  # [M]
    pred = pred.to(target.device)[valid]  # [M]
    # One combined range check costs a single device sync; without it bincount would silently mix classes.
    bad = (target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)  # [M]
    if bool(bad.any()):
        raise MetricInputError(
            f"class ids must lie in [0, {num_classes}) (or target == {ignore_index} to ignore); "
            f"found target ids {torch.unique(target[bad]).tolist()[:10]} / "
            f"pred ids {torch.unique(pred[bad]).tolist()[:10]}"
        )
    pair_index = target * num_classes + pred  # [M]
    return torch.bincount(pair_index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: Tensor) -> Tensor:
    """Per-class intersection over union, TP / (TP + FP + FN).

    Args:
        cm: Confusion matrix ``[C, C]``, rows ground truth, columns prediction.

    Returns:
        IoU per class ``[C]`` (float64); NaN for classes that are neither in the ground truth nor predicted.
    """
    _check_cm(cm)
    cm = cm.double()  # [C, C]
    true_pos = cm.diagonal()  # [C]
    union = cm.sum(dim=0) + cm.sum(dim=1) - true_pos  # [C]
    return torch.where(union > 0, true_pos / union.clamp(min=1), torch.full_like(union, math.nan))  # [C]


def miou(cm: Tensor) -> float:
    """Mean IoU as in the IRT evaluation: mean over classes whose union is non-empty.

    A class that is predicted but absent from the ground truth has IoU 0 and is included.

    Args:
        cm: Confusion matrix ``[C, C]``, rows ground truth, columns prediction.

    Returns:
        The mean IoU, or NaN when the matrix is empty.
    """
    iou = iou_per_class(cm)  # [C]
    defined = ~iou.isnan()  # [C]
    return float(iou[defined].mean()) if bool(defined.any()) else math.nan


def miou_present(cm: Tensor) -> float:
    """Mean IoU over the classes present in the ground truth only.

    Args:
        cm: Confusion matrix ``[C, C]``, rows ground truth, columns prediction.

    Returns:
        The mean IoU over classes with at least one ground-truth pixel, or NaN when there are none.
    """
    iou = iou_per_class(cm)  # [C]
    present = cm.sum(dim=1) > 0  # [C]
    return float(iou[present].mean()) if bool(present.any()) else math.nan


def pixel_accuracy(cm: Tensor) -> float:
    """Fraction of counted pixels whose prediction equals the ground truth.

    Args:
        cm: Confusion matrix ``[C, C]``, rows ground truth, columns prediction.

    Returns:
        The accuracy, or NaN when the matrix is empty.
    """
    _check_cm(cm)
    total = int(cm.sum())
    return float(cm.diagonal().sum()) / total if total > 0 else math.nan


class SegmentationScores(TypedDict):
    """What :meth:`SegmentationEvaluator.compute` reports; JSON-ready (None where a figure is undefined)."""

    miou: Optional[float]
    """IRT mIoU: mean IoU over the classes with a non-empty union; None when no pixel was counted."""
    miou_present: Optional[float]
    """Mean IoU over the classes present in the ground truth; None when no pixel was counted."""
    acc: Optional[float]
    """Pixel accuracy; None when no pixel was counted."""
    per_class_iou: Dict[str, Optional[float]]
    """Class name -> IoU, in class-id order; None where the class is neither in the ground truth nor predicted."""
    confusion_matrix: List[List[int]]
    """[C, C] pixel counts, rows ground truth, columns prediction."""
    n_pixels: int
    """Number of counted pixels."""


def _none_if_nan(value: float) -> Optional[float]:
    """JSON has no NaN, so undefined figures are reported as None."""
    return None if math.isnan(value) else value


class SegmentationEvaluator:
    """Accumulates one confusion matrix over many images, then reduces it to the scene's figures.

    Args:
        num_classes: Number of classes C.
        class_names: One name per class id, used as keys of ``per_class_iou``.
        ignore_index: Target value of pixels that are not counted.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str], ignore_index: int = IGNORE_ID) -> None:
        if len(class_names) != num_classes:
            raise MetricInputError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names: List[str] = list(class_names)
        self.ignore_index = ignore_index
        self.cm: Optional[Tensor] = None  # [C, C], created on the device of the first update

    def reset(self) -> None:
        """Forgets every pixel seen so far."""
        self.cm = None

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds one image (or batch) to the running confusion matrix.

        Args:
            pred: Predicted class ids ``[...]``, integer dtype.
            target: Ground-truth class ids, same shape; ``ignore_index`` pixels are skipped.
        """
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)  # [C, C]
        self.cm = cm if self.cm is None else self.cm + cm.to(self.cm.device)

    def compute(self) -> SegmentationScores:
        """Reduces the accumulated confusion matrix.

        Returns:
            A JSON-ready dict (see :class:`SegmentationScores`): ``miou`` (IRT definition), ``miou_present``,
            ``acc`` (float, or None when no pixel was counted), ``per_class_iou`` (name -> float, or None where
            the class is neither in the ground truth nor predicted), ``confusion_matrix`` (nested list, rows
            ground truth) and ``n_pixels`` (number of counted pixels).
        """
        cm = self.cm.cpu() if self.cm is not None else torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        iou = iou_per_class(cm).tolist()  # [C]
        return SegmentationScores(
            miou=_none_if_nan(miou(cm)),
            miou_present=_none_if_nan(miou_present(cm)),
            acc=_none_if_nan(pixel_accuracy(cm)),
            per_class_iou={name: _none_if_nan(value) for name, value in zip(self.class_names, iou)},
            confusion_matrix=cm.tolist(),
            n_pixels=int(cm.sum()),
        )
