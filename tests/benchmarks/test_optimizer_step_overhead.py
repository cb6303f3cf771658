"""benchmarks/optimizer_step_overhead.py on the CPU: both modes timed on one trainer, figures written as JSON."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import optimizer_step_overhead

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_times_both_modes_on_every_group(tmp_path, monkeypatch):
    out = tmp_path / "overhead.json"
    argv = ["optimizer_step_overhead.py", "--device", "cpu", "--steps", "5", "--rounds", "2", "--out", str(out)]
    argv += ["--work-dir", str(tmp_path / "work")]  # lives as long as the session's tmp folders
    monkeypatch.setattr(sys, "argv", argv)
    optimizer_step_overhead.main()
    result = json.loads(out.read_text())
    assert set(result["us_per_stage"]) == {"apart", "together"}
    assert all(len(values) == 2 and min(values) > 0 for values in result["rounds_us"].values())
    assert {"means", "semantic_features", "camera_opt", "transfer_head"} <= set(result["groups"])
    assert result["together_over_apart"] == result["us_per_stage"]["together"] / result["us_per_stage"]["apart"]
