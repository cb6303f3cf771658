"""Shared by tests that train semsplat for real on the CPU: a small-run config and a step loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from nerfstudio.engine.callbacks import TrainingCallbackLocation

from semsplat_ns.config import semsplat_trainer_config
from semsplat_ns.data.datamanager import SemSplatDataManagerConfig


def cpu_trainer_config(scene: Path, output_dir: Path, steps: int, timestamp: str):
    """The semsplat preset for a short CPU run: no checkpoints or eval renders inside the loop."""
    config = semsplat_trainer_config(max_steps=steps)
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = output_dir
    config.timestamp = timestamp
    config.steps_per_save = 10_000
    config.steps_per_eval_image = 10_000
    config.pipeline.datamanager.data = scene
    # The preset trains a prior for pseudo labels first (6000 steps: minutes on a CPU); the tests of that
    # path (tests/data/test_datamanager.py, tests/pseudo) turn it on with a tiny prior.
    assert isinstance(config.pipeline.datamanager, SemSplatDataManagerConfig)
    config.pipeline.datamanager.auto_pseudo_labels = "off"
    return config


def train(config, steps: int, on_step: Optional[Callable[[int, Dict], None]] = None):
    """Saves the config, sets the trainer up, runs ``steps`` iterations with the callbacks the
    trainer would run, saves the last checkpoint and returns the trainer."""
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    run_steps(trainer, range(steps), on_step)
    trainer.save_checkpoint(steps - 1)
    return trainer


def run_steps(trainer, steps, on_step: Optional[Callable[[int, Dict], None]] = None) -> List[Dict]:
    """Runs the given training steps (before/after-iteration callbacks included)."""
    history = []
    for step in steps:
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        _, loss_dict, _ = trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        if on_step is not None:
            on_step(step, loss_dict)
        history.append(loss_dict)
    return history
