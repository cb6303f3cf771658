"""semsplat's trainer on CPU: nerfstudio's real training loop, with the stage times printed and written."""

from __future__ import annotations

import json

import nerfstudio.configs.base_config  # noqa: F401  (first: nerfstudio's writer module imports it back)
import pytest
from nerfstudio.utils import writer

from semsplat_ns.trainer import STAGE_TIMES_NAME, SemSplatTrainer, check_scene, read_stage_times
from tests.cpu_training import cpu_trainer_config, tensorboard_scalar_steps

STEPS = 6


def test_stage_times_of_a_real_training_loop(tmp_path, demo_town, capsys):
    scene = demo_town(n_views=12, resolution=32, n_labelled=2, seed=5)
    config = cpu_trainer_config(scene, tmp_path / "outputs", STEPS, "stages")
    config.steps_per_eval_image = 4  # one evaluation render inside the loop (steps 0 and 4: two)
    config.logging.steps_per_log = 3  # losses and the per-step series at steps 0 and 3
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    assert isinstance(trainer, SemSplatTrainer)
    trainer.setup()
    writer.EVENT_STORAGE.clear()  # events that earlier tests' step loops stored and never wrote out
    trainer.train()

    times = read_stage_times(config.get_base_dir())
    assert times.steps == STEPS
    assert times.seed_points_s is not None and times.seed_points_s >= 0.0  # the dataparser reported its stage
    assert 0.0 < times.seed_points_s <= times.setup_s
    assert times.first_eval_s is not None and 0.0 < times.first_eval_s <= times.eval_s
    assert times.train_s > 0.0 and times.checkpoint_s >= 0.0
    # the stages do not overlap: together they fit in the end-to-end wall time
    assert times.setup_s + times.train_s + times.eval_s + times.checkpoint_s <= times.end_to_end_s + 1e-6
    record = json.loads((config.get_base_dir() / STAGE_TIMES_NAME).read_text())
    assert record["steps_per_s"] == pytest.approx(STEPS / times.train_s)
    printed = capsys.readouterr().out
    assert "Stage times" in printed and f"training ({STEPS} steps" in printed
    # nerfstudio's per-step series reached tensorboard at the logging steps only, like the losses
    for event_writer in writer.EVENT_WRITERS:
        tb_writer = getattr(getattr(event_writer, "writer", event_writer), "tb_writer", None)
        if tb_writer is not None:
            tb_writer.flush()
    series = tensorboard_scalar_steps(config.get_base_dir() / config.logging.relative_log_dir)
    assert series["learning_rate/means"] == series["ETA (time)"] == series["Train Loss"] == [0, 3]


def test_scene_checked_before_the_config_dump(tmp_path, demo_town):
    from semsplat_ns.data.irt_io import IRTDataError

    scene = demo_town(n_views=12, resolution=32, n_labelled=2, seed=5, writable=True)
    config = cpu_trainer_config(scene, tmp_path / "outputs", STEPS, "check")
    check_scene(config)  # an intact scene passes
    (scene / "train" / "pose" / sorted(p.name for p in (scene / "train" / "pose").iterdir())[0]).unlink()
    with pytest.raises(IRTDataError, match="pose"):
        config.print_to_terminal()
