"""``semsplat-eval``: segmentation metrics of a trained semsplat model on the test views (see
:mod:`semsplat_ns.eval.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.console import CONSOLE
from semsplat_ns.eval.evaluate import evaluate_pipeline, print_result


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
    CONSOLE.print(
        f"Results written to [bold]{output_dir}[/bold] (metrics.json, confusion_matrix.png, "
        "per_class_iou.png, predictions/)"
    )
    return result


def entrypoint() -> None:
    run(tyro.cli(EvalArgs))


if __name__ == "__main__":
    entrypoint()
