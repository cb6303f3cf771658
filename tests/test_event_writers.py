"""nerfstudio's per-step series (step time, ETA, rays/s, learning rates) reach tensorboard at the logging steps only,
unless ``per_step_series_every_step``; everything else as nerfstudio writes it. A real CPU training loop, its
tensorboard event file read back."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import nerfstudio.configs.base_config  # noqa: F401  (first: nerfstudio's writer module imports it back)
import pytest
from nerfstudio.utils import writer as nerfstudio_writer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from semsplat_ns.event_writers import LoggedStepsWriter, is_per_step_series, write_per_step_series_at_logging_steps
from tests.cpu_training import cpu_trainer_config

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

STEPS = 7
STEPS_PER_LOG = 3


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    return demo_town(n_views=12, resolution=32, n_labelled=2, seed=5)


def _train_and_read(scene: Path, output_dir: Path, every_step: bool) -> Dict[str, List[int]]:
    """Trains STEPS steps through nerfstudio's loop; the steps of each tensorboard scalar."""
    config = cpu_trainer_config(scene, output_dir, STEPS, "every" if every_step else "logged")
    config.per_step_series_every_step = every_step
    config.logging.steps_per_log = STEPS_PER_LOG
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    for event_writer in nerfstudio_writer.EVENT_WRITERS:
        inner = event_writer.writer if isinstance(event_writer, LoggedStepsWriter) else event_writer
        tb_writer = getattr(inner, "tb_writer", None)
        if tb_writer is not None:
            tb_writer.flush()
    log_dir = config.get_base_dir() / config.logging.relative_log_dir
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_per_step_series_only_at_logging_steps(scene, tmp_path):
    series = _train_and_read(scene, tmp_path, every_step=False)
    logging_steps = list(range(0, STEPS, STEPS_PER_LOG))  # 0, 3, 6
    learning_rates = [tag for tag in series if tag.startswith("learning_rate/")]
    assert "learning_rate/means" in learning_rates
    for tag in learning_rates + ["ETA (time)", "Train Iter (time)"]:
        assert series[tag] == logging_steps, tag
    assert set(series["Train Rays / Sec"]) <= set(logging_steps)  # nerfstudio skips it on the first two steps
    # the losses are nerfstudio's, at the logging steps as before
    assert series["Train Loss"] == logging_steps
    assert series["Train Loss Dict/main_loss"] == logging_steps
    assert all(isinstance(w, LoggedStepsWriter) for w in nerfstudio_writer.EVENT_WRITERS if hasattr(w, "writer"))


def test_every_step_when_asked(scene, tmp_path):
    series = _train_and_read(scene, tmp_path, every_step=True)
    assert series["learning_rate/means"] == list(range(STEPS))
    assert series["Train Loss"] == list(range(0, STEPS, STEPS_PER_LOG))


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
