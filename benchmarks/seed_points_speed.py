"""How long a scene's first run spends on its seed points: the ``irt-data`` parse with the triangulation, against the
same parse reading the cache it wrote.

The scene is copied without its caches (``sparse/``, the pseudo labels) into a temporary folder, parsed twice in
this process (imports already paid), and the difference is the triangulation's time (pycolmap's SIFT, matching and
triangulation on every core this process may use, ``TriangulationOptions.num_threads = -1``). The row goes to
``--out`` (a JSON list, appended to): scene, seconds, points, cores, the CPU's name, date, and the triangulation's
own steps (``steps_s``: pycolmap's SIFT extraction, the matching of the pairs (the options' matcher), the
triangulation, reading its points back).

    python benchmarks/seed_points_speed.py --scene ../shared/data/townA --out benchmarks/results/seed_points.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import git_commit  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402

CACHES = ("sparse", "train/pseudo", "train/boundary", "train/confidence")
"""Folders of a scene that hold what semsplat made from it (left out of the copy)."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def copy_without_caches(scene: Path, folder: Path) -> Path:
    """A copy of ``scene`` under ``folder`` without what semsplat made from it (:data:`CACHES`): as on its first run
    (the scene itself is never written)."""
    copy = folder / scene.name
    shutil.copytree(scene, copy)
    for cache in CACHES:
        shutil.rmtree(copy / cache, ignore_errors=True)
    return copy


def parse_seconds(scene: Path) -> float:
    """Seconds of one ``irt-data`` parse of the training split (seed points included)."""
    from semsplat_ns.data.irt_dataparser import IRTDataParserConfig

    started = time.perf_counter()
    IRTDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    return time.perf_counter() - started


def measure(scene: Path) -> dict:
    """The row of one scene (see the module's docstring)."""
    import pycolmap

    import semsplat_ns.data.triangulation as triangulation
    from benchmarks.step_trace import PhaseClock

    clock = PhaseClock()  # the triangulation's steps, timed where semsplat calls them
    clock.wrap(triangulation, "_extract_features", "extract_features")
    clock.wrap(triangulation, "_match_pairs", "match_pairs")
    clock.wrap(pycolmap, "triangulate_points", "triangulate_points")
    clock.wrap(triangulation, "_collect", "read_points")
    try:
        row = _measure(scene)
    finally:
        clock.restore()
    clock.end_step()
    row["steps_s"] = {name: values[0] / 1000 for name, values in clock.per_step.items()}
    options = triangulation.TriangulationOptions()
    row.update(matcher=triangulation.resolve_matcher(options.matcher), refinements=options.refinements)
    return row


def _measure(scene: Path) -> dict:
    """The row's parse times and points, from a copy of ``scene`` without its caches."""
    with tempfile.TemporaryDirectory() as folder:
        copy = copy_without_caches(scene, Path(folder))
        first = parse_seconds(copy)
        cached = parse_seconds(copy)
        from semsplat_ns.data.points import read_points_ply

        points = len(read_points_ply(copy / "sparse" / "points3D.ply").xyz)
    return dict(
        scene=scene.name,
        seed_points_s=first - cached,
        parse_s=first,
        cached_parse_s=cached,
        n_points=points,
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        cpu=cpu_name(),
        date=datetime.date.today().isoformat(),
        commit=git_commit(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    for scene in args.scene:
        row = measure(scene)
        print(row, flush=True)
        rows.append(row)
        write_json_atomic(args.out, rows, indent=1)


if __name__ == "__main__":
    main()
