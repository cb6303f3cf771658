"""The Adam steps taken together (semsplat_ns/optimizers.py) train bit for bit as nerfstudio's one step per
optimiser, densification included, and leave to nerfstudio every step they cannot take (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers
from torch.amp.grad_scaler import GradScaler

from semsplat_ns import optimizers as together_module
from semsplat_ns.optimizers import SteppedTogetherOptimizers, step_fused_adams, steps_together
from tests.cpu_training import DENSIFYING_EVERY_3, run_steps, seeded_trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

STEPS = 8


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    return demo_town(n_views=10, resolution=33, n_labelled=2, seed=11)


def _train(scene: Path, output_dir: Path, together: bool, steps: int = STEPS):
    """A seeded CPU run with every optimiser group (camera optimiser, bilateral grid, transfer head), densifying at
    steps 3 and 6; the trainer after ``steps`` steps and the losses of each step."""
    timestamp = "together" if together else "apart"
    settings = dict(DENSIFYING_EVERY_3, semantic_start_step=0)
    trainer = seeded_trainer(scene, output_dir, steps, timestamp, optimizers_step_together=together, **settings)
    trainer.pipeline.model.strategy.pause_refine_after_reset = 0
    history = run_steps(trainer, range(steps))
    return trainer, history


def _states(optimizers: Optimizers) -> Dict[Tuple[str, int, str], torch.Tensor]:
    """Every optimiser's Adam state by (group, parameter index, key)."""
    return {
        (name, index, key): value
        for name, optimizer in optimizers.optimizers.items()
        for index, state in enumerate(optimizer.state_dict()["state"].values())
        for key, value in state.items()
    }


def test_steps_together_train_as_nerfstudios_steps(scene, tmp_path_factory, monkeypatch):
    stepped: List[List[str]] = []
    real_step = together_module.step_fused_adams

    def recording_step(optimizers):
        optimizers = list(optimizers)
        stepped.append([type(optimizer).__name__ for optimizer in optimizers])
        real_step(optimizers)

    monkeypatch.setattr(together_module, "step_fused_adams", recording_step)
    trainer, losses = _train(scene, tmp_path_factory.mktemp("together"), together=True)
    monkeypatch.undo()
    reference, reference_losses = _train(scene, tmp_path_factory.mktemp("apart"), together=False)

    assert isinstance(trainer.optimizers, SteppedTogetherOptimizers)
    assert type(reference.optimizers) is Optimizers
    groups = set(trainer.optimizers.optimizers)
    assert {"means", "semantic_features", "camera_opt", "transfer_head", "bilateral_grid"} <= groups
    # the first step creates the Adam state (torch's own step); from then on every group steps together
    assert len(stepped) == STEPS and stepped[0] == []
    assert all(len(names) == len(groups) for names in stepped[1:])

    model, reference_model = trainer.pipeline.model, reference.pipeline.model
    assert model.num_points == reference_model.num_points != 1000  # densification ran on both
    for step, (mine, theirs) in enumerate(zip(losses, reference_losses)):
        assert mine.keys() == theirs.keys(), step
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), (step, name)
    reference_parameters = dict(reference_model.named_parameters())
    for name, value in model.named_parameters():
        assert torch.equal(value, reference_parameters[name]), name
    states, reference_states = _states(trainer.optimizers), _states(reference.optimizers)
    assert states.keys() == reference_states.keys() and len(states) > 3 * len(groups)
    for key, value in states.items():
        assert torch.equal(value, reference_states[key]), key
    # schedulers stepped as nerfstudio's: the scheduled learning rates agree
    for name, optimizer in trainer.optimizers.optimizers.items():
        assert optimizer.param_groups[0]["lr"] == reference.optimizers.optimizers[name].param_groups[0]["lr"], name


def _adam(**settings) -> torch.optim.Adam:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=0.1, **{"fused": True, **settings})
    parameter.grad = torch.full_like(parameter, 0.5)
    optimizer.step()  # the state exists
    parameter.grad = torch.full_like(parameter, 0.25)
    return optimizer


def test_which_optimisers_step_together():
    assert steps_together(_adam())
    for settings in (dict(fused=None), dict(amsgrad=True), dict(maximize=True)):
        assert not steps_together(_adam(**settings)), settings
    adamw = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], fused=True)
    assert not steps_together(adamw)
    # a gradient on a parameter without state: torch's step creates it
    fresh = torch.nn.Parameter(torch.ones(2))
    fresh.grad = torch.ones_like(fresh)
    assert not steps_together(torch.optim.Adam([fresh], fused=True))
    hooked = _adam()
    handle = hooked.register_step_post_hook(lambda optimizer, args, kwargs: None)
    assert not steps_together(hooked)
    handle.remove()
    assert steps_together(hooked)
    handle = together_module.TORCH_OPTIMIZER.register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: None)
    try:
        assert not steps_together(hooked)  # a hook on every optimiser's step
    finally:
        handle.remove()
    assert steps_together(hooked)


@pytest.mark.parametrize("kernel", ["fused", "functional"])
def test_a_step_together_is_adams_step(kernel, monkeypatch):
    if kernel == "functional":  # a torch without the fused kernel's op: torch's functional fused Adam per batch
        monkeypatch.setattr(together_module, "FUSED_ADAM_KERNEL", None)
    ours, theirs = _adam(), _adam()
    for param_group in (ours.param_groups[0], theirs.param_groups[0]):
        param_group["lr"] = 0.03  # as a scheduler sets it
    untouched = torch.nn.Parameter(torch.ones(2))
    ours.add_param_group({"params": [untouched]})  # no gradient: left as it is
    step_fused_adams([ours])
    theirs.step()
    mine, reference = ours.param_groups[0]["params"][0], theirs.param_groups[0]["params"][0]
    assert torch.equal(mine, reference) and not torch.equal(mine, torch.ones(3))
    assert torch.equal(ours.state[mine]["exp_avg_sq"], theirs.state[reference]["exp_avg_sq"])
    assert float(ours.state[mine]["step"]) == 2.0
    assert torch.equal(untouched, torch.ones(2)) and not ours.state.get(untouched)


def test_groups_that_scale_or_clip_step_through_nerfstudio():
    optimizer_config = AdamOptimizerConfig(lr=0.1)
    optimizers = SteppedTogetherOptimizers.of(Optimizers({}, {}))
    optimizers.config, optimizers.optimizers = {"a": {"optimizer": optimizer_config}}, {"a": _adam()}
    assert optimizers._split(GradScaler("cpu", enabled=False), ["a"]) == (["a"], [])
    assert optimizers._split(GradScaler("cpu", enabled=True), ["a"]) == ([], ["a"])
    optimizer_config.max_norm = 1.0
    assert optimizers._split(GradScaler("cpu", enabled=False), ["a"]) == ([], ["a"])
