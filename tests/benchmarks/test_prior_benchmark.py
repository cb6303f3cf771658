"""benchmarks/prior.py on a tiny town (CPU): one "prior" row with stage times, the scene left untouched."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import ROW_KEYS  # noqa: E402
from benchmarks.prior import PriorBenchmarkConfig, main  # noqa: E402
from semsplat_ns.pseudo.prior import PriorSettings  # noqa: E402
from semsplat_ns.pseudo.unet import UnetRecipe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


def _digest(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_prior_benchmark_writes_one_row_and_leaves_the_scene_alone(demo_town, tmp_path):
    # 48 pixels: no points triangulate, so the prior learns from the labelled views alone (fast); the
    # benchmark's plumbing is the same with reprojected labels (tests/pseudo covers those).
    scene = demo_town(n_views=16, resolution=48, n_labelled=3, seed=0)
    before = _digest(scene)
    out = tmp_path / "results" / "prior.json"
    work = tmp_path / "work"
    # Threshold 0: every pixel takes the prior's class, so the accuracy against --report is defined.
    prior = PriorSettings(unet=UnetRecipe(steps=30, crop=32, width=4, levels=2), threshold=0.0)
    config = PriorBenchmarkConfig(scene=scene, out=out, prior=prior, report=scene / "gt_all", work=work, warmup_views=1)
    row = main(config)

    assert list(row)[: len(ROW_KEYS)] == list(ROW_KEYS)
    assert row["method"] == "prior" and row["scene"] == scene.name and row["steps"] == 30
    for key in ("miou", "miou_present", "acc"):
        assert 0.0 <= row[key] <= 1.0
    assert row["test_ms_per_view"] > 0 and row["train_s"] > 0 and row["device"] == "cpu"
    assert row["timing_warmup_views"] == 1 and row["test_ms_per_view_p95"] >= row["test_ms_per_view"]
    stages = row["stage_s"]
    assert all(stages[k] >= 0 for k in ("depth", "reprojection", "prior_training", "prediction", "total"))
    assert row["train_s"] == stages["prior_training"]
    pseudo = row["pseudo_labels"]
    assert pseudo["coverage"] == 1.0 and pseudo["views"] == 11 and 0.0 <= pseudo["accuracy"] <= 1.0
    assert row["prior"]["steps"] == 30 and row["prior"]["crop_used"] == 32
    assert json.loads(out.read_text()) == [row]
    assert _digest(scene) == before  # the scene itself is never written
    assert (work / scene.name / "train" / "confidence").is_dir() and (work / "prior.pt").is_file()

    # The saved network, scored again with --weights (nothing trained), gives the same figures under its own name.
    again = main(
        PriorBenchmarkConfig(
            scene=scene, out=out, prior=prior, weights=work / "prior.pt", method="prior-saved", warmup_views=1
        )
    )
    assert again["method"] == "prior-saved" and again["train_s"] is None and "stage_s" not in again
    assert (again["miou"], again["acc"], again["per_class_iou"]) == (row["miou"], row["acc"], row["per_class_iou"])
    assert [r["method"] for r in json.loads(out.read_text())] == ["prior", "prior-saved"]


def test_prior_benchmark_refuses_missing_weights(demo_town, tmp_path):
    scene = demo_town(n_views=8, resolution=32, n_labelled=2, seed=1)
    config = PriorBenchmarkConfig(scene=scene, out=tmp_path / "prior.json", weights=tmp_path / "none.pt")
    with pytest.raises(SystemExit, match="none.pt: no such file"):
        main(config)
