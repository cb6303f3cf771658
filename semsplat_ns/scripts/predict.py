"""``semsplat-predict``: a trained semsplat model's class ids, class colours and confidence for every view of
the chosen splits, as PNG files (layout and encodings: :mod:`semsplat_ns.eval.predict`).

On a capture (nerfstudio transforms.json or COLMAP model), ``test`` names nerfstudio's evaluation split, and
predictions are refused inside the capture's own folders (labels, photos, models, semsplat's label copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

import tyro

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.console import CONSOLE, progress_bar
from semsplat_ns.data.capture_labels import has_distortion
from semsplat_ns.errors import exit_on_user_error
from semsplat_ns.eval.predict import (
    CONFIDENCE_ENCODING,
    PredictionError,
    SplitViews,
    check_output_dir,
    class_palette,
    predict_split,
    scene_dir_of_run,
    split_views,
)
from semsplat_ns.eval.run_config import load_run, read_run_config
from semsplat_ns.scripts import import_nerfstudio_method_registry

CAPTURE_FOLDERS = ("labels", "images", "colmap", "sparse", "semsplat_labels", "semsplat_pseudo")
"""Folders of a capture that predictions must not land in (``images_<N>/`` too): its labels, photos, models and
what semsplat derives from them."""


def _data_of_run(config_path: Path) -> Path:
    """``--data`` of a training run, as its config.yml records it (the datamanager's own overrides the parser's)."""
    import yaml

    config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    datamanager = config.pipeline.datamanager
    return Path(datamanager.data if datamanager.data is not None else datamanager.dataparser.data).expanduser()


def check_capture_output_dir(output_dir: Path, capture: Path) -> None:
    """Refuses output folders inside a capture's own folders (:data:`CAPTURE_FOLDERS`, ``images_<N>/``) and the
    capture folder itself.

    Args:
        output_dir: Requested output folder.
        capture: The capture folder the run was trained on.

    Raises:
        PredictionError: Naming the folder.
    """
    output = Path(output_dir).expanduser().resolve()
    capture = Path(capture).expanduser().resolve()
    if output == capture:
        raise PredictionError(
            f"refusing to write predictions to {output}: it is the capture folder itself, whose new train/ and test/ "
            "folders would make it read as an IRT scene; choose a folder outside the capture or below it"
        )
    if capture not in output.parents:
        return
    top = output.relative_to(capture).parts[0]
    if top in CAPTURE_FOLDERS or top.startswith("images_"):
        raise PredictionError(
            f"refusing to write predictions to {output}: it is inside the capture's {capture / top} (its labels, "
            "photos or models); choose an output folder outside it"
        )


@dataclass
class PredictArgs:
    """Write a trained semsplat model's per-view class ids, colours and confidence as PNG files."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/semsplat/<time>/config.yml)."""
    split: Tuple[Literal["train", "test", "validation"], ...] = ("train", "test")
    """Splits whose views are predicted (every view of each, labelled or not)."""
    output_dir: Optional[Path] = None
    """Where <split>/labels, <split>/colormap, <split>/confidence and predict.json go; default:
    <run dir>/predict. Must lie outside the scene's split folders."""


def run(args: PredictArgs) -> dict:
    """Loads the run's last checkpoint and writes the predictions of every view of ``args.split``.

    Returns:
        The summary also written to ``<output_dir>/predict.json``.
    """
    config_path = Path(args.load_config)
    read_run_config(config_path)
    if not args.split:
        raise PredictionError("--split names no split; pass one or more of train, test, validation")
    output_dir = args.output_dir or config_path.parent / "predict"
    splits = list(dict.fromkeys(args.split))  # repeated names predict once
    # Checked before the (slow) checkpoint loading, and so before anything is written: predictions must
    # never land among the scene's photos and ground truth.
    data = _data_of_run(config_path)
    if data.is_file() and data.suffix.lower() == ".json":
        check_capture_output_dir(output_dir, data.parent)  # a capture named by its transforms .json
    else:
        scene_dir = scene_dir_of_run(config_path)
        check_output_dir(output_dir, scene_dir, splits)
        if not (scene_dir / "train").is_dir():
            check_capture_output_dir(output_dir, scene_dir)

    from semsplat_ns.data.datamanager import SemSplatDataManager
    from semsplat_ns.model.semsplat_model import SemSplatModel

    _, pipeline, checkpoint, step = load_run(config_path, "test")
    model, datamanager = pipeline.model, pipeline.datamanager
    if not isinstance(model, SemSplatModel) or not isinstance(datamanager, SemSplatDataManager):
        raise PredictionError(
            f"{config_path} is a {type(model).__name__} run; semsplat-predict needs a semsplat run (ns-train semsplat)"
        )
    model.eval()

    views = {split: split_views(datamanager, split) for split in splits}
    with progress_bar() as progress:
        for split in splits:
            predict_split(model, views[split], output_dir, progress)
    summary = {
        "checkpoint": str(checkpoint),
        "step": int(step),
        "splits": {split: _split_record(views[split]) for split in splits},
        "class_names": list(model.class_names),
        "class_colors": class_palette(model).tolist(),
        "labels": "uint8 PNG, class id in channel 0 (all three channels equal), as IRT labels",
        "confidence": CONFIDENCE_ENCODING,
    }
    write_json_atomic(output_dir / "predict.json", summary)
    counts = ", ".join(f"{len(views[split].stems)} {split}" for split in splits)
    CONSOLE.print(
        f"Predictions of {counts} views written to [bold]{output_dir}[/bold] "
        "(<split>/labels, <split>/colormap, <split>/confidence, predict.json)"
    )
    return summary


def _split_record(views: SplitViews) -> Dict[str, Any]:
    """predict.json's entry of a split: its views, and those whose photo has lens distortion (rendered as the
    undistorted camera nerfstudio trains on, then read back at every photo pixel; 255 where the render ends)."""
    distorted = [stem for index, stem in enumerate(views.stems) if has_distortion(views.cameras[index : index + 1])]
    return {"views": len(views.stems), "stems": list(views.stems), "mapped_back_from_undistorted": distorted}


def entrypoint() -> None:
    """Console script: parses the arguments; a request that cannot be met ends with one error line (exit 2)."""
    args = tyro.cli(PredictArgs)
    import_nerfstudio_method_registry()
    with exit_on_user_error("semsplat-predict"):
        run(args)


if __name__ == "__main__":
    entrypoint()
