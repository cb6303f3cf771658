"""``semsplat-batch``: pseudo labels → training → evaluation → prediction of many scenes on a Dask cluster, with a
Table-II-shaped summary (see :mod:`semsplat_ns.batch`).

    semsplat-batch townA townB townC --output-dir runs/batch
    semsplat-batch townA townB --output-dir runs/fast --preset semsplat-fast --scheduler tcp://head:8786
    semsplat-batch townA --output-dir runs/abl -- --pipeline.model.agg3d-loss-weight 0

Flags after ``--`` go to ``ns-train`` unchanged.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import tyro
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from semsplat_ns.console import CONSOLE
from semsplat_ns.errors import UserInputError, exit_on_user_error

PROG = "semsplat-batch"

FAILED_EXIT_CODE = 1
"""Exit status when a scene failed (bad arguments exit with 2, as every semsplat command)."""


@dataclass
class BatchArgs:
    """Run pseudo labels, training, evaluation and prediction of every SCENE on a Dask cluster (one worker per
    GPU by default), each scene in its own folder under --output-dir, with a Table-II-shaped summary
    (summary.json, summary.md, summary.png). A re-run skips the scenes already recorded. Flags after `--` are
    passed to ns-train, e.g. `semsplat-batch townA townB --output-dir runs -- --pipeline.model.max-gaussians
    200000`."""

    scenes: Annotated[Tuple[Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="SCENE [SCENE ...]")]
    """IRT scene folders, or bare names looked up in $SEMSPLAT_DATA/<name>, then ./data/<name> (as ns-train --data).
    With --scheduler they must be at the same path on every worker (a shared file system)."""
    output_dir: Path
    """Each scene's outputs go to <output-dir>/<scene>/ (result.json, logs/, train/, eval/, predict/).
    The summary goes to <output-dir>/summary.{json,md,png}. With --scheduler it must be shared with the workers."""
    preset: Literal["semsplat", "semsplat-fast"] = "semsplat"
    """The ns-train method to train; it must be registered in this environment (checked before anything runs)."""
    pseudo_backend: Literal["reproject", "prior", "none"] = "prior"
    """semsplat-pseudo-labels --backend, run on each scene before training (--overwrite), as a timed stage of its
    own. It writes into SCENE/train/pseudo, replacing what is there; prior gives what ns-train semsplat would make
    itself. none: no pseudo-label stage; training keeps what SCENE/train/pseudo holds, and makes the prior's where
    it holds none (with --preset semsplat-fast, its own prior: smaller crops, labelled-only first steps)."""
    max_num_iterations: Optional[int] = None
    """ns-train --max-num-iterations; default: the preset's."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto: a local worker per visible GPU, or CPU workers when there is none.
    A worker without a GPU trains with --machine.device-type cpu. cuda: GPUs required. cpu: CPU workers only."""
    cpu_workers: Optional[int] = None
    """Local CPU workers when they train without a GPU (default 1: a training uses every core it is given)."""
    scenes_per_gpu: int = 1
    """Scenes trained at once on each GPU of a local cluster (that many workers per GPU). A training step leaves the
    GPU idle much of the time (it waits on the host), so several trainings share a GPU well; start CUDA MPS
    (nvidia-cuda-mps-control -d) for the best sharing. Each scene's own times are then not those of a run alone
    (result.json records the GPU each stage ran on, and when)."""
    scheduler: Optional[str] = None
    """Join the existing Dask cluster of this scheduler (tcp://host:8786) instead of starting a local one."""
    threads_per_scene: Optional[int] = None
    """CPU threads of each stage process; default: each host's cores shared evenly among its workers."""
    retries: int = 1
    """Times a failed scene is run again before it is reported as failed."""
    redo: bool = False
    """Run scenes that already have a recorded result again (default: skip them)."""
    stage_timeout_s: Optional[float] = None
    """Kill a stage that runs longer than this many seconds (its scene fails); default: no limit."""
    dashboard_address: str = ":8787"
    """Where a local cluster serves the Dask dashboard (host:port; :0 picks a free port). The dashboard needs bokeh>=3.1
    where the scheduler runs; the console line says whether it is served."""


def cluster_options(args: BatchArgs):
    """The cluster the flags ask for (a :class:`semsplat_ns.batch.cluster.ClusterOptions`)."""
    from semsplat_ns.batch.cluster import ClusterOptions

    return ClusterOptions(
        scheduler=args.scheduler,
        device=args.device,
        cpu_workers=args.cpu_workers,
        scenes_per_gpu=args.scenes_per_gpu,
        dashboard_address=args.dashboard_address,
    )


def split_method_args(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Splits the command line at the first ``--``: (our flags, ns-train's flags)."""
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def print_report(report) -> None:
    """The final table on the console: metrics and stage times per scene, then the failures."""
    from semsplat_ns.batch.scene_job import STAGE_LABELS, STAGES

    table = Table(title="semsplat-batch")
    for column in ("scene", "mIoU %", "mIoU present %", "acc %", "ms / view", *(STAGE_LABELS[s] for s in STAGES)):
        table.add_column(column, justify="left" if column == "scene" else "right")
    summary = report.summary
    for row in summary["rows"]:
        times = [
            "skipped" if row["stage_s"][s] is None else f"{row['stage_s'][s]:.0f} s" for s in STAGES
        ]  # wall seconds
        table.add_row(
            escape(row["scene"]) + (" (recorded)" if row["recorded_earlier"] else ""),
            f"{100 * row['miou']:.2f}",
            f"{100 * row['miou_present']:.2f}",
            f"{100 * row['acc']:.2f}",
            f"{row['test_ms_per_view']:.2f}",
            *times,
        )
    mean = summary["mean"]
    if mean is not None:
        table.add_row(
            f"mean ({mean['scenes']})",
            f"{100 * mean['miou']:.2f}",
            f"{100 * mean['miou_present']:.2f}",
            f"{100 * mean['acc']:.2f}",
            f"{mean['test_ms_per_view']:.2f}",
            *("—" if mean["stage_s"][s] is None else f"{mean['stage_s'][s]:.0f} s" for s in STAGES),
            style="bold",
        )
    CONSOLE.print(table)
    for failure in summary["failures"]:
        CONSOLE.print(f"[red]failed[/red] {escape(failure['scene'])}: {escape(str(failure['error']))}")
    files = ", ".join(str(path) for path in report.files.values())
    CONSOLE.print(f"Summary: {files}")


def run(args: BatchArgs, method_args: Sequence[str] = (), command: Optional[str] = None) -> int:
    """Checks the arguments, starts or joins the cluster, runs the batch and prints the report.

    Args:
        args: The parsed flags.
        method_args: Flags for ns-train (those after ``--``).
        command: The command line, recorded in the summary.

    Returns:
        The exit status: 0 when every scene completed (now or earlier), :data:`FAILED_EXIT_CODE` otherwise.
    """
    if not args.scenes:
        raise UserInputError("no SCENE given; pass one or more IRT scene folders (or names)")
    if args.retries < 0:
        raise UserInputError(f"--retries {args.retries}: must be 0 or more")
    if args.max_num_iterations is not None and args.max_num_iterations < 1:
        raise UserInputError(f"--max-num-iterations {args.max_num_iterations}: must be at least 1")
    if args.threads_per_scene is not None and args.threads_per_scene < 1:
        raise UserInputError(f"--threads-per-scene {args.threads_per_scene}: must be at least 1")
    from semsplat_ns.batch.cluster import dashboard_line, start_cluster
    from semsplat_ns.batch.presets import check_preset
    from semsplat_ns.batch.runner import BatchSettings, run_batch

    check_preset(args.preset)
    handle = start_cluster(cluster_options(args))
    try:
        CONSOLE.print(handle.description)
        CONSOLE.print(dashboard_line(handle.client))
        report = run_batch(
            BatchSettings(
                scenes=list(args.scenes),
                output_dir=args.output_dir,
                preset=args.preset,
                pseudo_backend=args.pseudo_backend,
                max_num_iterations=args.max_num_iterations,
                device=args.device,
                method_args=list(method_args),
                threads_per_scene=args.threads_per_scene,
                retries=args.retries,
                redo=args.redo,
                stage_timeout_s=args.stage_timeout_s,
                command=command,
            ),
            handle.client,
            cluster_description=handle.description,
        )
    finally:
        handle.close()
    print_report(report)
    return FAILED_EXIT_CODE if report.failed else 0


def entrypoint() -> None:
    """Console entry point ``semsplat-batch``."""
    ours, method_args = split_method_args(sys.argv[1:])
    args = tyro.cli(BatchArgs, args=ours, prog=PROG)
    with exit_on_user_error(PROG):
        status = run(args, method_args, shlex.join([PROG, *sys.argv[1:]]))
    sys.exit(status)


if __name__ == "__main__":
    entrypoint()
