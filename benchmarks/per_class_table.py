"""Issue #12's per-class table: the IoU of each class under several result rows, beside the class's share of the
test pixels, with the classes that miss the per-class target marked.

The target: no class with at least ``--min-share`` of the test pixels may lie more than ``--margin`` IoU points below
the better of the ``--against`` rows (e.g. ``semsplat-baseline`` and ``prior``). Shares come from the scene's test
labels (``test/rgb``, read as the parser reads them). Rows are chosen from ``benchmarks/results/*.json`` as
``FILE:METHOD`` or ``FILE:METHOD@COMMIT`` (the first row of that method, of that commit when given):

    python benchmarks/per_class_table.py --scene-dir ../shared/data/townA \\
        --row semsplat_alone_h200.json:semsplat --row semsplat_prior.json:semsplat-baseline@2bab260 \\
        --row prior.json:prior --row unet.json:unet@d1ec57f --check semsplat --against semsplat-baseline,prior

prints a Markdown table (IoU in %, ``—`` where a class has no test pixel and no prediction) and, for the ``--check``
row, the classes that miss the target; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semsplat_ns.data.classes import read_scene_classes  # noqa: E402
from semsplat_ns.data.irt_io import IGNORE_ID, find_split_stems, read_label  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


@dataclass
class ResultRow:
    """One (scene, method) row's per-class IoU and what names it in the table."""

    name: str
    """The row's column heading: ``method`` or ``method@commit``."""
    method: str
    per_class_iou: Dict[str, Optional[float]]
    """Class name -> IoU in [0, 1] (None: no test pixel and no prediction)."""


def find_row(results_dir: Path, spec: str, scene: str) -> ResultRow:
    """The row that ``spec`` (``FILE:METHOD`` or ``FILE:METHOD@COMMIT``) names for ``scene``.

    Args:
        results_dir: Folder of the results files.
        spec: The file (relative to ``results_dir``), the method and optionally the commit.
        scene: The scene's name (the rows' ``scene``).

    Raises:
        ValueError: The spec is malformed, or no row with a per-class IoU matches; the message says which.
    """
    file_name, sep, selector = spec.partition(":")
    if not sep or not selector:
        raise ValueError(f"row {spec!r}: expected FILE:METHOD or FILE:METHOD@COMMIT")
    method, _, commit = selector.partition("@")
    path = results_dir / file_name
    data = json.loads(path.read_text())
    rows = data if isinstance(data, list) else data.get("rows", [])
    for row in rows:
        if not isinstance(row, dict) or row.get("scene") != scene or row.get("method") != method:
            continue
        if commit and not str(row.get("commit", "")).startswith(commit):
            continue
        if "per_class_iou" not in row:
            continue
        return ResultRow(f"{method}@{row.get('commit', '?')}", method, row["per_class_iou"])
    raise ValueError(
        f"{path}: no row of scene {scene!r}, method {method!r}{' at ' + commit if commit else ''} with a per-class IoU"
    )


def label_shares(scene_dir: Path) -> Dict[str, float]:
    """Each class's share of the labelled test pixels (``test/rgb``) of an IRT scene.

    Args:
        scene_dir: The scene folder.
    """
    classes = read_scene_classes(scene_dir)
    counts = np.zeros(len(classes.names), dtype=np.int64)  # [C]
    for path in find_split_stems(scene_dir / "test").label_paths:
        if path is None:
            continue
        label = read_label(path, classes.colors, len(classes.names))  # [H, W]
        ids = label[label != IGNORE_ID]
        counts += np.bincount(ids.ravel(), minlength=len(classes.names))
    total = max(int(counts.sum()), 1)
    return {name: int(count) / total for name, count in zip(classes.names, counts)}


def missed_classes(
    checked: ResultRow, against: Sequence[ResultRow], shares: Dict[str, float], min_share: float, margin: float
) -> List[str]:
    """Classes of at least ``min_share`` of the test pixels on which ``checked`` lies more than ``margin`` IoU
    points below the best of the ``against`` rows (classes the others have no IoU for are not judged)."""
    missed = []
    for name, iou in checked.per_class_iou.items():
        references = [row.per_class_iou.get(name) for row in against]
        references = [value for value in references if value is not None]
        if shares.get(name, 0.0) < min_share or not references:
            continue
        if 100 * (iou or 0.0) < 100 * max(references) - margin:
            missed.append(name)
    return missed


def markdown_table(rows: Sequence[ResultRow], shares: Dict[str, float], missed: Sequence[str] = ()) -> str:
    """The table: a line per class (in the shares' order), its share of the test pixels and each row's IoU; the
    checked row's entries for ``missed`` classes are starred."""
    lines = [
        "| class | test pixels % | " + " | ".join(row.name for row in rows) + " |",
        "|---|---|" + "---|" * len(rows),
    ]
    for name, share in shares.items():
        cells = []
        for index, row in enumerate(rows):
            iou = row.per_class_iou.get(name)
            cell = "—" if iou is None else f"{100 * iou:.1f}"
            cells.append(f"**{cell}** ✗" if index == 0 and name in missed else cell)
        lines.append(f"| {name} | {100 * share:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene-dir", type=Path, required=True, help="the scene (its test labels give the shares)")
    parser.add_argument("--scene", default=None, help="the rows' scene name (default: the folder's name)")
    parser.add_argument("--row", action="append", required=True, help="FILE:METHOD[@COMMIT], one per column")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--check", default=None, help="method of the row judged (default: the first row's)")
    parser.add_argument("--against", default="", help="comma-separated methods of the reference rows")
    parser.add_argument("--min-share", type=float, default=0.001, help="classes below this share are not judged")
    parser.add_argument("--margin", type=float, default=3.0, help="IoU points allowed below the best reference")
    args = parser.parse_args(argv)
    scene = args.scene or args.scene_dir.name
    try:
        rows = [find_row(args.results_dir, spec, scene) for spec in args.row]
    except (OSError, ValueError) as error:
        parser.error(str(error))
    shares = label_shares(args.scene_dir)
    checked_method = args.check or rows[0].method
    checked = next((row for row in rows if row.method == checked_method), None)
    if checked is None:
        parser.error(f"--check {checked_method}: no such row")
    against = [row for row in rows if row.method in args.against.split(",")]
    missed = missed_classes(checked, against, shares, args.min_share, args.margin) if against else []
    ordered = [checked] + [row for row in rows if row is not checked]
    print(markdown_table(ordered, shares, missed))
    if against:
        judged = ", ".join(row.name for row in against)
        verdict = ", ".join(missed) if missed else "none"
        print(
            f"\n{checked.name}: classes of ≥ {100 * args.min_share:g} % of the test pixels more than "
            f"{args.margin:g} points under the better of {judged}: {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
