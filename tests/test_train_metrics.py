"""The model's training metrics on the logging steps only: nerfstudio computes them on every step (kernel launches,
and two reads back to the host with the camera optimiser on) but reads them only on the steps it logs."""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.models.splatfacto import SplatfactoModel

from tests.cpu_training import seeded_trainer

STEPS = 5
STEPS_PER_LOG = 3


def _metrics_of_each_step(trainer, steps: int) -> List[Dict[str, torch.Tensor]]:
    """The metrics dict nerfstudio's training iteration returns, step by step (the loop's callbacks included)."""
    metrics = []
    for step in range(steps):
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        _, _, step_metrics = trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        metrics.append({name: torch.as_tensor(value).detach().clone() for name, value in step_metrics.items()})
    return metrics


@pytest.fixture(scope="module")
def scene(demo_town):
    return demo_town(n_views=12, resolution=32, n_labelled=2, seed=5)


def _trainer(scene, output_dir, every_step: bool):
    settings = {"logging.steps_per_log": STEPS_PER_LOG, "train_metrics_every_step": every_step}
    return seeded_trainer(scene, output_dir, STEPS, f"metrics-{every_step}", trainer_settings=settings)


def test_metrics_are_computed_on_the_logging_steps_only(scene, tmp_path):
    trainer = _trainer(scene, tmp_path, every_step=False)
    model = trainer.pipeline.model
    assert model.train_metrics_every == STEPS_PER_LOG
    metrics = _metrics_of_each_step(trainer, STEPS)
    logged = [step for step in range(STEPS) if step % STEPS_PER_LOG == 0]  # nerfstudio logs steps 0 and 3
    assert [step for step in range(STEPS) if metrics[step]] == logged
    # the camera optimiser is on in this trainer: its norms are among them
    assert {"psnr", "gaussian_count", "camera_opt_rotation_max"} <= set(metrics[0])

    # On a logging step the dict is splatfacto's own, value for value, for the same render.
    model.step = 2 * STEPS_PER_LOG  # as the loop's callback sets it, before the view is drawn
    camera, batch = trainer.pipeline.datamanager.next_train(model.step)
    outputs = model(camera)
    mine, splatfactos = model.get_metrics_dict(outputs, batch), SplatfactoModel.get_metrics_dict(model, outputs, batch)
    assert mine.keys() == splatfactos.keys()
    for name, value in splatfactos.items():
        torch.testing.assert_close(torch.as_tensor(mine[name]), torch.as_tensor(value), rtol=0, atol=0, msg=name)
    model.step = 2 * STEPS_PER_LOG + 1
    camera, batch = trainer.pipeline.datamanager.next_train(model.step)
    outputs = model(camera)
    assert model.get_metrics_dict(outputs, batch) == {}
    _, _, eval_metrics = trainer.pipeline.get_eval_loss_dict(model.step)  # evaluation gets its metrics on any step
    assert "psnr" in eval_metrics


def test_every_step_gives_nerfstudios_behaviour_back(scene, tmp_path):
    trainer = _trainer(scene, tmp_path, every_step=True)
    assert trainer.pipeline.model.train_metrics_every is None
    assert all("psnr" in step_metrics for step_metrics in _metrics_of_each_step(trainer, STEPS))
