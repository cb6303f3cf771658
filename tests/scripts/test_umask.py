"""Everything semsplat writes gets the modes the umask gives a plain ``open()``/``mkdir()``: 0644/0755 under
umask 022, 0640/0750 under 027 (see semsplat_ns/atomic.py), as nerfstudio's own files do.

Runs the commands as a user would (scene names given bare, through $SEMSPLAT_DATA), in-process so the
umask set here is the one they run under.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

MODES = {0o022: (0o644, 0o755), 0o027: (0o640, 0o750)}
"""umask -> (file mode, folder mode) expected."""


@pytest.fixture(params=sorted(MODES), ids=lambda mask: f"umask{mask:03o}")
def umask(request) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _wrong_modes(paths: List[Path], mask: int) -> Dict[str, str]:
    file_mode, dir_mode = MODES[mask]
    wrong = {}
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = dir_mode if path.is_dir() else file_mode
        if mode != expected:
            wrong[str(path)] = f"{mode:o} (expected {expected:o})"
    return wrong


def _tree(root: Path) -> List[Path]:
    return [root, *sorted(root.rglob("*"))]


def test_make_scene_pseudo_labels_and_points_cache(umask, tmp_path, monkeypatch):
    from semsplat_ns.scripts import make_scene, pseudo_labels

    scene = tmp_path / "data" / "town"
    # 20 views of 96^2: enough triangulated points for reprojection (see tests/pseudo).
    make_scene.entrypoint([str(scene), "--views", "20", "--res", "96", "--labelled", "3", "--seed", "2"])
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("SEMSPLAT_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", ["semsplat-pseudo-labels", "--data", "town", "--backend", "reproject"])
    pseudo_labels.main()
    written = [scene / "train" / "pseudo" / "meta.json", scene / "sparse" / "points3D.ply"]
    assert all(path.is_file() for path in written)
    assert len(list((scene / "train" / "boundary").glob("*.png"))) == 15  # 18 train views, 3 labelled
    paths = [tmp_path / "data", *_tree(scene)]  # the scene, its pseudo labels, masks and points cache
    assert not [p for p in paths if p.name.endswith(".tmp")]
    assert _wrong_modes(paths, umask) == {}


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory, demo_town):
    """A semsplat run trained for one CPU step (under the session's umask), on a scene in $SEMSPLAT_DATA."""
    from tests.cpu_training import cpu_trainer_config, train

    root = tmp_path_factory.mktemp("umask_run")
    scene = demo_town(n_views=12, resolution=32, n_labelled=2, seed=5, writable=True).rename(root / "town12")
    config = cpu_trainer_config(scene, root / "outputs", steps=1, timestamp="run")
    # The points cache is checked above; random initialisation saves the triangulation here.
    datamanager: Any = config.pipeline.datamanager  # typed as nerfstudio's base config, which has no dataparser
    datamanager.dataparser.load_points = False
    trainer = train(config, steps=1)
    return dict(root=root, config=config.get_base_dir() / "config.yml", pipeline=trainer.pipeline)


def test_eval_and_export_outputs(one_step_run, umask, tmp_path, monkeypatch):
    from semsplat_ns.scripts.eval import EvalArgs
    from semsplat_ns.scripts.eval import run as run_eval
    from semsplat_ns.scripts.export import export_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMSPLAT_DATA", str(one_step_run["root"]))
    out = tmp_path / "results"
    result = run_eval(EvalArgs(load_config=one_step_run["config"], output_dir=out / "eval", data=Path("town12")))
    assert result["n_views"] == 1
    # What semsplat-export writes, from the trained pipeline (its eval_setup would add ~10 s per umask).
    pipeline = one_step_run["pipeline"]
    outputs = pipeline.datamanager.train_dataparser_outputs
    export_model(pipeline.model, outputs.dataparser_transform, float(outputs.dataparser_scale), out / "export")
    paths = _tree(out)
    names = {p.name for p in paths}
    assert {"metrics.json", "confusion_matrix.png", "per_class_iou.png", "predictions"} <= names
    assert {"gaussians.ply", "semantic_points.ply", "transform.json"} <= names
    assert _wrong_modes(paths, umask) == {}
