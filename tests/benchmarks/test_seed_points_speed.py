"""benchmarks/seed_points_speed.py: the first parse triangulates (on a copy: the scene itself is left as it was), the
second reads the cache, and the row says so."""

from __future__ import annotations

import json
import sys

import pycolmap
import pytest

import semsplat_ns.data.triangulation as triangulation
from benchmarks import seed_points_speed
from semsplat_ns.data.points import read_points_ply

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_first_parse_triangulates_on_a_copy_and_the_row_is_written(demo_town, tmp_path, monkeypatch):
    scene = demo_town(n_views=10, resolution=48, n_labelled=2, seed=5, writable=True)
    before = sorted(str(p.relative_to(scene)) for p in scene.rglob("*"))
    out = tmp_path / "seed_points.json"
    out.write_text(json.dumps([{"scene": "earlier"}]))  # rows already there are kept
    monkeypatch.setattr(sys, "argv", ["seed_points_speed.py", "--scene", str(scene), "--out", str(out)])
    seed_points_speed.main()

    assert sorted(str(p.relative_to(scene)) for p in scene.rglob("*")) == before  # nothing written into the scene
    rows = json.loads(out.read_text())
    assert [row["scene"] for row in rows] == ["earlier", scene.name]
    row = rows[1]
    assert row["parse_s"] > row["cached_parse_s"] > 0  # the second parse read the cache
    assert row["seed_points_s"] == pytest.approx(row["parse_s"] - row["cached_parse_s"])
    assert row["cores"] >= 1 and row["cpu"]
    # the triangulation's own steps, each timed once, within the first parse
    assert set(row["steps_s"]) == {"extract_features", "match_pairs", "triangulate_points", "read_points"}
    assert row["matcher"] == triangulation.resolve_matcher("auto") and row["refinements"] == 1
    assert all(seconds > 0 for seconds in row["steps_s"].values())
    assert sum(row["steps_s"].values()) <= row["parse_s"]
    assert triangulation._extract_features.__module__ == "semsplat_ns.data.triangulation"  # unwrapped again
    assert not hasattr(triangulation._collect, "__wrapped__")
    assert not hasattr(pycolmap.triangulate_points, "__wrapped__") and "timed" not in repr(pycolmap.triangulate_points)


def test_the_points_counted_are_the_caches(demo_town, tmp_path, monkeypatch):
    scene = demo_town(n_views=10, resolution=48, n_labelled=2, seed=5)
    counted = []
    real_read = read_points_ply

    def reading(path):
        points = real_read(path)
        counted.append(len(points.xyz))
        return points

    monkeypatch.setattr("semsplat_ns.data.points.read_points_ply", reading)
    row = seed_points_speed.measure(scene)
    assert counted and row["n_points"] == counted[-1]
