"""``semsplat-pseudo-labels``: pseudo labels and boundary masks B for the unlabelled training views of an IRT
scene or a capture (see :mod:`semsplat_ns.pseudo.pipeline`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from rich.table import Table

from semsplat_ns.console import CONSOLE
from semsplat_ns.data.irt_io import resolve_scene_dir
from semsplat_ns.errors import exit_on_user_error
from semsplat_ns.pseudo.pipeline import PseudoLabelArgs, run
from semsplat_ns.pseudo.store import meta_path, store_root

PROG = "semsplat-pseudo-labels"


def _print_summary(record: dict, meta_path: Path) -> None:
    counts = record["counts"]
    table = Table(title=f"Pseudo labels ({record['backend']}, boundary {record['boundary']})")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("training views (labelled)", f"{counts['train_views']} ({counts['labelled_views']})")
    table.add_row("views written / skipped", f"{counts['written']} / {counts['skipped']}")
    table.add_row("pseudo-label coverage", f"{100 * record['coverage']:.1f} %")
    table.add_row("boundary share (B)", f"{100 * record['boundary_share']:.1f} %")
    if "sam2_masks_kept" in counts:
        table.add_row("SAM2 masks kept / generated", f"{counts['sam2_masks_kept']} / {counts['sam2_masks_generated']}")
        table.add_row("SAM2 frames tracked", str(counts["sam2_frames_propagated"]))
    if "report" in record:
        report = record["report"]

        def percent(value: Optional[float]) -> str:
            return "n/a" if value is None else f"{100 * value:.2f} %"

        table.add_row("accuracy where set (vs --report)", percent(report["accuracy"]))
        table.add_row("coverage (vs --report)", percent(report["coverage"]))
        table.add_row(
            "accuracy / coverage inside B",
            f"{percent(report['accuracy_in_boundary'])} / {percent(report['coverage_in_boundary'])}",
        )
    for step, seconds in record["times_s"].items():
        table.add_row(f"time: {step}", f"{seconds:.1f} s")
    CONSOLE.print(table)
    CONSOLE.print(f"record: {meta_path}")


def main() -> None:
    """Console entry point ``semsplat-pseudo-labels``."""
    import tyro

    # sam2 draws tqdm bars of its own; the rich bars above already show its progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = tyro.cli(PseudoLabelArgs, prog=PROG)
    with exit_on_user_error(PROG):
        # --data takes a bare scene name as ns-train does (or a capture's .json file).
        data = Path(args.data).expanduser()
        is_json = data.is_file() and data.suffix.lower() == ".json"
        args.data = data if is_json else resolve_scene_dir(data)
        record = run(args)
        # train/ of an IRT scene, semsplat_pseudo/ of a capture (a .json names its folder's capture).
        _print_summary(record, meta_path(store_root(args.data.parent if is_json else args.data)))


if __name__ == "__main__":
    main()
