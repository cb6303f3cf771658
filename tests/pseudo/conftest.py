"""Fixtures of the pseudo-label tests: a tiny town with the exact z-depth of every training view."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

from semsplat_ns.data import irt_io
from semsplat_ns.synthetic.render import render_view
from semsplat_ns.synthetic.town import build_town

RES = 48
VIEWS = 16
SEED = 0


@pytest.fixture(scope="session")
def town_with_depth(tmp_path_factory, demo_town) -> Tuple[Path, Path]:
    """A tiny generated scene (16 views of 48x48, 3 labelled), plus exact z-depth ``<stem>.npy`` of every training
    view in a folder beside it (inf where the sky is hit). Shared: tests copy the scene before writing into it."""
    root = tmp_path_factory.mktemp("pseudo")
    scene = demo_town(n_views=VIEWS, resolution=RES, n_labelled=3, seed=SEED, writable=True)
    town = build_town(SEED)
    depth_dir = root / "depth"
    depth_dir.mkdir()
    files = irt_io.find_split_stems(scene / "train")
    for stem, k_path, pose_path in zip(files.stems, files.intrinsics_paths, files.pose_paths):
        _, _, depth = render_view(town, irt_io.read_intrinsics(k_path), irt_io.read_pose(pose_path), RES, RES, 1)
        np.save(depth_dir / f"{stem}.npy", depth.astype(np.float32))
    return scene, depth_dir
