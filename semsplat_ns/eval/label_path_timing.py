"""Times semsplat-eval's label path against the general render it replaced, on one trained run (issue #13).

::

    python -m semsplat_ns.eval.label_path_timing --load-config outputs/<scene>/semsplat/<time>/config.yml

Both are timed by the one protocol (:class:`~semsplat_ns.eval.timing.PerViewTiming`) on the same evaluation views,
in the same process on the same device, alternately ``--repeats`` times:

- ``lean``: :meth:`SemSplatModel.render_labels <semsplat_ns.model.semsplat_model.SemSplatModel.render_labels>`,
  what semsplat-eval times (the semantic features alone in one raster pass, the head, the argmax);
- ``general``: splatfacto's ``get_outputs_for_camera`` (colours from SH, semantic features, label support and
  depth in one pass, background, clamping), the head, the argmax: ``render_labels`` before issue #13 item 3.

Prints one JSON object: each path's median and 95th-percentile ms per view (per repeat, and the median of the
repeats' medians) and how many pixels' labels differ between the two paths (0 expected).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.eval.timing import PerViewTiming


def general_render_labels(model, camera) -> torch.Tensor:
    """Class ids [H, W] through splatfacto's full evaluation render (``render_labels`` before the label path).

    Args:
        model: A SemSplatModel in evaluation mode.
        camera: One camera on the model's device.
    """
    from nerfstudio.models.splatfacto import SplatfactoModel

    from semsplat_ns.model.compat import renders_run_eagerly

    with torch.no_grad(), renders_run_eagerly():
        outputs = SplatfactoModel.get_outputs_for_camera(model, camera)
    return outputs["semantic_logits"].argmax(dim=-1)  # [H, W]


def compare_label_paths(model, cameras: Sequence, repeats: int = 3, timing: PerViewTiming = PerViewTiming()) -> Dict:
    """Times the lean and the general label path on the same cameras and counts the pixels where they differ.

    Args:
        model: A SemSplatModel (put in evaluation mode).
        cameras: One camera per view, on the model's device.
        repeats: Timed runs of each path, alternating (lean, general, lean, ...).
        timing: The timing protocol.

    Returns:
        ``{"lean": {...}, "general": {...}, "differing_pixels": int, "pixels": int, "views": int, "device": str}``;
        each path's entry holds ``ms_per_view`` (median of the repeats' medians), ``ms_per_view_runs`` and
        ``p95_ms_runs`` (one per repeat).
    """
    model.eval()
    paths: Dict[str, Callable[[object], torch.Tensor]] = {
        "lean": model.render_labels,
        "general": lambda camera: general_render_labels(model, camera),
    }
    labels: Dict[str, List[torch.Tensor]] = {name: [] for name in paths}
    runs: Dict[str, Dict[str, List[Optional[float]]]] = {name: {"median": [], "p95": []} for name in paths}
    for repeat in range(repeats):
        for name, predict in paths.items():
            predictions: List[torch.Tensor] = []
            times = timing.run(predict, list(cameras), model.device, score=lambda _, pred: predictions.append(pred))
            runs[name]["median"].append(times.median_ms)
            runs[name]["p95"].append(times.p95_ms)
            if repeat == 0:
                labels[name] = predictions  # [H, W] each, on the device
    differing = sum(int((lean != general).sum()) for lean, general in zip(labels["lean"], labels["general"]))
    result: Dict = {
        name: {
            "ms_per_view": statistics.median([value for value in runs[name]["median"] if value is not None] or [0.0]),
            "ms_per_view_runs": runs[name]["median"],
            "p95_ms_runs": runs[name]["p95"],
        }
        for name in paths
    }
    result.update(
        differing_pixels=differing,
        pixels=sum(int(view.numel()) for view in labels["lean"]),
        views=len(cameras),
        device=str(model.device),
        n_gaussians=int(model.num_points),
    )
    return result


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Loads a run (``--load-config``), compares both paths on its evaluation views and prints the JSON."""
    parser = argparse.ArgumentParser(description="Times semsplat-eval's label path against the general render.")
    parser.add_argument("--load-config", type=Path, required=True, help="the run's config.yml")
    parser.add_argument("--split", default="test", choices=("test", "validation"), help="evaluation split")
    parser.add_argument("--data", type=Path, default=None, help="the scene folder, if not the run's")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path, alternating")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON to this file (atomically)")
    args = parser.parse_args(argv)

    from semsplat_ns.eval.run_config import load_run
    from semsplat_ns.scripts import import_nerfstudio_method_registry

    import_nerfstudio_method_registry()  # as semsplat-eval does, before loading the run

    def update_config(config):
        if args.data is not None:
            config.pipeline.datamanager.data = args.data
            config.pipeline.datamanager.dataparser.data = args.data
        config.pipeline.datamanager.dataparser.eval_split = args.split
        return config

    _, pipeline, _, _ = load_run(args.load_config, "test", update_config_callback=update_config)
    datamanager = pipeline.datamanager
    cameras = [camera for camera, _ in datamanager.fixed_indices_eval_dataloader]  # type: ignore[attr-defined]
    result = compare_label_paths(pipeline.model, cameras, repeats=args.repeats)
    if torch.cuda.is_available() and str(result.get("device", "")).startswith("cuda"):
        result["device_name"] = torch.cuda.get_device_name()
    print(json.dumps(result, indent=2))
    if args.out is not None:
        # the run's loading prints to stdout too: a file of its own holds the JSON alone
        write_json_atomic(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
