"""nerfstudio's per-step series (step time, ETA, rays/s, learning rates) reach tensorboard at the logging steps only;
everything else as nerfstudio writes it. nerfstudio's real tensorboard writer, its event file read back (the training
loop's own events: tests/test_trainer.py)."""

from __future__ import annotations

import nerfstudio.configs.base_config  # noqa: F401  (first: nerfstudio's writer module imports it back)
import pytest
from nerfstudio.utils import writer as nerfstudio_writer

from semsplat_ns.event_writers import LoggedStepsWriter, is_per_step_series, write_per_step_series_at_logging_steps
from tests.cpu_training import tensorboard_scalar_steps

STEPS_PER_LOG = 3


@pytest.mark.parametrize("wrapped", [True, False])
def test_per_step_series_reach_tensorboard_at_logging_steps_only(tmp_path, wrapped):
    tensorboard = nerfstudio_writer.TensorboardWriter(log_dir=tmp_path)
    event_writer = LoggedStepsWriter(tensorboard, STEPS_PER_LOG) if wrapped else tensorboard
    for step in range(7):
        event_writer.write_scalar("learning_rate/means", 1.0 / (step + 1), step)
        event_writer.write_scalar("ETA (time)", 7.0 - step, step)
        if step % STEPS_PER_LOG == 0:
            event_writer.write_scalar_dict("Train Loss Dict", {"main_loss": 0.5}, step)
        event_writer.write_scalar("Eval Images Metrics/psnr", 20.0, step)  # not a per-step series: always kept
    tensorboard.tb_writer.flush()
    series = tensorboard_scalar_steps(tmp_path)
    every_step, logging_steps = list(range(7)), [0, 3, 6]
    assert series["learning_rate/means"] == series["ETA (time)"] == (logging_steps if wrapped else every_step)
    assert series["Train Loss Dict/main_loss"] == logging_steps
    assert series["Eval Images Metrics/psnr"] == every_step


def test_which_series_are_per_step():
    assert is_per_step_series("learning_rate/transfer_head") and is_per_step_series("ETA (time)")
    assert not is_per_step_series("Train Loss") and not is_per_step_series("Eval Images Metrics/psnr")


def test_writers_are_wrapped_once(tmp_path, monkeypatch):
    tensorboard = nerfstudio_writer.TensorboardWriter(log_dir=tmp_path / "a")
    wrapped = LoggedStepsWriter(nerfstudio_writer.TensorboardWriter(log_dir=tmp_path / "b"), STEPS_PER_LOG)
    monkeypatch.setattr(nerfstudio_writer, "EVENT_WRITERS", [tensorboard, wrapped])  # this test's own list
    assert write_per_step_series_at_logging_steps(STEPS_PER_LOG) == 1
    first, second = nerfstudio_writer.EVENT_WRITERS
    assert isinstance(first, LoggedStepsWriter) and first.writer is tensorboard and second is wrapped
    assert write_per_step_series_at_logging_steps(STEPS_PER_LOG) == 0
    with pytest.raises(AssertionError, match="steps_per_log"):
        LoggedStepsWriter(tensorboard, 0)
