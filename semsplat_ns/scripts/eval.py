"""``semsplat-eval``: segmentation metrics of a trained semsplat model on the test views (see
:mod:`semsplat_ns.eval.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.console import CONSOLE
from semsplat_ns.data.capture_dataparser import capture_layout
from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir
from semsplat_ns.errors import exit_on_user_error
from semsplat_ns.eval.evaluate import evaluate_pipeline, print_result
from semsplat_ns.scripts import import_nerfstudio_method_registry

PROG = "semsplat-eval"


@dataclass
class EvalArgs:
    """Evaluate a trained semsplat model's segmentation on the test (or validation) views."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/semsplat/<time>/config.yml)."""
    split: Literal["test", "validation"] = "test"
    """Which labelled views to evaluate."""
    data: Optional[Path] = None
    """Evaluate on this scene instead of the one config.yml names (e.g. after moving it): a folder, or a bare
    name looked up in $SEMSPLAT_DATA/<name>, then ./data/<name>, as ns-train --data does."""
    output_dir: Optional[Path] = None
    """Where metrics.json and the PNGs go; default: <run dir>/eval-<split>."""
    save_images: bool = True
    """Write GT | prediction | error panels for every view."""


def _scene_of(config, args: EvalArgs) -> Path:
    """The scene to evaluate on (``--data``, else the run's), resolved and checked to hold the split."""
    datamanager = config.pipeline.datamanager
    data = args.data or getattr(datamanager, "data", None) or datamanager.dataparser.data
    try:
        # A nerfstudio transforms.json given directly is a capture, not a folder to resolve.
        is_json = Path(data).is_file() and Path(data).suffix.lower() == ".json"
        scene = Path(data) if is_json else resolve_scene_dir(Path(data))
    except IRTDataError as err:
        source = "--data" if args.data else f"{args.load_config} (--data evaluates on another scene)"
        raise IRTDataError(f"{err}; the scene comes from {source}") from None
    if capture_layout(scene) != "irt":
        # A nerfstudio capture or COLMAP model: its eval split follows nerfstudio's rules, and the
        # evaluation scores the eval images that have labels (docs/CAPTURES.md).
        return scene
    if not (scene / args.split).is_dir():
        # Without it the dataparser holds out unlabelled training views: nothing to score segmentation on.
        raise IRTDataError(
            f"{scene / args.split}: split folder does not exist, and semsplat-eval needs its labelled views. "
            f"Training held out unlabelled training views instead, which give RGB metrics only: "
            f"ns-eval --load-config {args.load_config}. For segmentation metrics add {args.split}/ with a label "
            "for every view (docs/IRT_LAYOUT.md)"
        )
    return scene


def run(args: EvalArgs) -> dict:
    """Evaluates the run of ``args.load_config``; writes metrics.json and the PNGs, prints the tables."""
    from semsplat_ns.eval.run_config import load_run

    def update_config(config):
        # Runs before the pipeline is built: a missing scene or split stops here, not after loading the model.
        scene = _scene_of(config, args)
        config.pipeline.datamanager.data = scene
        config.pipeline.datamanager.dataparser.data = scene
        config.pipeline.datamanager.dataparser.eval_split = args.split
        return config

    _, pipeline, checkpoint, step = load_run(args.load_config, "test", update_config_callback=update_config)
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
    """Console entry point ``semsplat-eval``."""
    args = tyro.cli(EvalArgs, prog=PROG)
    import_nerfstudio_method_registry()
    with exit_on_user_error(PROG):
        run(args)


if __name__ == "__main__":
    entrypoint()
