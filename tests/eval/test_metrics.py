"""Segmentation metrics on hand-made inputs with hand-computed values, and the result pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsplat_ns.eval.metrics import (
    MetricInputError,
    SegmentationEvaluator,
    confusion_matrix,
    iou_per_class,
    miou,
    miou_present,
    pixel_accuracy,
)
from semsplat_ns.eval.plots import (
    PlotInputError,
    colorize_labels,
    error_panel,
    save_confusion_matrix_png,
    save_per_class_iou_png,
    save_png,
)

# ---------------------------------------------------------------------------------------------- metrics


def test_confusion_matrix_counts_pairs_and_skips_ignored_pixels():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])  # the last pixel is ignored whatever it predicts
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0, FN 1 -> 0
    assert torch.allclose(iou_per_class(cm), torch.tensor([1 / 3, 2 / 3, 0.0], dtype=torch.float64))
    assert miou(cm) == pytest.approx(1 / 3)
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_confusion_matrix_accepts_uint8_maps_and_is_row_gt_col_pred():
    target = torch.tensor([[2, 2], [2, 2]], dtype=torch.uint8)
    pred = torch.tensor([[0, 0], [0, 1]], dtype=torch.uint8)
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm[2].tolist() == [3, 1, 0]
    assert int(cm.sum()) == 4


def test_empty_and_predicted_but_absent_classes():
    cm = torch.tensor(
        [
            [3, 1, 0, 0],
            [0, 2, 0, 1],
            [0, 0, 0, 0],  # class 2: neither in GT nor predicted
            [0, 0, 0, 0],  # class 3: predicted once, absent from GT
        ]
    )
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(3 / 4)
    assert iou[1] == pytest.approx(2 / 4)
    assert math.isnan(iou[2])
    assert iou[3] == 0.0
    assert miou(cm) == pytest.approx((0.75 + 0.5 + 0.0) / 3)  # IRT: class 3 counts as 0
    assert miou_present(cm) == pytest.approx((0.75 + 0.5) / 2)  # class 3 is not in GT
    assert pixel_accuracy(cm) == pytest.approx(5 / 7)


def test_empty_matrix_gives_nan():
    cm = torch.zeros(3, 3, dtype=torch.long)
    assert torch.isnan(iou_per_class(cm)).all()
    assert math.isnan(miou(cm)) and math.isnan(miou_present(cm)) and math.isnan(pixel_accuracy(cm))


@pytest.mark.parametrize(
    "pred, target, message",
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), "shape"),
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), "integer class ids"),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 255]), r"target ids \[7\]"),
        (torch.tensor([0, 3, 0, 0]), torch.zeros(4, dtype=torch.long), r"pred ids \[3\]"),
    ],
)
def test_bad_input_raises_one_clear_value_error(pred, target, message):
    with pytest.raises(MetricInputError, match=message) as info:
        confusion_matrix(pred, target, num_classes=3)
    assert isinstance(info.value, ValueError)


def test_non_square_matrix_is_rejected():
    with pytest.raises(MetricInputError, match="square"):
        miou(torch.zeros(2, 3, dtype=torch.long))


def test_evaluator_two_images_equal_one_concatenated_image():
    generator = torch.Generator().manual_seed(0)
    names = [f"c{i}" for i in range(5)]
    images = []
    for height, width in ((7, 9), (4, 11)):
        target = torch.randint(0, 5, (height, width), generator=generator)
        target[torch.rand(height, width, generator=generator) < 0.2] = 255
        pred = torch.randint(0, 5, (height, width), generator=generator)
        images.append((pred, target))

    accumulated = SegmentationEvaluator(5, names)
    for pred, target in images:
        accumulated.update(pred, target)
    concatenated = SegmentationEvaluator(5, names)
    concatenated.update(torch.cat([p.flatten() for p, _ in images]), torch.cat([t.flatten() for _, t in images]))

    assert accumulated.compute() == concatenated.compute()
    result = accumulated.compute()
    assert result["n_pixels"] == sum(int((t != 255).sum()) for _, t in images)
    # Not the mean of per-image mIoUs: one matrix over all pixels.
    assert result["miou"] == pytest.approx(miou(torch.tensor(result["confusion_matrix"])))


def test_evaluator_compute_is_json_ready_with_hand_values():
    evaluator = SegmentationEvaluator(4, ["road", "roof", "tree", "car"])
    evaluator.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))
    evaluator.update(torch.tensor([1, 1, 3, 2]), torch.tensor([1, 1, 1, 255]))
    result = evaluator.compute()
    json.dumps(result, allow_nan=False)  # no NaN anywhere
    assert result["confusion_matrix"] == [[3, 1, 0, 0], [0, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert result["per_class_iou"] == pytest.approx({"road": 0.75, "roof": 0.5, "tree": None, "car": 0.0})
    assert result["miou"] == pytest.approx(1.25 / 3)
    assert result["miou_present"] == pytest.approx(0.625)
    assert result["acc"] == pytest.approx(5 / 7)
    assert result["n_pixels"] == 7

    evaluator.reset()
    assert evaluator.compute()["n_pixels"] == 0


def test_evaluator_all_ignored_reports_none():
    evaluator = SegmentationEvaluator(2, ["a", "b"])
    evaluator.update(torch.ones(3, 3, dtype=torch.long), torch.full((3, 3), 255))
    result = evaluator.compute()
    assert result["n_pixels"] == 0
    assert result["miou"] is None and result["miou_present"] is None and result["acc"] is None
    assert result["per_class_iou"] == {"a": None, "b": None}


def test_evaluator_rejects_wrong_number_of_names():
    with pytest.raises(MetricInputError, match="3 class names for 2 classes"):
        SegmentationEvaluator(2, ["a", "b", "c"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 6, (64, 64), generator=generator)
    pred = torch.randint(0, 6, (64, 64), generator=generator)
    cm_cuda = confusion_matrix(pred.cuda(), target.cuda(), 6)
    assert cm_cuda.is_cuda
    assert torch.equal(cm_cuda.cpu(), confusion_matrix(pred, target, 6))


# ---------------------------------------------------------------------------------------------- pictures

PALETTE = np.array([[70, 70, 70], [244, 35, 232], [107, 142, 35], [0, 0, 142]], dtype=np.uint8)


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _no_temp_files(folder: Path) -> bool:
    return all(not p.name.startswith(".") for p in folder.iterdir())


def test_colorize_labels_exact_colours():
    labels = torch.tensor([[0, 1], [255, 3]])
    image = colorize_labels(labels, PALETTE, ignore_color=(1, 2, 3))
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    assert image[0, 0].tolist() == [70, 70, 70]
    assert image[0, 1].tolist() == [244, 35, 232]
    assert image[1, 0].tolist() == [1, 2, 3]
    assert image[1, 1].tolist() == [0, 0, 142]


def test_colorize_labels_rejects_ids_outside_palette():
    with pytest.raises(PlotInputError, match=r"\[4\] outside the palette of 4"):
        colorize_labels(np.array([[0, 4]]), PALETTE)


def test_error_panel_marks_wrong_pixels_red():
    gt = np.array([[0, 1], [2, 255]])
    pred = np.array([[0, 2], [2, 1]])
    panel = error_panel(colorize_labels(gt, PALETTE), colorize_labels(pred, PALETTE), gt, pred)
    assert panel.shape == (2, 6, 3) and panel.dtype == np.uint8
    assert np.array_equal(panel[:, :2], colorize_labels(gt, PALETTE))
    assert np.array_equal(panel[:, 2:4], colorize_labels(pred, PALETTE))
    errors = panel[:, 4:]
    assert errors[0, 1].tolist() == [255, 0, 0]  # wrong
    assert errors[1, 1].tolist() == [0, 0, 0]  # ignored
    for row, col in ((0, 0), (1, 0)):  # right: grey, darker than the GT colour
        r, g, b = errors[row, col].tolist()
        assert r == g == b and 0 < r < max(PALETTE[gt[row, col]])


def test_save_png_is_exact_and_atomic(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_png(tmp_path / "sub" / "img.png", image)
    assert np.array_equal(_read_png(path), image)
    # A bad image leaves the existing file untouched and no temp file behind.
    with pytest.raises(PlotInputError, match="img.png"):
        save_png(path, image.astype(np.float32))
    assert np.array_equal(_read_png(path), image)
    assert _no_temp_files(path.parent)


def test_confusion_matrix_png_shows_only_used_classes(tmp_path):
    names = [f"class{i}" for i in range(20)]
    sparse_cm = np.zeros((20, 20), dtype=np.int64)
    sparse_cm[[0, 0, 5], [0, 5, 5]] = [90, 10, 40]
    full_cm = np.eye(20, dtype=np.int64) * 10
    sparse_path = save_confusion_matrix_png(torch.from_numpy(sparse_cm), names, tmp_path / "cm_sparse.png")
    full_path = save_confusion_matrix_png(full_cm, names, tmp_path / "cm_full.png", normalize=None)
    sparse_image, full_image = _read_png(sparse_path), _read_png(full_path)
    assert sparse_image.shape[0] > 100 and sparse_image.shape[1] > 100
    assert full_image.shape[0] > 2 * sparse_image.shape[0]  # 20 rows vs 2
    assert _no_temp_files(tmp_path)
    with pytest.raises(PlotInputError, match="empty"):
        save_confusion_matrix_png(np.zeros((20, 20)), names, tmp_path / "cm_empty.png")
    assert not (tmp_path / "cm_empty.png").exists()


def test_per_class_iou_png_uses_class_colours(tmp_path):
    per_class = {"Building": 0.8, "Sidewalk": 0.5, "Vegetation": None, "Vehicles": 0.3}
    path = save_per_class_iou_png(per_class, tmp_path / "iou.png", class_colors=PALETTE)
    pixels = {tuple(p) for p in _read_png(path).reshape(-1, 3).tolist()}
    for colour in (PALETTE[0], PALETTE[1], PALETTE[3]):
        assert tuple(colour.tolist()) in pixels
    assert tuple(PALETTE[2].tolist()) not in pixels  # the undefined class gets no bar
    assert _no_temp_files(tmp_path)
    with pytest.raises(PlotInputError, match="class_colors"):
        save_per_class_iou_png(per_class, tmp_path / "bad.png", class_colors=PALETTE[:2])
