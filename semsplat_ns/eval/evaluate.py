"""Segmentation metrics of a trained semsplat pipeline on its evaluation views: render, then score.

One confusion matrix over all evaluated pixels (the IRT definition), per-class IoU, mIoU over classes
with a non-empty union (``miou``) and over classes present in the ground truth (``miou_present``),
pixel accuracy, and the per-view test time by :class:`~semsplat_ns.eval.timing.PerViewTiming`. Writes
``metrics.json``, a confusion-matrix PNG, a per-class IoU PNG and GT | prediction | error panels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from rich.progress import track
from rich.table import Table

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.console import CONSOLE
from semsplat_ns.errors import UserInputError
from semsplat_ns.eval.metrics import SegmentationEvaluator
from semsplat_ns.eval.plots import (
    colorize_labels,
    error_panel,
    save_confusion_matrix_png,
    save_per_class_iou_png,
    save_png,
)
from semsplat_ns.eval.timing import PerViewTiming


@torch.no_grad()
def evaluate_pipeline(
    pipeline, output_dir: Optional[Path] = None, timing: PerViewTiming = PerViewTiming(), save_images: bool = True
) -> dict:
    """Evaluates semantics of every eval view of a loaded pipeline.

    Args:
        pipeline: A nerfstudio pipeline whose model is a SemSplatModel (from ``eval_setup``).
        output_dir: Where JSON and PNGs go; None writes nothing.
        timing: The timing protocol.
        save_images: Write GT | prediction | error panels per view.

    Returns:
        The metrics dict (also written to ``output_dir/metrics.json``).
    """
    model = pipeline.model
    model.eval()
    device = model.device
    datamanager = pipeline.datamanager
    dataset = datamanager.eval_dataset
    views = datamanager.fixed_indices_eval_dataloader  # [(camera, data)]
    labelled = [(camera, data) for camera, data in views if "semantics" in data]
    if not labelled:
        raise UserInputError(
            f"{datamanager.config.dataparser.data}: no evaluation view has a label, so there is nothing to score; "
            "label some eval images (labels/<stem>.png), or use ns-eval for RGB metrics"
        )
    colors = model.class_colors.cpu().numpy()
    colors = (colors * 255).round().astype("uint8")  # [C, 3]
    evaluator = SegmentationEvaluator(model.num_classes, model.class_names)

    stems = list(dataset.metadata.get("stems") or range(len(views)))

    def score(view, pred: torch.Tensor) -> None:
        _, data = view
        target = data["semantics"].to(pred.device).long()  # [H, W]
        evaluator.update(pred, target)
        if output_dir is not None and save_images:
            gt_np, pred_np = target.cpu().numpy(), pred.cpu().numpy()
            panel = error_panel(colorize_labels(gt_np, colors), colorize_labels(pred_np, colors), gt_np, pred_np)
            save_png(output_dir / "predictions" / f"{stems[int(data['image_idx'])]}.png", panel)

    times = timing.run(
        lambda view: model.render_labels(view[0]),
        labelled,
        device,
        score=score,
        progress=lambda views: track(views, description="Evaluating test views", console=CONSOLE),
    )

    scores = evaluator.compute()
    result: Dict[str, Any] = {
        **scores,
        **times.as_fields(),
        "n_views": len(labelled),
        "n_gaussians": int(model.num_points),
        "device": str(device),
    }
    if output_dir is not None:
        write_json_atomic(output_dir / "metrics.json", result)
        save_confusion_matrix_png(
            torch.tensor(scores["confusion_matrix"]), model.class_names, output_dir / "confusion_matrix.png"
        )
        save_per_class_iou_png(scores["per_class_iou"], output_dir / "per_class_iou.png", class_colors=colors)
    return result


def _percent(value: Optional[float]) -> str:
    # metrics.json keeps fractions; people read percentages, so the tables say which they show.
    return "—" if value is None else f"{100 * value:.2f} %"


def print_result(result: dict) -> None:
    """Prints per-class IoU and the summary as rich tables (fractions of metrics.json shown as %)."""
    table = Table(title="Per-class IoU")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, value in result["per_class_iou"].items():
        table.add_row(name, _percent(value))
    CONSOLE.print(table)
    summary = Table(title="semsplat evaluation")
    for column in (
        "mIoU",
        "mIoU (present)",
        "pixel acc.",
        "ms / view (median)",
        "ms / view (p95)",
        "views",
        "Gaussians",
    ):
        summary.add_column(column, justify="right")
    summary.add_row(
        _percent(result["miou"]),
        _percent(result["miou_present"]),
        _percent(result["acc"]),
        f"{result['test_ms_per_view']:.2f}",
        f"{result['test_ms_per_view_p95']:.2f}",
        str(result["n_views"]),
        str(result["n_gaussians"]),
    )
    CONSOLE.print(summary)
