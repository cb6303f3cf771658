"""A capture whose sparse model is too small to seed splatfacto (issue #14): 0-3 points, or a missing or empty
points file, in a COLMAP model or behind a transforms.json.

Below :data:`~semsplat_ns.data.points.MIN_SEED_POINTS` (the IRT path's threshold) the ``semsplat-data`` dataparser
passes no seed points (splatfacto's random initialisation; its kNN scale initialisation fails below 4 points) and
one :class:`~semsplat_ns.data.points.FewPointsWarning` names the points file and the count. A real 5-step CPU
``ns-train semsplat`` on a COLMAP model without points trains from random points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from nerfstudio.data.utils import colmap_parsing_utils as colmap

from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig
from semsplat_ns.data.capture_sources import model_files
from semsplat_ns.data.points import (
    MIN_SEED_POINTS,
    FewPointsWarning,
    PointsFileError,
    read_points_ply,
    write_points_ply,
)
from semsplat_ns.synthetic.capture_writer import write_capture

TOWN = dict(n_views=12, resolution=32, n_labelled=2, seed=5)
"""The town of tests/data/test_capture.py: 12 frames of 32x32, two labelled."""


@pytest.fixture(scope="module")
def town(demo_town) -> Path:
    return demo_town(**TOWN)


def _keep_points(model: Path, count: int, ext: str = ".txt") -> None:
    """Rewrites a COLMAP model with its first ``count`` points only (the images' observations of the others
    dropped), as a TEXT or binary model."""
    read = colmap.read_model(str(model))
    assert read is not None, model
    cameras, images, points = read
    kept = dict(list(points.items())[:count])
    ids = np.array(list(kept), dtype=np.int64)  # [count]
    images = {
        key: image._replace(point3D_ids=np.where(np.isin(image.point3D_ids, ids), image.point3D_ids, -1))
        for key, image in images.items()
    }
    for path in model_files(model):
        path.unlink()
    colmap.write_model(cameras, images, kept, str(model), ext=ext)


def _ply(capture: Path) -> Path:
    return capture / json.loads((capture / "transforms.json").read_text())["ply_file_path"]


def _keep_ply_points(capture: Path, count: int) -> None:
    ply = _ply(capture)
    xyz, rgb, _ = read_points_ply(ply)
    write_points_ply(ply, xyz[:count], rgb[:count])


def _drop_ply(capture: Path) -> None:
    """transforms.json without ply_file_path: semsplat reads colmap/sparse/0 instead."""
    transforms = json.loads((capture / "transforms.json").read_text())
    _ply(capture).unlink()
    del transforms["ply_file_path"]
    (capture / "transforms.json").write_text(json.dumps(transforms, indent=4))


# name: (layout, how the capture is cut down, the file the warning names (relative to the capture), its count)
CASES: Dict[str, Tuple[str, Callable[[Path], object], str, int]] = {
    "colmap-2-points": ("colmap", lambda c: _keep_points(c / "sparse/0", 2), "sparse/0/points3D.txt", 2),
    "colmap-0-points-binary": (
        "colmap",
        lambda c: _keep_points(c / "sparse/0", 0, ".bin"),
        "sparse/0/points3D.bin",
        0,
    ),
    "colmap-empty-points3D": (
        "colmap",
        lambda c: (c / "sparse/0/points3D.txt").write_bytes(b""),
        "sparse/0/points3D.txt",
        0,
    ),
    "colmap-no-points3D": ("colmap", lambda c: (c / "sparse/0/points3D.txt").unlink(), "sparse/0", 0),
    "nerfstudio-ply-3-points": ("nerfstudio", lambda c: _keep_ply_points(c, 3), "sparse_pc.ply", 3),
    "nerfstudio-ply-0-points": ("nerfstudio", lambda c: _keep_ply_points(c, 0), "sparse_pc.ply", 0),
    "nerfstudio-ply-empty-file": ("nerfstudio", lambda c: _ply(c).write_bytes(b""), "sparse_pc.ply", 0),
    "nerfstudio-ply-missing": ("nerfstudio", lambda c: _ply(c).unlink(), "sparse_pc.ply", 0),
    "nerfstudio-colmap-model-1-point": (
        "nerfstudio",
        lambda c: (_drop_ply(c), _keep_points(c / "colmap/sparse/0", 1, ".bin")),
        "colmap/sparse/0/points3D.bin",
        1,
    ),
}


def _parse_train(capture: Path):
    """The train and eval outputs of ``capture``, and every warning raised while parsing it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parser = SemSplatDataParserConfig(data=capture).setup()
        train = parser.get_dataparser_outputs("train")
        evaluation = parser.get_dataparser_outputs("test")
    return train, evaluation, caught


