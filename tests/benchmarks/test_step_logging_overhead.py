"""benchmarks/step_logging_overhead.py: both modes timed with nerfstudio's real tensorboard writer, nerfstudio's
writer list left as it was."""

from __future__ import annotations

import json
import sys

import nerfstudio.configs.base_config  # noqa: F401  (first: nerfstudio's writer module imports it back)
from nerfstudio.utils import writer

from benchmarks import step_logging_overhead


def test_times_both_modes_and_restores_the_writers(tmp_path, monkeypatch):
    before = list(writer.EVENT_WRITERS)
    out = tmp_path / "logging.json"
    argv = ["step_logging_overhead.py", "--steps", "20", "--rounds", "2", "--steps-per-log", "10", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    step_logging_overhead.main()
    result = json.loads(out.read_text())
    assert set(result["us_per_step"]) == set(step_logging_overhead.MODES)
    assert all(len(values) == 2 and min(values) > 0 for values in result["rounds_us"].values())
    assert result["steps_per_log"] == 10
    assert writer.EVENT_WRITERS == before
