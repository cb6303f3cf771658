"""``semsplat-eval``: segmentation metrics of a trained semsplat model on the test views.

One confusion matrix over all evaluated pixels (the IRT definition), per-class IoU, mIoU over classes
with a non-empty union (``miou``) and over classes present in the ground truth (``miou_present``),
pixel accuracy, and the per-view test time: CUDA-synchronised time to render RGB + semantics + argmax
for one view, without metric work. Writes ``metrics.json``, a confusion-matrix PNG, a per-class IoU
PNG and colourised predictions (GT | prediction | error).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import tyro
from rich.console import Console
from rich.progress import track
from rich.table import Table

from semsplat_ns.atomic import write_json_atomic

CONSOLE = Console()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate_pipeline(pipeline, output_dir: Optional[Path] = None, warmup: int = 2, save_images: bool = True) -> dict:
    """Evaluates semantics of every eval view of a loaded pipeline.

    Args:
        pipeline: A nerfstudio pipeline whose model is a SemSplatModel (from ``eval_setup``).
        output_dir: Where JSON and PNGs go; None writes nothing.
        warmup: Untimed renders before timing (kernel compilation, caches).
        save_images: Write GT | prediction | error panels per view.

    Returns:
        The metrics dict (also written to ``output_dir/metrics.json``).
    """
    from semsplat_ns.model.metric_plots import (
        colorize_labels,
        error_panel,
        save_confusion_matrix_png,
        save_per_class_iou_png,
        save_png,
    )
    from semsplat_ns.model.metrics import SegmentationEvaluator

    model = pipeline.model
    model.eval()
    device = model.device
    datamanager = pipeline.datamanager
    dataset = datamanager.eval_dataset
    views = datamanager.fixed_indices_eval_dataloader  # [(camera, data)]
    labelled = [(camera, data) for camera, data in views if "semantics" in data]
    if not labelled:
        raise ValueError(f"no labelled eval view in {datamanager.config.dataparser.data}: nothing to evaluate")
    colors = model.class_colors.cpu().numpy()
    colors = (colors * 255).round().astype("uint8")  # [C, 3]
    evaluator = SegmentationEvaluator(model.num_classes, model.class_names)

    for camera, _ in labelled[:warmup]:
        model.render_labels(camera)
    times_ms = []
    stems = list(dataset.metadata.get("stems") or range(len(views)))
    for camera, data in track(labelled, description="Evaluating test views", console=CONSOLE):
        _sync(device)
        start = time.perf_counter()
        pred = model.render_labels(camera)  # [H, W]
        _sync(device)
        times_ms.append((time.perf_counter() - start) * 1000.0)
        target = data["semantics"].to(pred.device).long()  # [H, W]
        evaluator.update(pred, target)
        if output_dir is not None and save_images:
            gt_np, pred_np = target.cpu().numpy(), pred.cpu().numpy()
            panel = error_panel(colorize_labels(gt_np, colors), colorize_labels(pred_np, colors), gt_np, pred_np)
            save_png(output_dir / "predictions" / f"{stems[int(data['image_idx'])]}.png", panel)

    result = evaluator.compute()
    result.update(
        test_ms_per_view=statistics.median(times_ms),
        test_ms_per_view_p95=sorted(times_ms)[max(0, int(round(0.95 * len(times_ms))) - 1)],
        n_views=len(labelled),
        n_gaussians=int(model.num_points),
        device=str(device),
    )
    if output_dir is not None:
        write_json_atomic(output_dir / "metrics.json", result)
        save_confusion_matrix_png(torch.tensor(result["confusion_matrix"]), model.class_names,
                                  output_dir / "confusion_matrix.png")
        save_per_class_iou_png(result["per_class_iou"], output_dir / "per_class_iou.png", class_colors=colors)
    return result


def print_result(result: dict) -> None:
    """Prints per-class IoU and the summary as rich tables."""
    table = Table(title="Per-class IoU (%)")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, value in result["per_class_iou"].items():
        table.add_row(name, "—" if value is None else f"{100 * value:.2f}")
    CONSOLE.print(table)
    summary = Table(title="semsplat evaluation")
    for column in ("mIoU", "mIoU (present)", "pixel acc.", "ms / view (median)", "ms / view (p95)", "views", "Gaussians"):
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{100 * result['miou']:.2f}",
        f"{100 * result['miou_present']:.2f}",
        f"{100 * result['acc']:.2f}",
        f"{result['test_ms_per_view']:.2f}",
        f"{result['test_ms_per_view_p95']:.2f}",
        str(result["n_views"]),
        str(result["n_gaussians"]),
    )
    CONSOLE.print(summary)


@dataclass
class EvalArgs:
    """Evaluate a trained semsplat model's segmentation on the test (or validation) views."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/semsplat/<time>/config.yml)."""
    split: Literal["test", "validation"] = "test"
    """Which labelled views to evaluate."""
    output_dir: Optional[Path] = None
    """Where metrics.json and the PNGs go; default: <run dir>/eval-<split>."""
    save_images: bool = True
    """Write GT | prediction | error panels for every view."""


def run(args: EvalArgs) -> dict:
    from nerfstudio.utils.eval_utils import eval_setup

    def update_config(config):
        config.pipeline.datamanager.dataparser.eval_split = args.split
        return config

    _, pipeline, checkpoint, step = eval_setup(args.load_config, test_mode="test", update_config_callback=update_config)
    output_dir = args.output_dir or args.load_config.parent / f"eval-{args.split}"
    result = evaluate_pipeline(pipeline, output_dir, save_images=args.save_images)
    result.update(checkpoint=str(checkpoint), step=int(step), split=args.split)
    write_json_atomic(output_dir / "metrics.json", result)
    print_result(result)
    CONSOLE.print(f"Results written to [bold]{output_dir}[/bold] (metrics.json, confusion_matrix.png, "
                  "per_class_iou.png, predictions/)")
    return result


def entrypoint() -> None:
    run(tyro.cli(EvalArgs))


if __name__ == "__main__":
    entrypoint()