@pytest.mark.parametrize("case", list(CASES))
def test_too_few_sparse_points_give_random_initialisation_and_one_warning(
    case: str, town: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    layout, cut, named, count = CASES[case]
    capture = write_capture(town, tmp_path / "capture", layout)  # type: ignore[arg-type]
    cut(capture)
    train, evaluation, caught = _parse_train(capture)

    assert not [key for key in train.metadata if key.startswith("points3D_")]  # splatfacto's random initialisation
    assert not [key for key in evaluation.metadata if key.startswith("points3D_")]
    few = [str(w.message) for w in caught if issubclass(w.category, FewPointsWarning)]
    assert len(few) == 1, few
    assert few[0].startswith(f"{capture / named}: "), few[0]
    assert f"holds {count} points (fewer than {MIN_SEED_POINTS}); random initialisation will be used" in few[0]
    said = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"too few sparse points to seed ({count}): splatfacto starts from random points" in said


def test_the_threshold_is_the_irt_paths(town: Path, tmp_path: Path):
    """Exactly MIN_SEED_POINTS points seed splatfacto, with no warning."""
    capture = write_capture(town, tmp_path / "capture", "colmap")
    _keep_points(capture / "sparse" / "0", MIN_SEED_POINTS)
    train, _, caught = _parse_train(capture)
    assert train.metadata["points3D_xyz"].shape == (MIN_SEED_POINTS, 3)
    assert not [w for w in caught if issubclass(w.category, FewPointsWarning)]


def test_a_ply_that_is_not_one_is_one_error_naming_it(town: Path, tmp_path: Path):
    capture = write_capture(town, tmp_path / "capture", "nerfstudio")
    _ply(capture).write_text("not a point cloud\n")
    with pytest.raises(PointsFileError, match=f"^{_ply(capture)}: not a readable PLY file"):
        _parse_train(capture)


def test_ns_train_on_a_colmap_model_without_points_trains_from_random_points(town: Path, tmp_path: Path):
    """A real ns-train (5 CPU steps on 32x32 images, no pseudo labels): before the fix nerfstudio's COLMAP reader
    stopped it on the empty points3D.bin, and 1-3 points would have reached splatfacto's kNN."""
    capture = write_capture(town, tmp_path / "capture", "colmap")
    _keep_points(capture / "sparse" / "0", 0, ".bin")
    num_random = 500
    arguments = [
        *("semsplat", "--data", str(capture), "--output-dir", str(tmp_path / "outputs"), "--timestamp", "run"),
        *("--max-num-iterations", "5", "--machine.device-type", "cpu", "--vis", "tensorboard"),
        *("--pipeline.datamanager.auto-pseudo-labels", "off", "--pipeline.model.num-random", str(num_random)),
    ]
    env = {k: v for k, v in os.environ.items() if k != "SEMSPLAT_TRACEBACK"}
    ns_train = Path(sys.executable).parent / "ns-train"
    run = subprocess.run(
        [str(ns_train), *arguments], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    said = " ".join((run.stdout + run.stderr).split())  # rich and warnings wrap long lines
    warning = (
        f"FewPointsWarning: {capture / 'sparse' / '0' / 'points3D.bin'}: the capture's sparse model holds 0 points "
        f"(fewer than {MIN_SEED_POINTS}); random initialisation will be used"
    )
    assert said.count(warning) == 1, said[-3000:]
    checkpoint = next((tmp_path / "outputs").glob("*/semsplat/run/nerfstudio_models/step-*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
    means = next(v for k, v in state.items() if k.endswith("gauss_params.means"))
    assert means.shape == (num_random, 3)  # splatfacto's random points
