"""Per-class quality of a scene's pseudo labels against full labels of its training views (issue #12).

For each class, over the unlabelled training views that have pseudo labels: its share of the pixels, the share of
its pixels that get a pseudo label (covered), the share of those that get its own class (correct), and the share of
its pixels that get another class (wrong: what the pseudo loss teaches against it). Thin classes (pole, light,
sign) lose most where "wrong" is high. Full labels are read for measuring only; the method never reads them.

    python -m benchmarks.pseudo_quality SCENE GT_DIR --method NAME --out benchmarks/results/pseudo_quality.json

One row per (scene, method): the benchmark row keys (mIoU and timing fields None: nothing is trained here) plus
``pseudo_coverage``, ``pseudo_accuracy`` and ``pseudo_per_class``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from benchmarks.common import append_rows, result_row
from semsplat_ns.data import irt_io
from semsplat_ns.data.classes import read_scene_classes
from semsplat_ns.pseudo.scene import read_scene
from semsplat_ns.pseudo.store import output_paths


def class_quality(pairs: Sequence[tuple], num_classes: int) -> Dict[str, np.ndarray]:
    """Pixel counts per ground-truth class over (pseudo ids [H, W], true ids [H, W]) pairs.

    Args:
        pairs: (pseudo uint8 [H, W], 255 = none; truth uint8 [H, W], 255 = unknown) per view.
        num_classes: Number of classes C.

    Returns:
        int64 [C] arrays: ``pixels`` (true pixels of the class), ``covered`` (of them, with a pseudo label),
        ``correct`` (of them, with the class's own id) and ``claimed`` (pixels given the class's id).
    """
    pixels, covered, correct, claimed = (np.zeros(num_classes, np.int64) for _ in range(4))
    for pseudo, truth in pairs:
        known = truth < num_classes  # [H, W]
        labelled = known & (pseudo < num_classes)  # [H, W]
        pixels += np.bincount(truth[known], minlength=num_classes)[:num_classes]
        covered += np.bincount(truth[labelled], minlength=num_classes)[:num_classes]
        correct += np.bincount(truth[labelled & (pseudo == truth)], minlength=num_classes)[:num_classes]
        claimed += np.bincount(pseudo[labelled], minlength=num_classes)[:num_classes]
    return {"pixels": pixels, "covered": covered, "correct": correct, "claimed": claimed}


def _share(part: float, whole: float) -> Optional[float]:
    return float(part / whole) if whole else None


def quality_row(scene_dir: Path, gt_dir: Path, method: str, command: str) -> Dict[str, Any]:
    """The row of one scene's pseudo labels (see the module docstring)."""
    scene = read_scene(scene_dir)
    pairs: List[tuple] = []
    for i in scene.targets:
        stem = scene.stems[i]
        pseudo_path, _ = output_paths(scene.root, stem)
        if not pseudo_path.is_file():
            continue
        truth_path = gt_dir / f"{stem}.png"
        truth = irt_io.read_label(truth_path, scene.class_colors, scene.num_classes)  # [H, W]
        pseudo = irt_io.read_pseudo_label(pseudo_path)  # [H, W]
        if truth.shape != pseudo.shape:
            raise ValueError(f"{truth_path}: is {truth.shape}, the pseudo label {pseudo_path} {pseudo.shape}")
        pairs.append((pseudo, truth))
    if not pairs:
        raise ValueError(f"{scene_dir}: no pseudo labels to measure")
    counts = class_quality(pairs, scene.num_classes)
    total = counts["pixels"].sum()
    per_class = {}
    for c, name in enumerate(read_scene_classes(scene.scene_dir).names):
        if not counts["pixels"][c]:
            continue
        per_class[name] = {
            "share": _share(counts["pixels"][c], total),
            "covered": _share(counts["covered"][c], counts["pixels"][c]),
            "correct_of_covered": _share(counts["correct"][c], counts["covered"][c]),
            "wrong": _share(counts["covered"][c] - counts["correct"][c], counts["pixels"][c]),
            "precision": _share(counts["correct"][c], counts["claimed"][c]),
        }
    row = result_row(
        scene_dir.name,
        method,
        miou=None,
        miou_present=None,
        acc=None,
        test_ms_per_view=None,
        train_s=None,
        steps=None,
        peak_gpu_mem_gb=None,
        n_gaussians=None,
        command=command,
    )
    row.update(
        views=len(pairs),
        pseudo_coverage=_share(counts["covered"].sum(), total),
        pseudo_accuracy=_share(counts["correct"].sum(), counts["covered"].sum()),
        pseudo_per_class=per_class,
    )
    return row


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path, help="the scene folder whose pseudo labels are measured")
    parser.add_argument("gt_dir", type=Path, help="folder of full labels <stem>.png of its training views")
    parser.add_argument("--method", required=True, help="the row's method name (how the pseudo labels were made)")
    parser.add_argument("--out", type=Path, required=True, help="results file the row is added to")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.pseudo_quality", *(argv if argv is not None else sys.argv[1:])])
    try:
        row = quality_row(args.scene, args.gt_dir, args.method, command)
    except (ValueError, OSError) as error:
        print(f"pseudo_quality: error: {error}", file=sys.stderr)
        sys.exit(2)
    append_rows(args.out, [row])
    wrong = {name: round(100 * (c["wrong"] or 0.0), 1) for name, c in row["pseudo_per_class"].items()}
    print(
        f"{args.scene.name} {args.method}: coverage {100 * row['pseudo_coverage']:.1f} %, "
        f"accuracy {100 * row['pseudo_accuracy']:.2f} %, wrong % per class {wrong}"
    )


if __name__ == "__main__":
    main()
