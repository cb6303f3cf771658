"""semsplat's trainer on CPU: nerfstudio's real training loop, with the stage times printed and written."""

from __future__ import annotations

import json

import nerfstudio.configs.base_config  # noqa: F401  (first: nerfstudio's writer module imports it back)
import pytest
from nerfstudio.utils import writer

from semsplat_ns.trainer import (
    STAGE_TIMES_NAME,
    SemSplatTrainer,
    StageTimes,
    check_scene,
    read_stage_times,
    stage_rows,
)
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
    assert times.first_step_s is not None and 0.0 < times.first_step_s <= times.train_s
    assert times.pseudo_label_stages_s == {}  # no pseudo labels were made (auto_pseudo_labels off)
    # the stages do not overlap: together they fit in the end-to-end wall time
    assert times.setup_s + times.train_s + times.eval_s + times.checkpoint_s <= times.end_to_end_s + 1e-6
    record = json.loads((config.get_base_dir() / STAGE_TIMES_NAME).read_text())
    assert record["steps_per_s"] == pytest.approx(STEPS / times.train_s)
    printed = capsys.readouterr().out
    assert "Stage times" in printed and f"training ({STEPS} steps" in printed and "first step" in printed
    # nerfstudio's per-step series reached tensorboard at the logging steps only, like the losses
    for event_writer in writer.EVENT_WRITERS:
        tb_writer = getattr(getattr(event_writer, "writer", event_writer), "tb_writer", None)
        if tb_writer is not None:
            tb_writer.flush()
    series = tensorboard_scalar_steps(config.get_base_dir() / config.logging.relative_log_dir)
    assert series["learning_rate/means"] == series["ETA (time)"] == series["Train Loss"] == [0, 3]


def test_stage_rows_indent_the_pseudo_label_stages_in_pipeline_order_and_leave_out_what_did_not_run():
    times = StageTimes(
        setup_s=40.0,
        seed_points_s=0.5,
        pseudo_labels_s=31.0,
        pseudo_label_stages_s={"write": 0.6, "prior_train": 22.9, "depth": 2.9, "a_new_stage": 0.1},
        train_s=60.0,
        first_step_s=2.5,
        end_to_end_s=100.0,
        steps=7000,
    )
    rows = stage_rows(times)
    names = [name for name, _ in rows]
    assert names[:6] == [
        "seed points",
        "pseudo labels",
        "  depth of the views",
        "  training the prior",
        "  writing the pseudo labels",
        "  a_new_stage",  # a stage this table does not know keeps its own name, last
    ]
    assert dict(rows)["  training the prior"] == 22.9 and dict(rows)["  first step (graph captures, warm-up)"] == 2.5
    assert (
        names.index("  first step (graph captures, warm-up)") == names.index("training (7000 steps, 116.7 steps/s)") + 1
    )
    # a run without pseudo labels or a timed first step (e.g. a record of an older run) has no such rows
    bare = stage_rows(StageTimes(setup_s=1.0, train_s=2.0, end_to_end_s=3.0, steps=10))
    assert [name for name, _ in bare] == [
        "setup (data, points, pseudo labels, model)",
        "training (10 steps, 5.0 steps/s)",
        "evaluation renders in the loop",
        "checkpoints",
        "end to end",
    ]


def test_scene_checked_before_the_config_dump(tmp_path, demo_town):
    from semsplat_ns.data.irt_io import IRTDataError

    scene = demo_town(n_views=12, resolution=32, n_labelled=2, seed=5, writable=True)
    config = cpu_trainer_config(scene, tmp_path / "outputs", STEPS, "check")
    check_scene(config)  # an intact scene passes
    (scene / "train" / "pose" / sorted(p.name for p in (scene / "train" / "pose").iterdir())[0]).unlink()
    with pytest.raises(IRTDataError, match="pose"):
        config.print_to_terminal()
