"""Shared by tests that train semsplat for real on the CPU: a small-run config, a seeded trainer with every loss term
and optimiser group, and a step loop."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallbackLocation

from semsplat_ns.config import semsplat_trainer_config
from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.model.semsplat_model import SemSplatModelConfig

DENSIFYING_EVERY_3: Dict[str, Any] = dict(
    warmup_length=2,
    refine_every=3,
    stop_split_at=1000,
    stop_screen_size_at=1000,
    densify_grad_thresh=1e-5,  # the Gaussians grow
    num_downscales=1,  # 16 px, then 33 px (a 33 px scene)
    resolution_schedule=5,
)
"""Model settings of a few-step run that densifies at steps 3 and 6 (with ``pause_refine_after_reset = 0`` on the
strategy: splatfacto's pause, views + refine_every, outlasts such a run)."""


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


def seeded_trainer(
    scene: Path,
    output_dir: Path,
    steps: int,
    timestamp: str,
    optimizers_step_together: bool = True,
    trainer_settings: Optional[Dict[str, Any]] = None,
    **model_settings,
):
    """A set-up CPU trainer from fixed seeds with every loss term and optimiser group: a bilateral grid, a camera
    optimiser, 1000 random Gaussians, then ``trainer_settings`` (``SemSplatTrainerConfig`` fields, dotted names
    reaching into sub-configs: ``"logging.steps_per_log"``) and ``model_settings`` (``SemSplatModelConfig`` fields)."""
    config = cpu_trainer_config(scene, output_dir, steps, timestamp)
    config.optimizers_step_together = optimizers_step_together
    for name, value in (trainer_settings or {}).items():
        *parents, leaf = name.split(".")
        owner = config
        for parent in parents:
            owner = getattr(owner, parent)
        assert hasattr(owner, leaf), f"no trainer setting {name}"
        setattr(owner, leaf, value)
    model_config = config.pipeline.model
    assert isinstance(model_config, SemSplatModelConfig)
    model_config.use_bilateral_grid = True
    model_config.camera_optimizer.mode = "SO3xR3"
    model_config.num_random = 1000
    for name, value in model_settings.items():
        setattr(model_config, name, value)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def tensorboard_scalar_steps(log_dir: Path) -> Dict[str, List[int]]:
    """The steps of each scalar in the tensorboard event files of ``log_dir`` (flush the writer first)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


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
