"""benchmarks/per_class_table.py: shares from a scene's test labels, rows from results files, the per-class target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.per_class_table import ResultRow, find_row, label_shares, main, missed_classes
from semsplat_ns.data.classes import read_scene_classes
from semsplat_ns.data.irt_io import find_split_stems, read_label


def test_shares_count_the_test_labels(demo_town) -> None:
    scene = demo_town()
    classes = read_scene_classes(scene)
    shares = label_shares(scene)
    assert list(shares) == classes.names
    assert sum(shares.values()) == pytest.approx(1.0)
    paths = [path for path in find_split_stems(scene / "test").label_paths if path is not None]
    first = read_label(paths[0], classes.colors, len(classes.names))
    present = set(np.unique(first[first != 255]).tolist())
    assert all(shares[classes.names[index]] > 0 for index in present)


def _write_rows(path: Path) -> None:
    rows = [
        dict(scene="s", method="m", commit="aaa111", per_class_iou={"A": 0.50, "B": 0.90}),
        dict(scene="s", method="m", commit="bbb222", per_class_iou={"A": 0.60, "B": 0.80}),
        dict(scene="t", method="m", commit="aaa111", per_class_iou={"A": 0.10, "B": 0.10}),
        dict(scene="s", method="ref", commit="ccc333", per_class_iou={"A": 0.54, "B": 0.95}),
    ]
    path.write_text(json.dumps(rows))


def test_find_row_by_method_commit_and_scene(tmp_path: Path) -> None:
    _write_rows(tmp_path / "rows.json")
    assert find_row(tmp_path, "rows.json:m", "s").per_class_iou["A"] == 0.50
    assert find_row(tmp_path, "rows.json:m@bbb", "s").per_class_iou["A"] == 0.60
    assert find_row(tmp_path, "rows.json:m", "t").per_class_iou["A"] == 0.10
    with pytest.raises(ValueError, match="no row of scene 's', method 'x'"):
        find_row(tmp_path, "rows.json:x", "s")
    with pytest.raises(ValueError, match="FILE:METHOD"):
        find_row(tmp_path, "rows.json", "s")


def test_missed_classes_judge_only_large_classes_by_the_margin() -> None:
    checked = ResultRow("m", "m", {"A": 0.50, "B": 0.92, "C": 0.10, "D": None})
    against = [ResultRow("r1", "r1", {"A": 0.54, "B": 0.94, "C": 0.90}), ResultRow("r2", "r2", {"A": 0.40})]
    shares = {"A": 0.5, "B": 0.4, "C": 0.0005, "D": 0.0995}
    # A: 4 points under r1 (missed at 3, not at 5); B: 2 under; C: too small a class; D: no reference
    assert missed_classes(checked, against, shares, min_share=0.001, margin=3.0) == ["A"]
    assert missed_classes(checked, against, shares, min_share=0.001, margin=5.0) == []
    assert missed_classes(checked, against, shares, min_share=0.0001, margin=5.0) == ["C"]


def test_main_prints_the_table_and_the_verdict(tmp_path: Path, demo_town, capsys) -> None:
    scene = demo_town()
    names = read_scene_classes(scene).names
    rows = [
        dict(scene=scene.name, method="m", commit="c1", per_class_iou={name: 0.5 for name in names}),
        dict(scene=scene.name, method="ref", commit="c2", per_class_iou={name: 0.6 for name in names}),
    ]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    shares = label_shares(scene)
    assert (
        main(
            [
                "--scene-dir",
                str(scene),
                "--results-dir",
                str(tmp_path),
                "--row",
                "rows.json:m",
                "--row",
                "rows.json:ref",
                "--against",
                "ref",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| class | test pixels % | m@c1 | ref@c2 |" in out
    large = [name for name in names if shares[name] >= 0.001]
    assert out.strip().endswith(", ".join(large))
