"""What each step of a scene's triangulation costs, and what the matcher and the refinement rounds change.

The scene is copied without its caches; SIFT features are extracted once (pycolmap, every core), then each matcher
(:data:`semsplat_ns.data.triangulation.MATCHERS`) fills a copy of the feature database, and each (matcher,
refinements) variant is triangulated from it and read back as semsplat does. Per variant: seconds of each step,
points, mean reprojection error, observations, and how far its points lie from the reference variant's (pycolmap's
matcher with COLMAP's 5 refinement rounds, the recipe before 2026-11-27). One JSON object goes to ``--out``.

    python benchmarks/triangulation_variants.py --scene ../shared/data/townA \\
        --out benchmarks/results/triangulation_variants.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import device_name, git_commit  # noqa: E402
from benchmarks.seed_points_speed import copy_without_caches, cpu_name  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402
from semsplat_ns.data.triangulation import Matcher  # noqa: E402

REFERENCE = ("colmap", 5)
"""The variant the others are compared with: pycolmap's matcher, COLMAP's default refinement rounds."""


def scene_cameras(scene: Path):
    """(image paths, Ks [N, 3, 3], c2ws [N, 4, 4]) of the training views, as the irt-data parser triangulates them."""
    import semsplat_ns.data.points as points
    from semsplat_ns.data.irt_dataparser import IRTDataParserConfig

    captured = {}

    class Captured(Exception):
        pass

    def capture(image_paths, Ks, c2ws_opencv, options=None):
        captured.update(image_paths=[Path(p) for p in image_paths], Ks=Ks, c2ws=c2ws_opencv)
        raise Captured

    original = points.triangulate
    points.triangulate = capture
    try:
        IRTDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    except Captured:
        pass
    finally:
        points.triangulate = original
    return captured["image_paths"], captured["Ks"], captured["c2ws"]


def nearest_distances(xyz: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance from each point [P, 3] to its nearest reference point [R, 3], [P]."""
    reference_t = torch.from_numpy(reference).double()
    return torch.cat(
        [torch.cdist(chunk, reference_t).min(dim=1).values for chunk in torch.from_numpy(xyz).double().split(2048)]
    ).numpy()


def measure(scene: Path, refinements: list[int]) -> dict:
    """The scene's row (see the module's docstring)."""
    import pycolmap

    import semsplat_ns.data.triangulation as triangulation
    from semsplat_ns.console import progress_bar

    pycolmap.logging.minloglevel = 2
    row: dict = dict(scene=scene.name, cores=len(os.sched_getaffinity(0)), cpu=cpu_name(), device=device_name())
    with tempfile.TemporaryDirectory() as folder:
        copy = copy_without_caches(scene, Path(folder))
        image_paths, Ks, c2ws = scene_cameras(copy)
        Ks, c2ws = triangulation._check_inputs(image_paths, Ks, c2ws)
        options = triangulation.TriangulationOptions()
        pairs = triangulation.select_image_pairs(c2ws, options.num_neighbors)
        work = Path(folder) / "work"
        work.mkdir()
        steps: dict = {}
        variants = []
        with progress_bar() as progress:
            names = triangulation._link_images(image_paths, work / "images")
            started = time.perf_counter()
            triangulation._extract_features(
                work / "features.db", work / "images", names, image_paths, Ks, options, work, progress
            )
            steps["extract_features"] = time.perf_counter() - started
            for matcher in triangulation.MATCHERS:
                database = work / f"{matcher}.db"
                shutil.copy(work / "features.db", database)
                matcher_options = triangulation.TriangulationOptions(matcher=cast(Matcher, matcher))
                if matcher == "torch" and torch.cuda.is_available():  # CUDA's start-up is not the matcher's time
                    torch.ones(8, 8, device="cuda").matmul(torch.ones(8, 8, device="cuda")).sum().item()
                started = time.perf_counter()
                triangulation._match_pairs(database, work, names, pairs, Ks, c2ws, matcher_options, copy, progress)
                steps[f"match_{matcher}"] = time.perf_counter() - started
        for matcher in triangulation.MATCHERS:
            for rounds in refinements:
                variants.append(triangulate(work, f"{matcher}.db", names, c2ws, matcher, rounds))
    reference = next(v for v in variants if (v["matcher"], v["refinements"]) == REFERENCE)
    for variant in variants:
        distances = nearest_distances(variant.pop("xyz"), reference["xyz_reference"])
        variant["nearest_reference_point_median"] = float(np.median(distances))
        variant["nearest_reference_point_p90"] = float(np.quantile(distances, 0.9))
    for variant in variants:
        variant.pop("xyz_reference", None)
    row.update(
        pairs=len(pairs),
        views=len(image_paths),
        steps_s=steps,
        variants=variants,
        date=datetime.date.today().isoformat(),
        commit=git_commit(),
    )
    return row


def triangulate(work: Path, database: str, names: list[str], c2ws: np.ndarray, matcher: str, rounds: int) -> dict:
    """One variant: triangulated from ``database`` with ``rounds`` refinement rounds, read back as semsplat does."""
    import semsplat_ns.data.triangulation as triangulation

    options = triangulation.TriangulationOptions(matcher=cast(Matcher, matcher), refinements=rounds)
    variant_work = work / f"variant_{matcher}_{rounds}"  # its own sparse/ output, the shared images linked in
    variant_work.mkdir()
    (variant_work / "images").symlink_to(work / "images", target_is_directory=True)
    started = time.perf_counter()
    reconstruction = triangulation._triangulate_matches(work / database, variant_work, names, c2ws, options, work)
    triangulate_s = time.perf_counter() - started
    started = time.perf_counter()
    result = triangulation._collect(reconstruction, variant_work / "points", names, options)
    collect_s = time.perf_counter() - started
    variant = dict(
        matcher=matcher,
        refinements=rounds,
        triangulate_s=triangulate_s,
        collect_s=collect_s,
        points=result.num_points,
        mean_error_px=float(result.errors.mean()),
        observations=int(len(result.obs_point)),
        xyz=result.xyz,
    )
    if (matcher, rounds) == REFERENCE:
        variant["xyz_reference"] = result.xyz
    print({k: v for k, v in variant.items() if not k.startswith("xyz")}, flush=True)
    return variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--refinements", type=int, nargs="+", default=[5, 1, 0])
    args = parser.parse_args()
    row = measure(args.scene, args.refinements)
    row["command"] = "python benchmarks/triangulation_variants.py --scene <scene> --out <json>"
    write_json_atomic(args.out, row, indent=1)
    print({k: v for k, v in row.items() if k != "variants"})


if __name__ == "__main__":
    main()
